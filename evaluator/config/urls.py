"""URL safety for outbound calls to configured hosts (webhooks, Slack).

Two checks: `check_url_static` when settings load (scheme, allowlist, literal addresses) and
`resolve_safe` before every send, which resolves the host, refuses it if *any* address is
internal, and returns a URL pinned to a checked address (DNS rebinding cannot swap it).

    UnsafeURL            the target is refused (configuration or send time)
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Awaitable, Callable, Sequence
from urllib.parse import urlsplit, urlunsplit

Resolver = Callable[[str, int], Awaitable[list[str]]]
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
# Cloud metadata endpoints: refused even with allow_private (they hand out credentials).
_METADATA = {
    ipaddress.ip_address("169.254.169.254"),
    ipaddress.ip_address("169.254.170.2"),
    ipaddress.ip_address("100.100.100.200"),
    ipaddress.ip_address("fd00:ec2::254"),
}
_LOCAL_NAMES = ("localhost", "localhost.localdomain", "metadata.google.internal", "metadata")


class UnsafeURL(ValueError):
    """A webhook target that must not be called; the message says why."""


def _unmapped(ip: IPAddress) -> IPAddress:
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


def check_address(ip: IPAddress, *, allow_private: bool) -> None:
    ip = _unmapped(ip)
    if ip in _METADATA:
        raise UnsafeURL(f"{ip} is a cloud metadata address")
    if ip.is_multicast or ip.is_unspecified or ip.is_reserved:
        raise UnsafeURL(f"{ip} is not a unicast address")
    if not allow_private and not ip.is_global:
        kind = "loopback" if ip.is_loopback else "link-local" if ip.is_link_local else "private"
        raise UnsafeURL(f"{ip} is a {kind} address (set alerts.allow_private to allow it)")


def _host_allowed(host: str, allowlist: Sequence[str]) -> bool:
    for entry in allowlist:
        entry = entry.lower().rstrip(".")
        if entry.startswith(".") and (host.endswith(entry) or host == entry[1:]):
            return True
        if host == entry:
            return True
    return False


def _local_name(host: str) -> bool:
    return host in _LOCAL_NAMES or host.endswith((".localhost", ".internal"))


def check_url_static(url: str, allowlist: Sequence[str], *, allow_private: bool) -> str:
    """Checks that need no DNS; returns the lower-cased host."""
    parts = urlsplit(url)
    if parts.scheme not in ("https", "http"):
        raise UnsafeURL(f"{url!r}: scheme must be https or http, got {parts.scheme or 'none'!r}")
    host = (parts.hostname or "").lower().rstrip(".")
    if not host:
        raise UnsafeURL(f"{url!r}: no host")
    if parts.username or parts.password:
        raise UnsafeURL(f"{url!r}: credentials in the URL are not allowed")
    try:
        ip: IPAddress | None = ipaddress.ip_address(host)
    except ValueError:
        ip = None
    if ip is not None:
        check_address(ip, allow_private=allow_private)
    elif _local_name(host) and (not allow_private or host.startswith("metadata")):
        raise UnsafeURL(f"{url!r}: {host} names an internal host")
    if not _host_allowed(host, allowlist):
        raise UnsafeURL(f"{url!r}: host {host} is not in alerts.allowlist")
    return host


async def system_resolver(host: str, port: int) -> list[str]:
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return sorted({str(info[4][0]) for info in infos})


async def resolve_safe(
    url: str, allowlist: Sequence[str], *, allow_private: bool, resolver: Resolver
) -> tuple[str, str]:
    """(pinned URL with the checked IP as host, original hostname) or UnsafeURL."""
    host = check_url_static(url, allowlist, allow_private=allow_private)
    parts = urlsplit(url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        addresses = [host] if _is_ip(host) else await resolver(host, port)
    except OSError as exc:
        raise UnsafeURL(f"{host}: cannot resolve ({exc})") from None
    if not addresses:
        raise UnsafeURL(f"{host}: resolves to no address")
    for raw in addresses:  # every address: the client could pick any of them
        check_address(ipaddress.ip_address(raw), allow_private=allow_private)
    ip = ipaddress.ip_address(addresses[0])
    literal = f"[{ip}]" if ip.version == 6 else str(ip)
    netloc = literal if parts.port is None else f"{literal}:{parts.port}"
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, "")), host


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True

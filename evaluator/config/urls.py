"""URL safety for outbound calls to configured hosts (webhooks, Slack).

Two checks: `check_url_static` when settings load (scheme, allowlist, literal addresses) and
`resolve_safe` before every send, which resolves the host, refuses it if *any* address is
internal, and returns a URL pinned to a checked address (DNS rebinding cannot swap it).

A literal host is read the way the C library reads it ("2130706433", "0x7f.1", "127.1" are
all 127.0.0.1), and an IPv6 address is judged by any IPv4 address it embeds or translates to
(IPv4-mapped/compatible, 6to4, NAT64, Teredo), so no spelling reaches an internal address.

    UnsafeURL            the target is refused (configuration or send time)
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import unicodedata
from collections.abc import Awaitable, Callable, Sequence
from urllib.parse import urlsplit, urlunsplit

from evaluator.errors import UnsafeURL

Resolver = Callable[[str, int], Awaitable[list[str]]]
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
# Cloud metadata endpoints: refused even with allow_private (they hand out credentials).
_METADATA_NETS = tuple(
    ipaddress.ip_network(n)
    for n in (
        "169.254.169.0/24",  # AWS/GCP/Azure/OpenStack IMDS (.254), AWS DNS (.253) and NTP (.123)
        "169.254.170.2/32",  # AWS ECS task credentials
        "100.100.100.200/32",  # Alibaba Cloud
        "168.63.129.16/32",  # Azure wire server (VM agent, extension settings)
        "192.0.0.192/32",  # Oracle Cloud legacy metadata
        "fd00:ec2::254/128",  # AWS IMDS over IPv6
        "fd00:ec2::253/128",  # AWS DNS over IPv6
    )
)
# Not globally routable but missed by (this Python's) ipaddress.is_global, or special-purpose
# prefixes that only translate to somewhere else: refused unless allow_private.
_INTERNAL_NETS = tuple(
    ipaddress.ip_network(n)
    for n in (
        "100.64.0.0/10",  # CGNAT shared space (is_global is False, but say so explicitly)
        "192.0.0.0/24",  # IETF protocol assignments (OCI metadata, DS-Lite, NAT64 discovery)
        "64:ff9b:1::/48",  # NAT64 local-use prefix: translates to operator-chosen IPv4
        "2001::/32",  # Teredo: tunnels to the IPv4 embedded in the address
    )
)
# "This network": Linux connects 0.0.0.0 to the local host.
_THIS_NETWORK = ipaddress.ip_network("0.0.0.0/8")
_NAT64_WKP = ipaddress.ip_network("64:ff9b::/96")
_NAT64_LOCAL = ipaddress.ip_network("64:ff9b:1::/48")
_IPV4_COMPAT = ipaddress.ip_network("::/96")
_IPV4_TRANSLATED = ipaddress.ip_network("::ffff:0:0:0/96")  # SIIT, RFC 2765
_LOCAL_NAMES = ("localhost", "localhost.localdomain", "metadata.google.internal", "metadata")
# Full-width and ideographic full stops: IDNA maps them to "." before DNS sees the name.
_DOTS = str.maketrans({"\u3002": ".", "\uff0e": ".", "\uff61": "."})


def _unmapped(ip: IPAddress) -> IPAddress:
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


def _low32(ip: ipaddress.IPv6Address) -> ipaddress.IPv4Address:
    return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)


def embedded_ipv4(ip: ipaddress.IPv6Address) -> list[tuple[str, ipaddress.IPv4Address]]:
    """IPv4 addresses an IPv6 address carries (and may be routed or translated to)."""
    found: list[tuple[str, ipaddress.IPv4Address]] = []
    if ip.ipv4_mapped is not None:
        found.append(("IPv4-mapped", ip.ipv4_mapped))
    if ip in _IPV4_TRANSLATED:
        found.append(("IPv4-translated", _low32(ip)))
    if ip in _IPV4_COMPAT and int(ip) > 1:  # :: and ::1 are not compat addresses
        found.append(("IPv4-compatible", _low32(ip)))
    if ip.sixtofour is not None:
        found.append(("6to4", ip.sixtofour))
    if ip.teredo is not None:
        server, client = ip.teredo  # the client is stored inverted; ipaddress undoes that
        found += [("Teredo client", client), ("Teredo server", server)]
    if ip in _NAT64_WKP:
        found.append(("NAT64", _low32(ip)))
    if ip in _NAT64_LOCAL:
        # RFC 6052 /48 layout (bits 48-63 and 72-87) and the common /96 layout: check both.
        n = int(ip)
        v4 = ((n >> 64) & 0xFFFF) << 16 | (n >> 40) & 0xFFFF
        found.append(("NAT64 /48", ipaddress.IPv4Address(v4)))
        found.append(("NAT64 /96", _low32(ip)))
    return found


def _check_one(ip: IPAddress, *, allow_private: bool) -> None:
    if any(ip in net for net in _METADATA_NETS):
        raise UnsafeURL(f"{ip} is a cloud metadata address")
    if ip.is_multicast or ip.is_unspecified or ip.is_reserved or ip in _THIS_NETWORK:
        raise UnsafeURL(f"{ip} is not a unicast address")
    if not allow_private and (not ip.is_global or any(ip in net for net in _INTERNAL_NETS)):
        kind = "loopback" if ip.is_loopback else "link-local" if ip.is_link_local else "private"
        raise UnsafeURL(f"{ip} is a {kind} address (set alerts.allow_private to allow it)")


def check_address(ip: IPAddress, *, allow_private: bool) -> None:
    ip = _unmapped(ip)
    if isinstance(ip, ipaddress.IPv6Address):
        # Whatever an address embeds is where packets may end up: check each embedded IPv4
        # with the same rules, so allow_private never lets a metadata address through.
        for form, v4 in embedded_ipv4(ip):
            try:
                _check_one(v4, allow_private=allow_private)
            except UnsafeURL as exc:
                raise UnsafeURL(f"{ip} embeds {v4} ({form}): {exc}") from None
        if ip in _NAT64_WKP:
            return  # DNS64 answers: the embedded (already checked) IPv4 is the destination
    _check_one(ip, allow_private=allow_private)


def _aton_part(part: str) -> int | None:
    # One inet_aton component: 0x.. hex, 0.. octal, otherwise decimal.
    if not part.isascii() or not part[:1].isdigit():
        return None
    if part[:2] in ("0x", "0X"):
        digits = part[2:]
        # A bare "0x" is rejected by glibc (some BSDs read 0): the numeric-host rule refuses it.
        return int(digits, 16) if digits and _is_hex(digits) else None
    if len(part) > 1 and part[0] == "0":
        return int(part, 8) if all(c in "01234567" for c in part) else None
    return int(part) if part.isdigit() else None


def _is_hex(text: str) -> bool:
    return all(c in "0123456789abcdefABCDEF" for c in text)


def parse_inet_aton(host: str) -> ipaddress.IPv4Address | None:
    """The IPv4 address libc's inet_aton (and so getaddrinfo) reads in `host`, or None.

    Accepts 1-4 dot-separated parts in decimal, octal (leading 0) or hex (0x); the last part
    fills the remaining bytes: "2130706433", "0x7f.1", "127.1", "10.1", "0177.0.0.1".
    """
    parts = host.split(".")
    if not 1 <= len(parts) <= 4:
        return None
    values = [_aton_part(p) for p in parts]
    if any(v is None for v in values):
        return None
    nums = [v for v in values if v is not None]
    head, last = nums[:-1], nums[-1]
    if any(v > 0xFF for v in head) or last >= 1 << (8 * (4 - len(head))):
        return None
    value = last
    for i, v in enumerate(head):
        value |= v << (8 * (3 - i))
    return ipaddress.IPv4Address(value)


def _numeric_last_label(host: str) -> bool:
    # A name whose last label is a number can only be an address (no TLD is numeric), so a
    # malformed one is refused rather than handed to a resolver that may read it its own way.
    last = host.rsplit(".", 1)[-1]
    return last.isascii() and (last.isdigit() or (last[:2] == "0x" and _is_hex(last[2:])))


def literal_address(host: str) -> IPAddress | None:
    """The address a host literal denotes (IPv6, dotted quad or any inet_aton form), or None
    for a name. UnsafeURL for a numeric-looking host that is not a valid address."""
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        pass
    ip = parse_inet_aton(host)
    if ip is None and _numeric_last_label(host):
        raise UnsafeURL(f"{host!r} looks like an IP address but is not a valid one")
    return ip


def normalise_host(host: str) -> str:
    """Lower-cased host as the resolver will see it (full-width digits and dots folded)."""
    if not host.isascii():
        host = unicodedata.normalize("NFKC", host).translate(_DOTS)
    return host.lower().rstrip(".")


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
    host = normalise_host(parts.hostname or "")
    if not host:
        raise UnsafeURL(f"{url!r}: no host")
    if parts.username or parts.password:
        raise UnsafeURL(f"{url!r}: credentials in the URL are not allowed")
    if any(c.isspace() or ord(c) < 32 or c in "\\/?#@" for c in host):
        # inet_aton ignores anything after whitespace: "127.0.0.1 x" would be loopback.
        raise UnsafeURL(f"{url!r}: malformed host {host!r}")
    try:
        ip = literal_address(host)
    except UnsafeURL as exc:
        raise UnsafeURL(f"{url!r}: {exc}") from None
    if ip is not None:
        try:
            check_address(ip, allow_private=allow_private)
        except UnsafeURL as exc:
            raise UnsafeURL(f"{url!r}: {exc}") from None
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
    literal = literal_address(host)  # "0x7f.1" and friends: no DNS, use the parsed address
    try:
        addresses = [str(literal)] if literal is not None else await resolver(host, port)
    except OSError as exc:
        raise UnsafeURL(f"{host}: cannot resolve ({exc})") from None
    if not addresses:
        raise UnsafeURL(f"{host}: resolves to no address")
    for raw in addresses:  # every address: the client could pick any of them
        check_address(ipaddress.ip_address(raw), allow_private=allow_private)
    ip = ipaddress.ip_address(addresses[0])
    pinned = f"[{ip}]" if ip.version == 6 else str(ip)
    netloc = pinned if parts.port is None else f"{pinned}:{parts.port}"
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, "")), host

"""The judge's HTTP on a bare aiohttp session (`judge.http_transport = "aiohttp"`).

Per judge request the openai SDK's `post` over its aiohttp transport costs ~0.6 ms of CPU,
most of it httpx's request and response models wrapped around aiohttp; aiohttp alone costs
~0.13 ms (bench/http_floor.py, BENCHMARKS.md §5b). The judge needs one POST of a JSON body
and its status, headers and bytes back — this does only that. What the SDK added and the
judge relies on is here too: the bearer key, the base URL, a per-attempt timeout, proxies
from the environment (HTTP(S)_PROXY, NO_PROXY), a connection pool as large as the
concurrency. Status
codes and retries are the JudgeClient's (one mapping for every transport).
"""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

import aiohttp


class Unreachable(Exception):
    """No HTTP response: connection refused or reset, DNS, TLS, or the timeout
    (`timed_out`: the per-attempt timeout ran out, a sign the endpoint is saturated)."""

    def __init__(self, message: str, *, timed_out: bool = False) -> None:
        super().__init__(message)
        self.timed_out = timed_out


def _env_proxy(url: str) -> str | None:
    """The proxy HTTP(S)_PROXY / ALL_PROXY name for `url`, unless NO_PROXY exempts its host;
    read once per session, as httpx does per client. (aiohttp's `trust_env` reads the
    environment on every request: ~0.4 ms of CPU each, more than the request itself.)"""
    parts = urlsplit(url)
    if parts.hostname is None or urllib.request.proxy_bypass(parts.hostname):
        return None
    proxies = urllib.request.getproxies()
    return proxies.get(parts.scheme) or proxies.get("all")


class AiohttpPoster:
    def __init__(self, *, base_url: str, api_key: str, timeout_s: float, pool: int) -> None:
        self._base = base_url.rstrip("/")
        self._headers = {
            "authorization": f"Bearer {api_key}",
            "content-type": "application/json",
            "accept": "application/json",
        }
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)
        self._pool = pool
        self._session: aiohttp.ClientSession | None = None  # made in the running loop
        self._proxy: str | None = None

    async def post(self, path: str, body: dict[str, Any]) -> tuple[int, Mapping[str, str], bytes]:
        """(status, headers — looked up case-insensitively —, body bytes)."""
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=self._pool),
                timeout=self._timeout,
                headers=self._headers,
            )
            self._proxy = _env_proxy(self._base)
        try:
            async with self._session.post(
                self._base + path, data=json.dumps(body).encode(), proxy=self._proxy
            ) as response:
                return response.status, response.headers, await response.read()
        except (TimeoutError, aiohttp.ClientError, OSError) as exc:
            timed_out = isinstance(exc, TimeoutError)
            message = f"{type(exc).__name__}: {exc}".rstrip(": ")
            raise Unreachable(message, timed_out=timed_out) from exc

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()

"""Every Redis connection the service opens, built from one place.

Three shapes of the same settings: a sync client (web server, CLI, backfill), an asyncio
client (worker runtime, intake, app-side enqueuer) and arq's `RedisSettings` (the arq
worker's own pool). Two deployments:

* one Redis (`redis.url`): redis://, rediss:// (TLS) and ACL users
  (rediss://user:password@host:6380/0) go straight to redis-py;
* Redis Sentinel (`redis.sentinels = ["host:port", ...]`, `redis.sentinel_master`): the
  clients ask the sentinels where the master is and follow a failover. `redis.url` then
  contributes only the db, the ACL user/password and TLS (rediss://) of the data nodes.

Redis Cluster is not supported: arq's Lua scripts and MULTI blocks touch keys that hash to
different slots (docs/scaling.md).
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, unquote, urlsplit

import redis
import redis.asyncio as aioredis
from redis.asyncio.sentinel import Sentinel as AsyncSentinel
from redis.sentinel import Sentinel as SyncSentinel

from evaluator.config.settings import RedisSettings, Settings
from evaluator.errors import SettingsError

if TYPE_CHECKING:  # arq stays out of the app-side import (tests/test_layers.py)
    from arq.connections import RedisSettings as ArqRedisSettings

Source = Settings | RedisSettings | str


def _section(source: Source) -> RedisSettings:
    if isinstance(source, Settings):
        return source.redis
    if isinstance(source, str):
        return RedisSettings(url=source)
    return source


def sentinel_hosts(section: RedisSettings) -> list[tuple[str, int]]:
    out = []
    for entry in section.sentinels:
        host, _, port = entry.rpartition(":")
        out.append((host.strip("[]"), int(port)))  # "[::1]:26379" as well
    return out


def _sentinel_password(section: RedisSettings) -> str | None:
    if not section.sentinel_password_env:
        return None
    return os.environ.get(section.sentinel_password_env) or None


def _node_kwargs(url: str) -> dict[str, Any]:
    """What the data nodes need from `url` when their address comes from the sentinels."""
    kwargs: dict[str, Any] = redis.connection.parse_url(url)
    ssl = kwargs.pop("connection_class", None) is redis.connection.SSLConnection
    for key in ("host", "port", "path"):
        kwargs.pop(key, None)
    if ssl:
        kwargs["ssl"] = True  # the sentinel pool picks its SSL connection class from this
    return kwargs


def _sentinel_kwargs(section: RedisSettings, extra: dict[str, Any]) -> dict[str, Any]:
    # Timeouts apply to the sentinels too: a dead sentinel must not stall the lookup.
    out = {k: v for k, v in extra.items() if k.startswith("socket_")}
    password = _sentinel_password(section)
    if password:
        out["password"] = password
    return out


class _SyncSentinelRedis(redis.Redis):
    """A master client that also closes its connections to the sentinels."""

    sentinel_manager: SyncSentinel | None = None

    def close(self) -> None:
        super().close()
        if self.sentinel_manager is not None:
            for client in self.sentinel_manager.sentinels:
                client.close()


class _AsyncSentinelRedis(aioredis.Redis):
    sentinel_manager: AsyncSentinel | None = None

    async def aclose(self, close_connection_pool: bool | None = None) -> None:
        await super().aclose(close_connection_pool)
        if self.sentinel_manager is not None:
            for client in self.sentinel_manager.sentinels:
                await client.aclose()


def sync_redis(source: Source, **kwargs: Any) -> redis.Redis:
    """A sync client for the configured Redis (or the sentinels' current master)."""
    section = _section(source)
    if not section.sentinels:
        return redis.Redis.from_url(section.url, **kwargs)
    node = {**_node_kwargs(section.url), **kwargs}
    sentinel = SyncSentinel(
        sentinel_hosts(section), sentinel_kwargs=_sentinel_kwargs(section, kwargs), **node
    )
    client: _SyncSentinelRedis = sentinel.master_for(
        section.sentinel_master, redis_class=_SyncSentinelRedis
    )
    client.sentinel_manager = sentinel
    return client


def async_redis(source: Source, **kwargs: Any) -> Any:
    """An asyncio client (redis.asyncio.Redis) for the configured Redis or the sentinels'
    current master. Typed Any like `Redis.from_url`: redis-py's command stubs mix sync and
    async results, so callers that await them would need casts."""
    section = _section(source)
    if not section.sentinels:
        return aioredis.Redis.from_url(section.url, **kwargs)
    node = {**_node_kwargs(section.url), **kwargs}
    sentinel = AsyncSentinel(
        sentinel_hosts(section), sentinel_kwargs=_sentinel_kwargs(section, kwargs), **node
    )
    client = sentinel.master_for(section.sentinel_master, redis_class=_AsyncSentinelRedis)
    client.sentinel_manager = sentinel
    return client


def arq_redis_settings(source: Source) -> ArqRedisSettings:
    """arq's connection settings: the same server, user, TLS and db as the clients above."""
    from arq.connections import RedisSettings as ArqRedisSettings

    section = _section(source)
    parts = urlsplit(section.url)
    query = {k: v[0] for k, v in parse_qs(parts.query).items() if v}
    tls = parts.scheme == "rediss"
    common: dict[str, Any] = {
        # from_dsn keeps %-escapes; an ACL password with '@' or ':' must be unquoted.
        "username": unquote(parts.username) if parts.username else None,
        "password": unquote(parts.password) if parts.password else None,
        "database": int(query.get("db") or (parts.path.strip("/") or 0))
        if parts.scheme != "unix"
        else int(query.get("db", 0)),
        "ssl": tls,
    }
    if tls:
        common["ssl_cert_reqs"] = query.get("ssl_cert_reqs", "required")
        common["ssl_ca_certs"] = query.get("ssl_ca_certs")
        common["ssl_check_hostname"] = query.get("ssl_check_hostname", "").lower() == "true"
    if section.sentinels:
        if _sentinel_password(section):
            # arq 0.28 builds its Sentinel without sentinel_kwargs: no way to pass it.
            raise SettingsError(
                "redis.sentinel_password_env: the arq worker cannot authenticate to "
                "sentinels (arq 0.28); protect them by network instead, or leave it empty"
            )
        return ArqRedisSettings(
            host=sentinel_hosts(section),
            sentinel=True,
            sentinel_master=section.sentinel_master,
            **common,
        )
    if parts.scheme == "unix":
        return ArqRedisSettings(unix_socket_path=parts.path, **common)
    return ArqRedisSettings(host=parts.hostname or "localhost", port=parts.port or 6379, **common)


def describe(source: Source) -> str:
    """Where Redis is, for messages: never the password."""
    section = _section(source)
    if section.sentinels:
        return f"sentinel master {section.sentinel_master!r} via {', '.join(section.sentinels)}"
    parts = urlsplit(section.url)
    netloc = parts.hostname or parts.path
    if parts.port:
        netloc = f"{netloc}:{parts.port}"
    return f"{parts.scheme}://{netloc}"

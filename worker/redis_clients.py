"""Every Redis client cropq makes from CROPQ_REDIS_URL: plain ``redis://`` / ``rediss://`` URLs, or a
Sentinel group named by one URL:

    redis+sentinel://[[username]:password@]host1:26379[,host2:26379,...]/<master_name>[/<db>][?sentinel_password=...]

``username``/``password`` authenticate to the data nodes (primary and replicas), ``sentinel_password`` to
the sentinels. Clients built here ask the sentinels for the current primary on every new connection, so a
failover moves them to the promoted replica without a restart. TLS to a Sentinel group is not supported.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, cast
from urllib.parse import parse_qs, quote, unquote

import redis
import redis.asyncio as aioredis
import redis.asyncio.sentinel as async_sentinel
import redis.sentinel

SENTINEL_SCHEME = "redis+sentinel"
DEFAULT_SENTINEL_PORT = 26379
# kombu's sentinel connections get no socket options from us unless we give them: a sentinel that stopped
# answering (not refusing) must not hold a worker's reconnect forever.
BROKER_SENTINEL_SOCKET_TIMEOUT = 5.0


@dataclass(frozen=True)
class SentinelTarget:
    """Where a Sentinel group is and how to authenticate to it."""

    sentinels: tuple[tuple[str, int], ...]
    master_name: str
    db: int = 0
    username: str | None = None
    password: str | None = None
    sentinel_password: str | None = None

    def node_kwargs(self) -> dict[str, Any]:
        """Connection options for the data nodes (the primary the sentinels name)."""
        found = {"db": self.db, "username": self.username, "password": self.password}
        return {k: v for k, v in found.items() if v is not None}

    def sentinel_kwargs(self, socket_options: dict[str, Any]) -> dict[str, Any]:
        """Connection options for the sentinels: the caller's socket timeouts, and their own password."""
        options = {k: v for k, v in socket_options.items() if k.startswith("socket_")}
        if self.sentinel_password is not None:
            options["password"] = self.sentinel_password
        return options


def sentinel_target(url: str) -> SentinelTarget | None:
    """The Sentinel group a ``redis+sentinel://`` URL names; None for any other URL (used as it is).

    Raises ValueError, naming the part at fault, for a malformed sentinel URL."""
    scheme, sep, rest = url.partition("://")
    scheme = scheme.lower()
    if scheme == "rediss+sentinel":
        raise ValueError(
            "rediss+sentinel:// (TLS to a Sentinel group) is not supported; use redis+sentinel://"
        )
    if not sep or scheme != SENTINEL_SCHEME:
        return None
    rest, _, fragment = rest.partition("#")
    if fragment:
        raise ValueError("redis+sentinel URL: a #fragment is not allowed")
    rest, _, query = rest.partition("?")
    netloc, _, path = rest.partition("/")
    userinfo, at, hosts = netloc.rpartition("@")
    username, password = _credentials(userinfo) if at else (None, None)
    master_name, db = _master_and_db(path)
    return SentinelTarget(
        sentinels=tuple(_host_port(h) for h in hosts.split(",")),
        master_name=master_name,
        db=db,
        username=username,
        password=password,
        sentinel_password=_sentinel_password(query),
    )


def _credentials(userinfo: str) -> tuple[str | None, str | None]:
    user, colon, password = userinfo.partition(":")
    return unquote(user) or None, unquote(password) if colon else None


def _host_port(item: str) -> tuple[str, int]:
    item = item.strip()
    if not item:
        raise ValueError("redis+sentinel URL: empty sentinel address (expected host:port[,host:port...])")
    if item.startswith("["):  # [IPv6]:port
        host, bracket, port_text = item[1:].partition("]")
        if not bracket or (port_text and not port_text.startswith(":")):
            raise ValueError(f"redis+sentinel URL: malformed IPv6 sentinel address {item!r}")
        port_text = port_text[1:]
    else:
        host, _, port_text = item.partition(":")
    if not host:
        raise ValueError(f"redis+sentinel URL: sentinel address {item!r} has no host")
    if not port_text:
        return host, DEFAULT_SENTINEL_PORT
    if not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise ValueError(f"redis+sentinel URL: sentinel address {item!r} has an invalid port")
    return host, int(port_text)


def _master_and_db(path: str) -> tuple[str, int]:
    parts = path.rstrip("/").split("/") if path.rstrip("/") else []
    if not parts or not parts[0]:
        raise ValueError("redis+sentinel URL: the path must name the master: .../<master_name>[/<db>]")
    if len(parts) > 2:
        raise ValueError(f"redis+sentinel URL: unexpected path {path!r}: .../<master_name>[/<db>]")
    if len(parts) == 2 and not parts[1].isdigit():
        raise ValueError(f"redis+sentinel URL: the database must be a number, not {parts[1]!r}")
    return unquote(parts[0]), int(parts[1]) if len(parts) == 2 else 0


def _sentinel_password(query: str) -> str | None:
    params = parse_qs(query, keep_blank_values=True, strict_parsing=False)
    unknown = sorted(set(params) - {"sentinel_password"})
    if unknown:
        raise ValueError(
            f"redis+sentinel URL: unknown query parameter(s) {', '.join(unknown)} (only sentinel_password)"
        )
    values = params.get("sentinel_password", [])
    if len(values) > 1:
        raise ValueError("redis+sentinel URL: sentinel_password is given more than once")
    if values and not values[0]:
        raise ValueError("redis+sentinel URL: sentinel_password is empty")
    return values[0] if values else None


def sync_client(url: str, **kwargs: Any) -> redis.Redis:
    """A client for the primary; ``kwargs`` are the usual pool, socket and retry options."""
    target = sentinel_target(url)
    if target is None:
        return redis.Redis.from_url(url, **kwargs)
    group = redis.sentinel.Sentinel(
        target.sentinels, sentinel_kwargs=target.sentinel_kwargs(kwargs), **target.node_kwargs()
    )
    return cast(redis.Redis, group.master_for(target.master_name, redis_class=redis.Redis, **kwargs))


def async_client(url: str, **kwargs: Any) -> aioredis.Redis:
    """The asyncio twin of :func:`sync_client` (``retry`` must be a ``redis.asyncio.retry.Retry``)."""
    target = sentinel_target(url)
    if target is None:
        return aioredis.Redis.from_url(url, **kwargs)
    group = async_sentinel.Sentinel(
        target.sentinels, sentinel_kwargs=target.sentinel_kwargs(kwargs), **target.node_kwargs()
    )
    return cast(aioredis.Redis, group.master_for(target.master_name, redis_class=aioredis.Redis, **kwargs))


def celery_broker(url: str) -> tuple[str, dict[str, Any]]:
    """The kombu broker URL and the transport options it needs (none for a plain Redis URL).

    kombu spells a Sentinel group ``sentinel://[user:pw@]h1:26379/db;sentinel://[user:pw@]h2:26379/db``
    (credentials and database on every entry: kombu reads them from whichever entry is current) and takes
    the master name and the sentinels' own connection options as transport options."""
    target = sentinel_target(url)
    if target is None:
        return url, {}
    auth = ""
    if target.username is not None or target.password is not None:
        auth = quote(target.username or "", safe="")
        if target.password is not None:
            auth += ":" + quote(target.password, safe="")
        auth += "@"
    broker = ";".join(
        f"sentinel://{auth}{_url_host(host)}:{port}/{target.db}" for host, port in target.sentinels
    )
    socket_options = {
        "socket_timeout": BROKER_SENTINEL_SOCKET_TIMEOUT,
        "socket_connect_timeout": BROKER_SENTINEL_SOCKET_TIMEOUT,
    }
    return broker, {
        "master_name": target.master_name,
        "sentinel_kwargs": target.sentinel_kwargs(socket_options),
    }


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host

"""Which workers are alive: one sorted set, ``keys.WORKER_HEARTBEATS`` (member = Celery node name, score =
its last beat in Unix seconds). Counting is a ZCOUNT over the recent window, never a scan of the keyspace,
and members that stopped beating are pruned by every beat and every count."""

from __future__ import annotations

import time

import redis

from worker import keys

BEAT_EVERY_SECONDS = 10.0
ALIVE_WINDOW_SECONDS = 45.0
"""A node is alive while its last beat is this recent: four missed beats in a row take it out."""


def stale_before(now: float) -> float:
    """Beats older than this no longer count."""
    return now - ALIVE_WINDOW_SECONDS


def beat(client: redis.Redis, node: str, now: float | None = None) -> None:
    at = time.time() if now is None else now
    with client.pipeline(transaction=False) as pipe:
        pipe.zadd(keys.WORKER_HEARTBEATS, {node: at})
        pipe.zremrangebyscore(keys.WORKER_HEARTBEATS, "-inf", f"({stale_before(at)}")
        pipe.execute()


def forget(client: redis.Redis, node: str) -> None:
    """A node that shut down leaves the count at once instead of after the window."""
    with client.pipeline(transaction=False) as pipe:
        pipe.zrem(keys.WORKER_HEARTBEATS, node)
        pipe.execute()


def is_alive(client: redis.Redis, node: str, now: float | None = None) -> bool:
    score = client.zscore(keys.WORKER_HEARTBEATS, node)
    return score is not None and float(score) >= stale_before(time.time() if now is None else now)


def alive_nodes(client: redis.Redis, prefix: str = "", now: float | None = None) -> list[str]:
    """The nodes alive now whose names start with ``prefix``."""
    at = time.time() if now is None else now
    members = client.zrangebyscore(keys.WORKER_HEARTBEATS, stale_before(at), "+inf")
    names = (m.decode() if isinstance(m, bytes) else str(m) for m in members)
    return sorted(n for n in names if n.startswith(prefix))

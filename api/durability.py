"""What a 202 promises: the job is in Redis, and (by ``accept_durability``) on disk or on a replica too.

The job record is written and its Celery message published before this runs; then one more write on one
connection (the accepted-jobs counter) is followed by WAITAOF or WAIT on that same connection. Redis applies
writes in one order, so once that write is fsynced (or replicated), the record and the message before it
are as well. Unconfirmed in time, the caller withdraws the job: nothing is promised that is not kept.
"""

from __future__ import annotations

import time
from typing import Literal

import redis
import redis.asyncio as aioredis
import structlog

from api.errors import service_unavailable
from worker import keys
from worker.settings import Settings
from worker.stats import ACCEPTED

log = structlog.get_logger("cropq.api")

Mode = Literal["memory", "fsync", "replica"]
AUTO_RECHECK_SECONDS = 60.0
"""``auto`` asks Redis whether its append-only file is on at most this often (it may be reconfigured)."""

_auto: dict[int, tuple[Mode, float]] = {}


async def _mode(r: aioredis.Redis, settings: Settings) -> Mode:
    if settings.accept_durability != "auto":
        return settings.accept_durability
    cached = _auto.get(id(r))
    now = time.monotonic()
    if cached is not None and now - cached[1] < AUTO_RECHECK_SECONDS:
        return cached[0]
    info = await r.info("persistence")
    mode: Mode = "fsync" if int(info.get("aof_enabled", 0)) == 1 else "memory"
    _auto[id(r)] = (mode, now)
    return mode


async def confirm_accepted(r: aioredis.Redis, settings: Settings, jobs: int) -> None:
    """Count ``jobs`` accepted and wait until they are durable as configured; 503 when they are not."""
    mode = await _mode(r, settings)
    timeout_ms = settings.accept_durability_timeout_ms
    async with r.pipeline(transaction=False) as pipe:
        pipe.hincrby(keys.STATS, ACCEPTED, jobs)
        if mode == "fsync":
            pipe.execute_command("WAITAOF", 1, 0, timeout_ms)
        elif mode == "replica":
            pipe.execute_command("WAIT", 1, timeout_ms)
        try:
            replies = await pipe.execute()
        except redis.ResponseError as e:  # e.g. fsync asked of a Redis without an append-only file
            log.error("accept_durability_refused", mode=mode, error=str(e))
            raise service_unavailable(
                f"The job could not be made durable ({mode}): Redis answered {str(e)[:120]!r}; "
                "nothing was accepted."
            ) from None
    if mode == "memory":
        return
    confirmed = int(replies[1][0]) >= 1 if mode == "fsync" else int(replies[1]) >= 1
    if not confirmed:
        log.warning("accept_not_durable", mode=mode, timeout_ms=timeout_ms)
        raise service_unavailable(
            f"The job could not be made durable ({mode}) within {timeout_ms} ms; nothing was accepted. "
            "Try again."
        )

"""Operations: liveness, readiness (Redis and S3 reachable) and Prometheus metrics."""

from __future__ import annotations

import asyncio

import redis
from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from redis.sentinel import MasterNotFoundError

from worker import keys
from worker.stats import render_prometheus

router = APIRouter(tags=["operations"])


def redis_trouble(e: BaseException) -> str:
    """Why Redis does not answer, in words an operator acts on (no addresses: the page is unauthenticated)."""
    if isinstance(e, redis.BusyLoadingError):
        return "loading its dataset (it is restarting; jobs resume when it is done)"
    if isinstance(e, TimeoutError | redis.TimeoutError):
        return "no answer within 2 s (overloaded, frozen or cut off)"
    if isinstance(e, redis.ReadOnlyError):
        return "connected to a read-only replica (a failover is under way)"
    if isinstance(e, redis.AuthenticationError):
        return "authentication refused (check CROPQ_REDIS_URL's credentials)"
    if isinstance(e, MasterNotFoundError):
        return "no primary known to the sentinels (a failover is under way)"
    if isinstance(e, redis.ConnectionError):
        return "connection refused or reset (is it running?)"
    if isinstance(e, redis.ResponseError):
        return f"error reply {str(e).split(' ', 1)[0]}"
    return type(e).__name__


@router.get("/healthz", operation_id="healthz")
async def healthz() -> dict[str, str]:
    return {"Status": "ok"}


@router.get("/readyz", operation_id="readyz")
async def readyz(request: Request) -> JSONResponse:
    state = request.app.state
    checks: dict[str, str] = {}
    try:
        await asyncio.wait_for(state.redis.ping(), timeout=2)
        checks["Redis"] = "ok"
    except Exception as e:
        checks["Redis"] = f"unavailable: {redis_trouble(e)}"
    try:
        await asyncio.wait_for(asyncio.to_thread(state.storage.ping), timeout=3)
        checks["Storage"] = "ok"
    except TimeoutError:
        checks["Storage"] = "unavailable: no answer within 3 s"
    except Exception as e:
        checks["Storage"] = f"unavailable: {e}"
    ok = all(v == "ok" for v in checks.values())
    return JSONResponse(
        {"Status": "ok" if ok else "unavailable", "Checks": checks}, status_code=200 if ok else 503
    )


@router.get("/metrics", operation_id="metrics")
async def metrics(request: Request) -> Response:
    state = request.app.state
    lines = [generate_latest().decode()]
    try:
        backlog = await state.redis.llen(state.settings.queue_name)
        workers = 0
        async for _ in state.redis.scan_iter(match=keys.worker_heartbeat("*"), count=100):
            workers += 1
        lines.append(
            "# HELP cropq_queue_backlog Crop jobs waiting in the queue\n# TYPE cropq_queue_backlog gauge\n"
            f"cropq_queue_backlog {backlog}\n"
            "# HELP cropq_workers_alive Worker processes with a fresh heartbeat\n"
            "# TYPE cropq_workers_alive gauge\n"
            f"cropq_workers_alive {workers}\n"
        )
        lines.append(render_prometheus(await state.redis.hgetall(keys.STATS)))
    except Exception:
        pass  # metrics must not fail because Redis is down; readyz says so
    return Response("".join(lines), media_type=CONTENT_TYPE_LATEST)

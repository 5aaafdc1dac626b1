"""Operations: liveness, readiness (Redis and S3 reachable) and Prometheus metrics."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from worker import keys
from worker.stats import render_prometheus

router = APIRouter(tags=["operations"])


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
        checks["Redis"] = f"unavailable: {type(e).__name__}"
    try:
        await asyncio.wait_for(asyncio.to_thread(state.storage.ping), timeout=3)
        checks["Storage"] = "ok"
    except Exception as e:
        checks["Storage"] = f"unavailable: {type(e).__name__}"
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

"""Operations: liveness, readiness (Redis and S3 reachable) and Prometheus metrics: this process's on
``/metrics`` (scrape every replica), the cluster's on ``/metrics/cluster`` (scrape one): api/metrics.py."""

from __future__ import annotations

import asyncio
from typing import Any

import redis
from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from redis.sentinel import MasterNotFoundError

from api.metrics import read_cluster_figures, render_cluster

router = APIRouter(tags=["operations"])
REDIS_SECONDS = 2.0


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


_TEXT_FORMAT: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "Prometheus text exposition format.",
        "content": {"text/plain": {"schema": {"type": "string"}}},
    }
}


@router.get("/metrics", operation_id="metrics")
async def metrics() -> Response:
    """This process's figures only (requests, latency, jobs it accepted): sum them over the replicas."""
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)


@router.get(
    "/metrics/cluster",
    operation_id="metrics_cluster",
    response_class=Response,
    responses={
        **_TEXT_FORMAT,
        503: {"description": "Redis is unreachable: the cluster's figures are unknown."},
    },
)
async def metrics_cluster(request: Request) -> Response:
    """The service's figures read from Redis (queues, jobs by outcome, callbacks, live workers): the same on
    every replica, so scrape this once. A 503 while Redis is down marks the scrape failed (``up`` 0)
    instead of reporting zeros."""
    state = request.app.state
    try:
        figures = await asyncio.wait_for(
            read_cluster_figures(state.redis, state.settings.queue_name), timeout=REDIS_SECONDS
        )
    except Exception as e:
        return Response(f"Redis unavailable: {redis_trouble(e)}\n", status_code=503, media_type="text/plain")
    return Response(render_cluster(figures), media_type=CONTENT_TYPE_LATEST)

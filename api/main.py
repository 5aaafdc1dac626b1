"""The HTTP API: ``uvicorn api.main:create_app --factory``.

A thin process: it validates, records jobs in Redis, sends Celery tasks by name and serves polling.
It never decodes images (OpenCV is never imported here).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import redis
import structlog
from fastapi import FastAPI
from redis.asyncio.retry import Retry as AsyncRetry
from redis.backoff import ExponentialBackoff

from api.auth.keystore import AccessKeyStore
from api.errors import install_error_handlers
from api.job_lifecycle import sync_redis_client
from api.limits import BodyLimitMiddleware
from api.openapi import install_openapi
from api.request_context import install_request_context
from api.routes import batches, health, jobs, projects, rpc, ui
from api.tracing import install_tracing
from api.uploads import body_limit
from worker.celery_config import producer_app
from worker.logs import configure_logging
from worker.redis_clients import async_client
from worker.sealing import WEBHOOK_SECRETS, SecretBox
from worker.settings import Settings, get_settings
from worker.storage import S3Storage

log = structlog.get_logger("cropq.api")


REDIS_CONNECT_SECONDS = 2.0
REDIS_ANSWER_SECONDS = 3.0
"""Longest wait for a Redis answer (a WAITAOF/WAIT waits its own timeout plus a second)."""


def create_app(settings: Settings | None = None) -> FastAPI:
    s = settings or get_settings()
    configure_logging(s.log_level, s.log_json)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.settings = s
        app.state.redis = async_client(
            s.redis_url,
            decode_responses=True,
            # A pooled connection that died with a Redis restart is replaced (refused and reset connections
            # are retried for about a second), but a Redis that does not answer is not waited for twice:
            # while Redis is down every request gets its 503 within a few seconds, never a hang.
            retry=AsyncRetry(ExponentialBackoff(cap=0.5, base=0.05), 3),
            retry_on_error=[redis.ConnectionError],
            socket_timeout=max(REDIS_ANSWER_SECONDS, s.accept_durability_timeout_ms / 1000 + 1),
            socket_connect_timeout=REDIS_CONNECT_SECONDS,
            health_check_interval=30,
        )
        app.state.sync_redis = sync_redis_client(s)  # cancel and delete (worker/job_lifecycle.py)
        app.state.celery = producer_app(s)  # sends by name; no worker app in the API
        app.state.storage = S3Storage(s)
        app.state.keystore = AccessKeyStore(app.state.redis, s)
        app.state.webhook_box = SecretBox(s.secret_key, WEBHOOK_SECRETS)
        log.info("api_started", port=s.api_port)
        yield
        await app.state.redis.aclose()

    app = FastAPI(
        title="cropq",
        version="0.1.0",
        summary="Smart cropping as a service: IMM DetectImageCropping-compatible, async, self-hosted.",
        lifespan=lifespan,
    )
    install_error_handlers(app)

    install_request_context(app)  # RequestId, X-Request-Id, the request log line and its latency

    # Added last, so it is the outermost of our middleware: no layer reads a byte of an oversized body.
    app.add_middleware(BodyLimitMiddleware, max_bytes=s.max_body_bytes, upload_max_bytes=body_limit(s))
    install_tracing(app, s)  # CROPQ_TRACING: the request's span, outermost, and the trace into tasks

    app.include_router(health.router)
    app.include_router(projects.router)
    app.include_router(jobs.router)
    app.include_router(batches.router)
    app.include_router(rpc.router)
    app.include_router(ui.router)
    install_openapi(app)
    return app

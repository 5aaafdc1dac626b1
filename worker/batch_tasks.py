"""The batch tasks: thin Celery adapters over worker/batches.py (feeder runs, the finisher, the batch's
callback). Only workers import this module; the API and the job lifecycle send these tasks by name."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import IO, Any

import redis
import structlog
from celery import Task
from celery.exceptions import Reject

from worker import batches, keys
from worker.celery_app import app
from worker.contracts import (
    BATCH_FEED_TASK,
    BATCH_FINISH_TASK,
    BATCH_WEBHOOK_TASK,
    Batch,
    BatchWebhookEvent,
    utcnow_iso,
)
from worker.settings import get_settings

log = structlog.get_logger("cropq.batches")


@app.task(name=BATCH_FEED_TASK, bind=True, acks_late=True, max_retries=None)
def feed(self: Task[Any, Any], batch_id: str, heartbeat: bool = False) -> None:
    structlog.contextvars.clear_contextvars()
    structlog.contextvars.bind_contextvars(batch_id=batch_id, task_id=self.request.id)
    s = get_settings()
    r = batches.redis_connection()
    try:
        result = batches.feeder_for(s).run(batch_id, heartbeat)
    except Exception as e:  # Redis or the store unavailable, or a listing error: look again later
        log.warning("batch_feed_failed", error=f"{type(e).__name__}: {e}"[:300])
        result = batches.FeedResult(5.0)
    if result.again_in is not None:
        try:
            batches.wake(
                r, batches.default_sender(), batch_id, result.again_in, heartbeat=result.again_in > 0
            )
        except Exception as e:
            raise Reject(e, requeue=True) from e  # could not send the next run: this message comes back


def _put_manifest(bucket: str, key: str, data: IO[bytes], length: int) -> None:
    from minio.error import S3Error

    try:
        batches.minio_client().put_object(bucket, key, data, length, content_type="application/x-ndjson")
    except S3Error as e:
        if e.code not in batches.MANIFEST_REFUSALS:
            raise  # the store failing: the finisher tries again
        # The bucket is gone or no longer ours: retrying cannot help, and the batch must still end.
        log.error("batch_manifest_refused", bucket=bucket, code=e.code)


@app.task(name=BATCH_FINISH_TASK, bind=True, acks_late=True, max_retries=None)
def finish(self: Task[Any, Any], batch_id: str) -> None:
    structlog.contextvars.clear_contextvars()
    structlog.contextvars.bind_contextvars(batch_id=batch_id, task_id=self.request.id)
    try:
        batches.finish_batch(batches.redis_connection(), batch_id, _put_manifest, batches.default_sender())
    except Exception as e:  # the store or Redis away: try again (the feeder's revival is the backstop)
        log.warning("batch_finish_retry", error=f"{type(e).__name__}: {e}"[:300])
        retries = int(self.request.retries or 0)
        raise self.retry(countdown=min(2.0 ** min(retries, 6), 60.0)) from e


# --------------------------------------------------------------------------- the callback


def batch_event_body(batch: Batch) -> bytes:
    event = BatchWebhookEvent(timestamp=batch.FinishedAt or utcnow_iso(), data=batch)
    return event.model_dump_json(exclude_none=True).encode("utf-8")


@app.task(name=BATCH_WEBHOOK_TASK, bind=True, acks_late=True, max_retries=None)
def send_batch_callback(self: Task[Any, Any], batch_id: str) -> None:
    """The batch's one ``crop-batch.finished`` callback: signed with the project's secrets (the webhook-id is
    the BatchId), delivered and retried exactly like job callbacks (same schedule, SSRF guard, deadline)."""
    from worker.webhooks.delivery import deliver
    from worker.webhooks.signing import sign_headers
    from worker.webhooks.tasks import load_secrets, retry_delay

    s = get_settings()
    r = batches.redis_connection()
    retries = int(self.request.retries or 0)
    try:
        batch = batches.read_batch(r, batch_id)
    except redis.RedisError as e:  # transient: spend a step of the schedule rather than lose the callback
        if retries >= len(s.webhook_retry_schedule):
            raise
        raise self.retry(countdown=retry_delay(s.webhook_retry_schedule[retries])) from e
    if batch is None or not batch.CallbackURL or not batch.Status.finished:
        return
    blog = log.bind(batch_id=batch_id, attempt=retries + 1)
    secrets_ = load_secrets(r, batch.ProjectName)
    if not secrets_:
        blog.error("batch_webhook.failed", reason="no_secret")
        return
    body = batch_event_body(batch)
    outcome = deliver(
        batch.CallbackURL,
        body,
        sign_headers(secrets_, batch_id, datetime.now(UTC), body),
        s.webhook_timeout_seconds,
        s.webhook_allowed_cidrs,
    )
    r.hset(
        keys.batch(batch_id),
        mapping={
            "CallbackAttempts": str(retries + 1),
            "CallbackOutcome": ("Delivered" if outcome.delivered else (outcome.error or "error")[:200]),
        },
    )
    if outcome.delivered:
        blog.info("batch_webhook.delivered", status_code=outcome.status_code)
        return
    schedule = s.webhook_retry_schedule
    if outcome.final or retries >= len(schedule):
        blog.warning("batch_webhook.failed", status_code=outcome.status_code, error=outcome.error)
        return
    countdown = retry_delay(schedule[retries], outcome.retry_after_seconds)
    blog.warning("batch_webhook.retrying", status_code=outcome.status_code, retry_in=round(countdown, 1))
    raise self.retry(countdown=countdown)

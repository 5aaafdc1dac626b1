"""The callback task: load the finished job, sign its event, POST it, record the outcome, retry by schedule.

``process_delivery`` holds every decision and talks to Redis and HTTP only through what it is given, so
it is unit-tested with fakes; the Celery task wires the real pieces in and turns "retry in N s" into
``self.retry`` (Celery's own retry: the countdown message carries the retry count).
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any, Literal, Protocol
from urllib.parse import urlsplit

import redis
import structlog
from celery import Task
from celery.exceptions import Reject, SoftTimeLimitExceeded

from worker import keys
from worker.celery_app import app
from worker.contracts import (
    WEBHOOK_TASK,
    CallbackState,
    CallbackStatus,
    Job,
    JobStatus,
    WebhookEvent,
    utcnow_iso,
)
from worker.jobstore import JobNotFound, JobStore, connect
from worker.projects import Project, signing_secrets
from worker.sealing import WEBHOOK_SECRETS, SealingError, SecretBox
from worker.settings import WEBHOOK_MAX_DELAY_FACTOR, get_settings
from worker.stats import record_webhook
from worker.webhooks.delivery import DeliveryOutcome, deliver
from worker.webhooks.signing import sign_headers

log = structlog.get_logger("cropq.webhooks")

JITTER = 0.2  # ±20 % around each scheduled delay, as svix does
_rng = random.SystemRandom()


class Store(Protocol):
    def get(self, request_id: str) -> Job: ...
    def update(self, request_id: str, change: Callable[[Job], Job | None]) -> Job: ...


Sender = Callable[[str, bytes, dict[str, str]], DeliveryOutcome]


def retry_delay(base: float, retry_after: float | None = None, rng: random.Random = _rng) -> float:
    """The scheduled delay with jitter; a receiver's Retry-After may lengthen it up to 2× the schedule."""
    delay = base * rng.uniform(1 - JITTER, 1 + JITTER)
    if retry_after is not None:
        delay = min(max(retry_after, delay), WEBHOOK_MAX_DELAY_FACTOR * base)
    return delay


EVENT_TYPES: dict[JobStatus, Literal["crop-job.succeeded", "crop-job.failed", "crop-job.cancelled"]] = {
    JobStatus.SUCCEEDED: "crop-job.succeeded",
    JobStatus.FAILED: "crop-job.failed",
    JobStatus.CANCELLED: "crop-job.cancelled",
}
"""The event type of each finished state (only finished jobs are ever delivered)."""


def build_body(job: Job) -> bytes:
    """The event bytes, identical on every attempt: the job without its delivery bookkeeping."""
    event = WebhookEvent(
        type=EVENT_TYPES.get(job.Status, "crop-job.failed"),
        timestamp=job.FinishedAt or utcnow_iso(),
        data=job.model_copy(update={"Callback": None}),
    )
    return event.model_dump_json(exclude_none=True).encode("utf-8")


def process_delivery(
    request_id: str,
    *,
    store: Store,
    secret_for: Callable[[str], Sequence[str] | None],
    send: Sender,
    retries_done: int,
    schedule: Sequence[float],
    now: Callable[[], datetime] = lambda: datetime.now(UTC),
    rng: random.Random = _rng,
) -> float | None:
    """Make one delivery attempt and record it in the job's ``Callback``.

    Returns the countdown in seconds before the next attempt, or None when delivery has ended
    (delivered, failed for good, or nothing to deliver).
    """
    blog = log.bind(request_id=request_id, attempt=retries_done + 1)
    try:
        job = store.get(request_id)
    except JobNotFound:
        blog.warning("webhook.job_missing")  # expired or never stored: nothing to report
        return None
    if not job.CallbackURL:
        return None
    if job.Callback is not None and job.Callback.Status in (CallbackStatus.DELIVERED, CallbackStatus.FAILED):
        blog.info("webhook.already_ended", status=job.Callback.Status.value)  # a duplicate message
        return None
    if not job.Status.finished:
        blog.error("webhook.job_not_finished", status=job.Status.value)
        return None
    blog = blog.bind(host=urlsplit(job.CallbackURL).hostname)  # never the full URL: it may carry a token

    secrets = secret_for(job.ProjectName)
    if not secrets:
        _record(
            store,
            request_id,
            CallbackStatus.FAILED,
            error="project or webhook secret not found",
            posted=False,
        )
        blog.error("webhook.failed", reason="no_secret")
        return None

    body = build_body(job)
    headers = sign_headers(secrets, request_id, now(), body)
    try:
        outcome = send(job.CallbackURL, body, headers)
    except SoftTimeLimitExceeded:
        # The task's time limit fired mid-POST (the attempt's own deadline should have come first): a
        # failed attempt like any timeout, recorded and retried on the schedule, never a lost callback.
        outcome = DeliveryOutcome(delivered=False, error="timeout: the attempt hit the task time limit")

    if outcome.delivered:
        _record(store, request_id, CallbackStatus.DELIVERED, outcome=outcome, delivered_at=utcnow_iso())
        blog.info("webhook.delivered", status_code=outcome.status_code)
        return None
    if outcome.final or retries_done >= len(schedule):
        _record(store, request_id, CallbackStatus.FAILED, outcome=outcome)
        blog.warning(
            "webhook.failed", status_code=outcome.status_code, error=outcome.error, gone=outcome.gone
        )
        return None
    countdown = retry_delay(schedule[retries_done], outcome.retry_after_seconds, rng)
    _record(store, request_id, CallbackStatus.RETRYING, outcome=outcome)
    blog.warning(
        "webhook.retrying", status_code=outcome.status_code, error=outcome.error, retry_in=round(countdown, 1)
    )
    return countdown


def _record(
    store: Store,
    request_id: str,
    status: CallbackStatus,
    *,
    outcome: DeliveryOutcome | None = None,
    error: str | None = None,
    delivered_at: str | None = None,
    posted: bool = True,
) -> None:
    def change(job: Job) -> Job | None:
        prev = job.Callback or CallbackState()
        if prev.Status is CallbackStatus.DELIVERED:
            return None  # a duplicate attempt already succeeded; never downgrade that
        state = CallbackState(
            Status=status,
            Attempts=prev.Attempts + (1 if posted else 0),
            LastStatusCode=outcome.status_code if outcome else None,
            LastError=outcome.error if outcome else error,
            DeliveredAt=delivered_at,
        )
        return job.model_copy(update={"Callback": state})

    store.update(request_id, change)


@lru_cache(maxsize=4)
def _redis(url: str) -> redis.Redis:
    # One client per worker process; redis-py's pool notices a fork and reconnects in the child.
    return connect(url)


@lru_cache(maxsize=1)
def _box() -> SecretBox:
    return SecretBox(get_settings().secret_key, WEBHOOK_SECRETS)


def load_secrets(r: redis.Redis, project_name: str, now: datetime | None = None) -> list[str] | None:
    """Every secret the project's callbacks are signed with now (the previous one too during a rotation's
    grace period); None when the project is gone."""
    raw = r.get(keys.project(project_name))
    if raw is None:
        return None
    return signing_secrets(Project.model_validate_json(raw), _box(), now)


# The task's own limits sit just above the attempt's deadline (signing and two Redis writes fit in the
# margin): the deadline ends a slow receiver; the soft limit is the backstop, counted as a failed attempt.
TIME_LIMIT_MARGIN_SECONDS = 5
WEBHOOK_SOFT_TIME_LIMIT = math.ceil(get_settings().webhook_timeout_seconds) + TIME_LIMIT_MARGIN_SECONDS
WEBHOOK_HARD_TIME_LIMIT = WEBHOOK_SOFT_TIME_LIMIT + TIME_LIMIT_MARGIN_SECONDS


@app.task(
    name=WEBHOOK_TASK,
    bind=True,
    acks_late=True,  # at-least-once: a worker lost mid-POST leaves the message for another worker
    max_retries=len(get_settings().webhook_retry_schedule),
    soft_time_limit=WEBHOOK_SOFT_TIME_LIMIT,
    time_limit=WEBHOOK_HARD_TIME_LIMIT,
)
def send_callback(self: Task[Any, Any], request_id: str) -> None:
    s = get_settings()
    r = _redis(s.redis_url)
    schedule = s.webhook_retry_schedule
    retries = self.request.retries

    def send(url: str, body: bytes, headers: dict[str, str]) -> DeliveryOutcome:
        outcome = deliver(url, body, headers, s.webhook_timeout_seconds, s.webhook_allowed_cidrs)
        record_webhook(r, "delivered" if outcome.delivered else "error")
        return outcome

    try:
        countdown = process_delivery(
            request_id,
            store=JobStore(r, s.result_ttl_seconds),
            secret_for=lambda name: load_secrets(r, name),
            send=send,
            retries_done=retries,
            schedule=schedule,
        )
    except (redis.RedisError, SealingError, SoftTimeLimitExceeded) as exc:
        # Redis trouble is transient too, a worker started with the wrong CROPQ_SECRET_KEY can be fixed,
        # and a time limit outside the POST itself is no reason to drop the callback: spend a step of
        # the same schedule rather than lose it.
        if retries >= len(schedule):
            raise
        log_event = log.error if isinstance(exc, SealingError) else log.warning
        log_event("webhook.retry_on_error", request_id=request_id, error=type(exc).__name__, detail=str(exc))
        countdown = retry_delay(schedule[retries])
    if countdown is not None:
        try:
            raise self.retry(countdown=countdown)
        except Reject as e:
            # Celery could not publish the retry (Redis is down too) and would drop the message: put it
            # back instead, so the callback is tried again once Redis answers.
            raise Reject(e, requeue=True) from e

"""One run of a crop job: claim -> fetch -> crop -> render -> store -> notify, as a plain function.

``run_crop_job`` holds every decision and reaches Redis, storage, the engine and the queue only through the
collaborators it is given (``CropDeps``), so it is unit-tested with fakes; the Celery task (worker/tasks.py)
wires the real ones in and turns the outcome into Celery's retry or requeue.

Reliability:
- every run counts itself before any work, and every run that ends with its process alive counts its end;
  runs started minus runs ended are the runs that died, so a job that keeps killing its worker ends
  ``Failed`` after ``max_attempts`` deaths instead of looping, while retries and requeues cost nothing;
- runs are fenced by their attempt number: the job record holds the newest run's number, and a run that finds
  a newer one (a host that lost its network and came back after its job was handed on) stores nothing and
  sends no callback;
- results are written to the job record only (deterministic key), so a rerun overwrites, never duplicates;
- an unreachable store is retried with exponential backoff and jitter for ``storage_outage_seconds`` from
  the first failure, then the job ends ``Failed`` with ``ServiceUnavailable``; an unreachable Redis (after
  the client's own retries) puts the message back on its queue, to be run when Redis answers again;
- the callback is sent only after the terminal state is stored, by the run that stored it (or by a rerun
  of a finished job that finds it was never sent).
"""

from __future__ import annotations

import contextlib
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import redis
import structlog
from celery.exceptions import SoftTimeLimitExceeded
from celery.utils.time import get_exponential_backoff_interval

from worker.contracts import Cropping, CropTaskMessage, Detection, Job, JobStatus, RenderSpec, utcnow_iso
from worker.engine.errors import CropError
from worker.engine.types import CropResult
from worker.jobstore import JobNotFound
from worker.render_targets import TargetError
from worker.settings import Settings
from worker.storage import StorageError, StorageUnavailable
from worker.tracing import NO_TRACING, Tracer

log = structlog.get_logger("cropq.worker")

REDIS_DOWN = (redis.ConnectionError, redis.TimeoutError)
OUTAGE_BACKOFF_CAP_SECONDS = 15.0
"""Longest wait between two tries against an unavailable store: storage that is back is noticed this fast."""

_rng = random.SystemRandom()


class RunStore(Protocol):
    """The job store as a run uses it (worker/jobstore.py's JobStore)."""

    def get(self, request_id: str) -> Job: ...
    def update(self, request_id: str, change: Callable[[Job], Job | None]) -> Job: ...
    def start_run(self, request_id: str) -> tuple[int, int]: ...
    def end_run(self, request_id: str) -> None: ...
    def callback_queued(self, request_id: str) -> bool: ...
    def mark_callback_queued(self, request_id: str) -> None: ...


Fetch = Callable[[CropTaskMessage], bytes]
Engine = Callable[[bytes, CropTaskMessage], CropResult]
Render = Callable[[bytes, CropTaskMessage, RenderSpec, list[Cropping]], list[Cropping]]


@dataclass(frozen=True)
class CropDeps:
    """Everything a run talks to."""

    store: RunStore
    fetch: Fetch
    """The source image's bytes (its bucket, or its http(s) URL under the source policy)."""
    engine: Engine
    render: Render
    """Encode every crop and write it to its target; returns the croppings with their ``Output``."""
    send_callback: Callable[[str], None]
    """Queue the callback of a job whose terminal state is stored."""
    job_ended: Callable[[Job, float | None], None] = lambda job, seconds: None
    """Once per job, when a run stores its terminal state: counters and the open-jobs index."""
    batch_job_ended: Callable[[Job], None] = lambda job: None
    """Once per job of a prefix batch, after its callback: counts it into its batch, which is fed on."""
    clock: Callable[[], float] = time.time
    timer: Callable[[], float] = time.perf_counter
    rng: random.Random = _rng
    tracer: Tracer = NO_TRACING


@dataclass(frozen=True)
class RunPolicy:
    max_attempts: int
    storage_outage_seconds: int
    soft_time_limit: int

    @classmethod
    def from_settings(cls, s: Settings) -> RunPolicy:
        return cls(s.max_attempts, s.storage_outage_seconds, s.task_soft_time_limit)


@dataclass(frozen=True)
class RetryLater:
    """The image store is unavailable: run again in ``countdown`` s, the outage counted from ``since``."""

    countdown: float
    since: float
    error: StorageUnavailable


@dataclass(frozen=True)
class Requeue:
    """Redis stayed away: nothing could be stored, so nothing is decided; the message goes back."""

    error: Exception


Outcome = RetryLater | Requeue | None


class StaleRun(Exception):
    """A newer run of the job has started: this one must store nothing."""


def outage_countdown(retries: int, remaining: float, rng: random.Random = _rng) -> float:
    """Seconds before the next try against an unavailable store: exponential (1, 2, 4 ... 15 s) with equal
    jitter (half fixed, half random, so workers that failed together spread out), and never past the end of
    the outage window, so the last try happens at its end."""
    step = get_exponential_backoff_interval(
        factor=1, retries=retries, maximum=int(OUTAGE_BACKOFF_CAP_SECONDS), full_jitter=False
    )
    delay = step / 2 + rng.uniform(0, step / 2)
    return max(0.5, min(delay, remaining))


def run_crop_job(
    msg: CropTaskMessage,
    deps: CropDeps,
    policy: RunPolicy,
    *,
    retries_done: int = 0,
    outage_since: float | None = None,
) -> Outcome:
    """Run the job of ``msg`` once. Returns what the queue must do with its message: nothing (None; the job
    ended, or this run had nothing to decide), run it again later, or put it back now."""
    rid = msg.RequestId
    try:
        return _run(msg, deps, policy, retries_done, outage_since)
    except StaleRun as e:
        log.warning("stale_run_discarded", newest_attempt=e.args[0])
    except JobNotFound:
        log.info("job_withdrawn")  # the API took the job back (not made durable in time): nothing to do
    except REDIS_DOWN as e:
        # Redis stayed away through the client's retries: nothing can be stored, so nothing is decided.
        log.warning("job_store_unavailable_requeued", error=str(e))
        return Requeue(e)
    finally:
        with contextlib.suppress(*REDIS_DOWN):
            deps.store.end_run(rid)  # not reached when the process dies: that is what makes a death a death
    return None


def _fence(job: Job, attempt: int) -> None:
    """Raise StaleRun when a newer run of the job has started than run ``attempt``."""
    if (job.Attempts or 0) > attempt:
        raise StaleRun(job.Attempts)


def send_callback_once(deps: CropDeps, job: Job) -> None:
    if job.CallbackURL and not deps.store.callback_queued(job.RequestId):
        with deps.tracer.span("callback"):
            deps.send_callback(job.RequestId)
        deps.store.mark_callback_queued(job.RequestId)


def finish(deps: CropDeps, rid: str, attempt: int, crop_seconds: float | None = None, **fields: Any) -> Job:
    """Store the terminal state ``fields`` unless the job already ended; the run that ends it counts the
    end and sends the callback. Raises StaleRun when a newer run has started."""
    ended_now = False

    def change(job: Job) -> Job | None:
        nonlocal ended_now
        _fence(job, attempt)
        ended_now = not job.Status.finished
        if not ended_now:
            return None  # a rerun after the end changes nothing (at-least-once delivery)
        return job.model_copy(update={**fields, "FinishedAt": utcnow_iso()})

    with deps.tracer.span("store"):
        job = deps.store.update(rid, change)
    if ended_now:
        deps.job_ended(job, crop_seconds)
        log.info("job_finished", status=job.Status.value, code=job.Code)
        send_callback_once(deps, job)
        if job.BatchId:
            deps.batch_job_ended(job)
    return job


def fail(deps: CropDeps, rid: str, attempt: int, code: str, message: str) -> Job:
    return finish(deps, rid, attempt, Status=JobStatus.FAILED, Code=code, Message=message, Croppings=None)


def _run(
    msg: CropTaskMessage, deps: CropDeps, policy: RunPolicy, retries_done: int, outage_since: float | None
) -> Outcome:
    rid = msg.RequestId
    store = deps.store
    attempt, ended = store.start_run(rid)
    structlog.contextvars.bind_contextvars(attempt=attempt)
    try:
        job = store.get(rid)
    except JobNotFound:
        log.warning("job_record_missing")  # expired or deleted: nothing to report to
        return None
    if job.Status.finished:
        log.info("job_already_finished")
        send_callback_once(deps, job)  # the run that finished it may have died before sending it
        return None
    _fence(job, attempt)  # a stale redelivery decides nothing, not even a give-up
    deaths = attempt - 1 - ended
    if deaths >= policy.max_attempts:
        fail(
            deps,
            rid,
            attempt,
            "InternalError",
            f"The job stopped its worker {deaths} times; it was given up.",
        )
        return None

    def running(j: Job) -> Job | None:
        _fence(j, attempt)
        if j.Status.finished:
            return None  # cancelled since it was read above: it must never run
        return j.model_copy(
            update={
                "Status": JobStatus.RUNNING,
                "Attempts": attempt,
                "StartedAt": j.StartedAt or utcnow_iso(),
            }
        )

    if store.update(rid, running).Status.finished:
        log.info("job_already_finished")
        return None
    log.info("job_started", bucket=msg.Bucket, url=msg.SourceURL is not None)
    try:
        _crop(msg, deps, attempt)
    except StorageUnavailable as e:
        return _retry_after_outage(msg, deps, policy, attempt, e, retries_done, outage_since)
    except (StorageError, CropError) as e:  # the source or the image itself: final
        fail(deps, rid, attempt, e.code, str(e))
    except TargetError as e:
        fail(deps, rid, attempt, "InvalidArgument", str(e))
    except SoftTimeLimitExceeded:
        fail(deps, rid, attempt, "Timeout", f"Processing took longer than {policy.soft_time_limit} s.")
    except (StaleRun, JobNotFound, *REDIS_DOWN):
        raise
    except Exception as e:  # anything unexpected must still end the job, not leave it Running
        log.exception("job_crashed")
        fail(deps, rid, attempt, "InternalError", f"Unexpected error: {type(e).__name__}")
    return None


def _crop(msg: CropTaskMessage, deps: CropDeps, attempt: int) -> None:
    with deps.tracer.span("fetch"):
        data = deps.fetch(msg)
    t0 = deps.timer()
    with deps.tracer.span("engine"), deps.tracer.engine_stages():
        result = deps.engine(data, msg)
    croppings = [Cropping.from_suggestion(s) for s in result.croppings]
    if msg.Render is not None:
        with deps.tracer.span("render"):
            croppings = deps.render(data, msg, msg.Render, croppings)
    finish(
        deps,
        msg.RequestId,
        attempt,
        crop_seconds=deps.timer() - t0,
        Status=JobStatus.SUCCEEDED,
        Croppings=croppings,
        Detections=[Detection.from_detected(d) for d in result.detections],
        MatchedInclusionHints=result.matched_hints,
        ImageWidth=result.width,
        ImageHeight=result.height,
        Code=None,
        Message=None,
    )


def _retry_after_outage(
    msg: CropTaskMessage,
    deps: CropDeps,
    policy: RunPolicy,
    attempt: int,
    error: StorageUnavailable,
    retries_done: int,
    outage_since: float | None,
) -> Outcome:
    """Try again later while the outage is shorter than the window; fail with ServiceUnavailable after it."""
    now = deps.clock()
    since = min(outage_since or now, now)  # a clock from the future would stretch the window without end
    waited = now - since
    remaining = policy.storage_outage_seconds - waited
    if remaining <= 0:
        log.warning("job_storage_outage_final", error=str(error), waited=round(waited, 1))
        fail(
            deps,
            msg.RequestId,
            attempt,
            "ServiceUnavailable",
            f"The image store stayed unavailable for {waited:.0f} s: {error}",
        )
        return None
    countdown = outage_countdown(retries_done, remaining, deps.rng)
    log.warning("job_storage_unavailable_retry", error=str(error), countdown=round(countdown, 2))
    return RetryLater(countdown, since, error)

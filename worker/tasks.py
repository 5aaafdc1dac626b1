"""The crop task: claim -> fetch -> crop -> render -> store -> notify. Thin on purpose; the work is elsewhere.

Reliability (see celery_app.py for the Celery side, leases.py for the broker side):
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
from functools import lru_cache
from typing import Any

import redis
import structlog
from celery import Task
from celery.exceptions import Reject, SoftTimeLimitExceeded
from celery.utils.time import get_exponential_backoff_interval

# Imported for their signal handlers: the worker's heartbeat, the leases of the messages it holds, and
# the sweeper that sends orphaned jobs again.
from worker import batches, health, keys, leases, orphans  # noqa: F401
from worker.celery_app import CROP_TASK, app
from worker.contracts import (
    Cropping,
    CropTaskMessage,
    Detection,
    Job,
    JobStatus,
    RenderedOutput,
    RenderSpec,
    utcnow_iso,
)
from worker.engine.config import EngineConfig
from worker.engine.errors import CropError
from worker.engine.types import CropResult, Rect
from worker.http_source import fetch_source
from worker.jobstore import JobNotFound, JobStore, connect
from worker.render_targets import TargetError, parse_target, stem_of
from worker.settings import Settings, engine_config, get_settings
from worker.stats import record_job
from worker.storage import S3Storage, StorageError, StorageUnavailable
from worker.webhooks.tasks import enqueue_callback

log = structlog.get_logger("cropq.worker")

REDIS_DOWN = (redis.ConnectionError, redis.TimeoutError)
OUTAGE_BACKOFF_CAP_SECONDS = 15.0
"""Longest wait between two tries against an unavailable store: storage that is back is noticed this fast."""

_rng = random.SystemRandom()


@lru_cache(maxsize=1)
def _store() -> JobStore:
    s = get_settings()
    return JobStore(connect(s.redis_url), s.result_ttl_seconds)


@lru_cache(maxsize=1)
def _storage() -> S3Storage:
    return S3Storage(get_settings())


@lru_cache(maxsize=1)
def _engine_config() -> EngineConfig:
    return engine_config(get_settings())


def _fetch_source(msg: CropTaskMessage, settings: Settings) -> bytes:
    """The image: from its bucket, or fetched from its http(s) URL under the source policy."""
    if msg.SourceURL is not None:
        return fetch_source(msg.SourceURL, settings, settings.max_image_bytes)
    return _storage().get(msg.Bucket, msg.Key, settings.max_image_bytes)


def _render(data: bytes, msg: CropTaskMessage, spec: RenderSpec, croppings: list[Cropping]) -> list[Cropping]:
    """Encode every crop and write it to its target. Keys depend only on the job, so a rerun overwrites
    the same objects (and a stale run, fenced later, writes the same bytes)."""
    from worker.engine.render import RenderOptions, render_crops  # heavy import only inside workers

    options = RenderOptions(
        format=spec.Format,
        quality=spec.Quality,
        max_width=spec.MaxWidth,
        max_height=spec.MaxHeight,
        keep_metadata=spec.KeepMetadata,
    )
    rects = [Rect(c.Boundary.Left, c.Boundary.Top, c.Boundary.Width, c.Boundary.Height) for c in croppings]
    images = render_crops(data, rects, options, _engine_config())
    target = parse_target(spec.TargetURI)
    stem = stem_of(msg.SourceURL or msg.Key)
    out = []
    for cropping, image in zip(croppings, images, strict=True):
        key = target.expand(msg.RequestId, stem, cropping.AspectRatio)
        etag = _storage().put(target.bucket, key, image.data, image.media_type)
        output = RenderedOutput(
            URI=f"oss://{target.bucket}/{key}",
            Width=image.width,
            Height=image.height,
            Format=image.format,
            Bytes=len(image.data),
            ETag=etag,
        )
        out.append(cropping.model_copy(update={"Output": output}))
    log.info("job_rendered", outputs=len(out), bytes=sum(len(i.data) for i in images))
    return out


def _run_engine(data: bytes, msg: CropTaskMessage) -> CropResult:
    from worker.engine.pipeline import detect_crops  # heavy import only inside workers

    return detect_crops(data, msg.AspectRatios, msg.InclusionHints, _engine_config())


def outage_countdown(retries: int, remaining: float, rng: random.Random = _rng) -> float:
    """Seconds before the next try against an unavailable store: exponential (1, 2, 4 ... 15 s) with equal
    jitter (half fixed, half random, so workers that failed together spread out), and never past the end of
    the outage window, so the last try happens at its end."""
    step = get_exponential_backoff_interval(
        factor=1, retries=retries, maximum=int(OUTAGE_BACKOFF_CAP_SECONDS), full_jitter=False
    )
    delay = step / 2 + rng.uniform(0, step / 2)
    return max(0.5, min(delay, remaining))


class StaleRun(Exception):
    """A newer run of the job has started: this one must store nothing."""


def _fence(job: Job, attempt: int) -> None:
    """Raise StaleRun when a newer run of the job has started than run ``attempt``."""
    if (job.Attempts or 0) > attempt:
        raise StaleRun(job.Attempts)


def _send_callback_once(store: JobStore, job: Job) -> None:
    if job.CallbackURL and not store.callback_queued(job.RequestId):
        enqueue_callback(job.RequestId)
        store.mark_callback_queued(job.RequestId)


def _finish(store: JobStore, rid: str, attempt: int, crop_seconds: float | None = None, **fields: Any) -> Job:
    ended_now = False

    def change(job: Job) -> Job | None:
        nonlocal ended_now
        _fence(job, attempt)
        ended_now = not job.Status.finished
        if not ended_now:
            return None  # a rerun after the end changes nothing (at-least-once delivery)
        return job.model_copy(update={**fields, "FinishedAt": utcnow_iso()})

    job = store.update(rid, change)
    if ended_now:
        store.r.zrem(keys.open_jobs(get_settings().queue_name), rid)  # a leftover is the sweeper's to drop
        record_job(store.r, job.Status.value, crop_seconds)
        log.info("job_finished", status=job.Status.value, code=job.Code)
        _send_callback_once(store, job)
        if job.BatchId:
            batches.job_ended(store.r, job)  # counted once into its batch, which is fed on
    return job


def _fail(store: JobStore, rid: str, attempt: int, code: str, message: str) -> Job:
    return _finish(store, rid, attempt, Status=JobStatus.FAILED, Code=code, Message=message, Croppings=None)


def fail_lost_job(store: JobStore, job: Job, reason: str) -> None:
    """End a job whose message keeps vanishing (the orphan sweeper's last resort), callback included."""
    _fail(store, job.RequestId, job.Attempts or 0, "InternalError", reason)


# No retry count: storage outages are bounded by their time window (Celery reads None as "no limit" only
# here; a None passed to retry() would mean "the task's default", 3).
@app.task(name=CROP_TASK, bind=True, max_retries=None)
def crop(self: Task[Any, Any], message: dict[str, Any], outage_since: float | None = None) -> None:
    msg = CropTaskMessage.model_validate(message)
    rid = msg.RequestId
    structlog.contextvars.clear_contextvars()
    structlog.contextvars.bind_contextvars(
        request_id=rid, task_id=self.request.id, retry=int(self.request.retries or 0)
    )
    store = _store()
    try:
        _run(self, msg, store, get_settings(), outage_since)
    except StaleRun as e:
        log.warning("stale_run_discarded", newest_attempt=e.args[0])
    except JobNotFound:
        log.info("job_withdrawn")  # the API took the job back (not made durable in time): nothing to do
    except REDIS_DOWN as e:
        # Redis stayed away through the client's retries: nothing can be stored, so nothing is decided.
        # The message goes back on its queue (or, should that fail too, stays unacknowledged for the lease
        # keeper to put back once Redis answers).
        log.warning("job_store_unavailable_requeued", error=str(e))
        raise Reject(e, requeue=True) from e
    finally:
        with contextlib.suppress(*REDIS_DOWN):
            store.end_run(rid)  # not reached when the process dies: that is what makes a death a death


def _run(
    task: Task[Any, Any],
    msg: CropTaskMessage,
    store: JobStore,
    settings: Settings,
    outage_since: float | None,
) -> None:
    rid = msg.RequestId
    attempt, ended = store.start_run(rid)
    structlog.contextvars.bind_contextvars(attempt=attempt)
    try:
        job = store.get(rid)
    except JobNotFound:
        log.warning("job_record_missing")  # expired or deleted: nothing to report to
        return
    if job.Status.finished:
        log.info("job_already_finished")
        _send_callback_once(store, job)  # the run that finished it may have died before sending it
        return
    _fence(job, attempt)  # a stale redelivery decides nothing, not even a give-up
    deaths = attempt - 1 - ended
    if deaths >= settings.max_attempts:
        _fail(
            store,
            rid,
            attempt,
            "InternalError",
            f"The job stopped its worker {deaths} times; it was given up.",
        )
        return

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
        return
    log.info("job_started", bucket=msg.Bucket, url=msg.SourceURL is not None)
    try:
        data = _fetch_source(msg, settings)
        t0 = time.perf_counter()
        result = _run_engine(data, msg)
        croppings = [Cropping.from_suggestion(s) for s in result.croppings]
        if msg.Render is not None:
            croppings = _render(data, msg, msg.Render, croppings)
        _finish(
            store,
            rid,
            attempt,
            crop_seconds=time.perf_counter() - t0,
            Status=JobStatus.SUCCEEDED,
            Croppings=croppings,
            Detections=[Detection.from_detected(d) for d in result.detections],
            MatchedInclusionHints=result.matched_hints,
            ImageWidth=result.width,
            ImageHeight=result.height,
            Code=None,
            Message=None,
        )
    except StorageUnavailable as e:
        _retry_after_outage(task, msg, store, settings, attempt, e, outage_since)
    except (StorageError, CropError) as e:  # the source or the image itself: final
        _fail(store, rid, attempt, e.code, str(e))
    except TargetError as e:
        _fail(store, rid, attempt, "InvalidArgument", str(e))
    except SoftTimeLimitExceeded:
        _fail(
            store, rid, attempt, "Timeout", f"Processing took longer than {settings.task_soft_time_limit} s."
        )
    except (StaleRun, *REDIS_DOWN, Reject):
        raise
    except Exception as e:  # anything unexpected must still end the job, not leave it Running
        log.exception("job_crashed")
        _fail(store, rid, attempt, "InternalError", f"Unexpected error: {type(e).__name__}")


def _retry_after_outage(
    task: Task[Any, Any],
    msg: CropTaskMessage,
    store: JobStore,
    settings: Settings,
    attempt: int,
    error: StorageUnavailable,
    outage_since: float | None,
) -> None:
    """Try again later while the outage is shorter than the window; fail with ServiceUnavailable after it."""
    now = time.time()
    since = min(outage_since or now, now)  # a clock from the future would stretch the window without end
    waited = now - since
    remaining = settings.storage_outage_seconds - waited
    if remaining <= 0:
        log.warning("job_storage_outage_final", error=str(error), waited=round(waited, 1))
        _fail(
            store,
            msg.RequestId,
            attempt,
            "ServiceUnavailable",
            f"The image store stayed unavailable for {waited:.0f} s: {error}",
        )
        return
    countdown = outage_countdown(int(task.request.retries or 0), remaining)
    log.warning("job_storage_unavailable_retry", error=str(error), countdown=round(countdown, 2))
    try:
        raise task.retry(
            exc=error,
            countdown=countdown,
            kwargs={"outage_since": since},
        )
    except Reject as e:
        # Celery could not publish the retry (the broker is down too) and would drop the message: put it
        # back instead; the next run starts the outage clock where this one left it only if it can read it.
        raise Reject(e, requeue=True) from error

"""The crop task: a thin Celery adapter over ``run_crop_job`` (worker/crop_job.py), where every decision is.

This module wires the real collaborators in (the job store, the image store and http(s) fetcher, the engine,
the renderer, the callback queue, the counters) and turns the run's outcome into Celery's terms: a retry after
a countdown (the outage clock carried in the message) or the message put back on its queue.
Celery's side of reliability is in celery_config.py, the broker's side in leases.py.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

import structlog
from celery import Task
from celery.exceptions import Reject
from celery.signals import worker_ready

# Imported for their signal handlers: the worker's heartbeat, the leases of the messages it holds, and
# the sweeper that sends orphaned jobs again.
from worker import batches, crop_job, health, keys, leases, orphans, tracing  # noqa: F401
from worker.celery_app import app
from worker.contracts import CROP_TASK, Cropping, CropTaskMessage, Job, RenderedOutput, RenderSpec
from worker.crop_job import (
    OUTAGE_BACKOFF_CAP_SECONDS,
    CropDeps,
    Outcome,
    Requeue,
    RetryLater,
    RunPolicy,
    StaleRun,
    fail,
    outage_countdown,
    run_crop_job,
)
from worker.engine.config import EngineConfig
from worker.engine.types import CropResult, Rect
from worker.http_source import fetch_source
from worker.jobstore import JobStore, connect
from worker.render_targets import parse_target, stem_of
from worker.settings import Settings, engine_config, get_settings
from worker.stats import record_job
from worker.storage import S3Storage
from worker.webhooks.enqueue import enqueue_callback

log = structlog.get_logger("cropq.worker")

__all__ = ["OUTAGE_BACKOFF_CAP_SECONDS", "StaleRun", "crop", "fail_lost_job", "outage_countdown"]


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


def _deps(store: JobStore, settings: Settings) -> CropDeps:
    """The real collaborators. Looked up at call time, so tests may replace a module attribute."""

    def job_ended(job: Job, crop_seconds: float | None) -> None:
        store.r.zrem(keys.open_jobs(settings.queue_name), job.RequestId)  # a leftover is the sweeper's
        record_job(store.r, job.Status.value, crop_seconds)

    return CropDeps(
        store=store,
        fetch=lambda msg: _fetch_source(msg, settings),
        engine=lambda data, msg: _run_engine(data, msg),
        render=lambda data, msg, spec, croppings: _render(data, msg, spec, croppings),
        send_callback=lambda rid: enqueue_callback(rid),
        job_ended=job_ended,
        batch_job_ended=lambda job: batches.job_ended(store.r, job),  # counted once, then fed on
        tracer=tracing.worker_tracer(),
    )


def fail_lost_job(store: JobStore, job: Job, reason: str) -> None:
    """End a job whose message keeps vanishing (the orphan sweeper's last resort), callback included."""
    fail(_deps(store, get_settings()), job.RequestId, job.Attempts or 0, "InternalError", reason)


@worker_ready.connect
def _start_orphan_sweeper(sender: Any = None, **_: Any) -> None:
    orphans.start(sender, fail_lost_job)


# No retry count: storage outages are bounded by their time window (Celery reads None as "no limit" only
# here; a None passed to retry() would mean "the task's default", 3).
@app.task(name=CROP_TASK, bind=True, max_retries=None)
def crop(self: Task[Any, Any], message: dict[str, Any], outage_since: float | None = None) -> None:
    msg = CropTaskMessage.model_validate(message)
    structlog.contextvars.clear_contextvars()
    structlog.contextvars.bind_contextvars(
        request_id=msg.RequestId, task_id=self.request.id, retry=int(self.request.retries or 0)
    )
    trace_id = tracing.current_trace_id()  # the Celery run span's, continuing the API's trace
    if trace_id is not None:
        structlog.contextvars.bind_contextvars(trace_id=trace_id)
    s = get_settings()
    outcome = run_crop_job(
        msg,
        _deps(_store(), s),
        RunPolicy.from_settings(s),
        retries_done=int(self.request.retries or 0),
        outage_since=outage_since,
    )
    _apply(self, outcome)


def _apply(task: Task[Any, Any], outcome: Outcome) -> None:
    """Celery's side of a run's outcome."""
    if isinstance(outcome, Requeue):
        # Back on its queue (or, should that fail too, left unacknowledged for the lease keeper to put back
        # once Redis answers).
        raise Reject(outcome.error, requeue=True) from outcome.error
    if isinstance(outcome, RetryLater):
        try:
            raise task.retry(
                exc=outcome.error, countdown=outcome.countdown, kwargs={"outage_since": outcome.since}
            )
        except Reject as e:
            # Celery could not publish the retry (the broker is down too) and would drop the message: put
            # it back instead; the next run starts the outage clock where this one left it only if it can
            # read it.
            raise Reject(e, requeue=True) from outcome.error

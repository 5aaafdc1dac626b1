"""The crop task: claim -> fetch -> crop -> store -> notify. Thin on purpose; the work is elsewhere.

Reliability (see celery_app.py for the Celery side):
- the attempt counter is bumped before any work, so a job whose run kills the worker process is retried
  by another worker and, after ``max_attempts`` such deaths, ends ``Failed`` instead of looping;
- results are written to the job record only (deterministic key), so a rerun overwrites, never duplicates;
- transient storage/Redis errors are retried by Celery with exponential backoff and full jitter; the last
  failure still ends the job ``Failed`` with ``ServiceUnavailable``, so no accepted job is left hanging;
- the callback is enqueued only after the terminal state is stored.
"""

from __future__ import annotations

import time
from functools import lru_cache
from typing import Any

import redis
import structlog
from celery import Task
from celery.exceptions import SoftTimeLimitExceeded
from celery.utils.time import get_exponential_backoff_interval

from worker import health  # noqa: F401  (registers the worker's signal handlers)
from worker.celery_app import CROP_TASK, app
from worker.contracts import Cropping, CropTaskMessage, Job, JobStatus, utcnow_iso
from worker.engine.config import EngineConfig
from worker.engine.errors import CropError
from worker.engine.types import CropResult
from worker.jobstore import JobNotFound, JobStore, connect
from worker.settings import engine_config, get_settings
from worker.stats import record_job
from worker.storage import ObjectNotFound, ObjectTooLarge, S3Storage, StorageUnavailable
from worker.webhooks.tasks import enqueue_callback

log = structlog.get_logger("cropq.worker")

TRANSIENT = (StorageUnavailable, redis.ConnectionError, redis.TimeoutError)


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


def _run_engine(data: bytes, msg: CropTaskMessage) -> CropResult:
    from worker.engine.pipeline import detect_crops  # heavy import only inside workers

    return detect_crops(data, msg.AspectRatios, msg.InclusionHints, _engine_config())


def _finish(store: JobStore, rid: str, crop_seconds: float | None = None, **fields: Any) -> Job:
    ended_now = False

    def change(job: Job) -> Job | None:
        nonlocal ended_now
        ended_now = not job.Status.finished
        if not ended_now:
            return None  # a rerun after the end changes nothing (at-least-once delivery)
        return job.model_copy(update={**fields, "FinishedAt": utcnow_iso()})

    job = store.update(rid, change)
    if ended_now:
        record_job(store.r, job.Status.value, crop_seconds)
    log.info("job_finished", status=job.Status.value, code=job.Code)
    if job.CallbackURL:
        enqueue_callback(rid)
    return job


def _fail(store: JobStore, rid: str, code: str, message: str) -> Job:
    return _finish(store, rid, Status=JobStatus.FAILED, Code=code, Message=message, Croppings=None)


@app.task(name=CROP_TASK, bind=True)
def crop(self: Task[Any, Any], message: dict[str, Any]) -> None:
    msg = CropTaskMessage.model_validate(message)
    rid = msg.RequestId
    retries = int(self.request.retries or 0)
    structlog.contextvars.clear_contextvars()
    structlog.contextvars.bind_contextvars(request_id=rid, task_id=self.request.id, retry=retries)
    settings = get_settings()
    store = _store()
    try:
        starts = store.bump_attempts(rid)
        structlog.contextvars.bind_contextvars(attempt=starts)
        try:
            job = store.get(rid)
        except JobNotFound:
            log.warning("job_record_missing")  # expired or deleted: nothing to report to
            return
        if job.Status.finished:
            log.info("job_already_finished")
            return
        # Every start beyond the planned ones (first run + Celery retries) is a run that died.
        if starts > retries + settings.max_attempts:
            _fail(
                store,
                rid,
                "InternalError",
                f"The job stopped its worker {starts - retries - 1} times; it was given up.",
            )
            return

        def running(j: Job) -> Job:
            return j.model_copy(
                update={
                    "Status": JobStatus.RUNNING,
                    "Attempts": starts,
                    "StartedAt": j.StartedAt or utcnow_iso(),
                }
            )

        store.update(rid, running)
        log.info("job_started", bucket=msg.Bucket)
        data = _storage().get(msg.Bucket, msg.Key, settings.max_image_bytes)
        t0 = time.perf_counter()
        result = _run_engine(data, msg)
        _finish(
            store,
            rid,
            crop_seconds=time.perf_counter() - t0,
            Status=JobStatus.SUCCEEDED,
            Croppings=[Cropping.from_suggestion(s) for s in result.croppings],
            MatchedInclusionHints=result.matched_hints,
            ImageWidth=result.width,
            ImageHeight=result.height,
            Code=None,
            Message=None,
        )
    except (ObjectNotFound, ObjectTooLarge) as e:
        _fail(store, rid, e.code, str(e))
    except CropError as e:
        _fail(store, rid, e.code, str(e))
    except SoftTimeLimitExceeded:
        _fail(store, rid, "Timeout", f"Processing took longer than {settings.task_soft_time_limit} s.")
    except TRANSIENT as e:
        if retries >= settings.storage_retries:
            log.warning("job_transient_error_final", error=str(e))
            try:
                _fail(store, rid, "ServiceUnavailable", f"Storage or Redis kept failing: {e}")
            except TRANSIENT:
                raise self.retry(exc=e, countdown=60, max_retries=retries + 1) from e  # Redis itself is down
            return
        countdown = get_exponential_backoff_interval(factor=2, retries=retries, maximum=60, full_jitter=True)
        log.warning("job_transient_error_retry", error=str(e), countdown=countdown)
        raise self.retry(exc=e, countdown=countdown, max_retries=settings.storage_retries) from e
    except Exception as e:  # anything unexpected must still end the job, not leave it Running
        log.exception("job_crashed")
        _fail(store, rid, "InternalError", f"Unexpected error: {type(e).__name__}")

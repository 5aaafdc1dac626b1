"""Ending a job from outside its run: cancel (an unfinished job) and delete (a finished one's record).

Synchronous, because both the API (in its thread pool) and worker tasks (a cancelled batch cancels its
queued jobs) use them. The states and who moves a job between them are in docs/job-states.md.

A cancel is one WATCH/MULTI state change, like every other (``JobStore.update``): whichever of the cancel
and the job's own run stores a finished state first wins, and the other stores nothing. So a queued job's
message, when a worker meets it, finds the job finished and does nothing, and a running job's result is
discarded by its ``_finish``; only the rendered outputs it may already have written stay in storage.
"""

from __future__ import annotations

from collections.abc import Callable

import redis
import structlog

from worker import keys
from worker.batches import job_ended
from worker.contracts import Job, JobStatus, utcnow_iso
from worker.job_index import unindex_job
from worker.jobstore import JobNotFound, JobStore
from worker.settings import get_settings
from worker.stats import record_job
from worker.webhooks.enqueue import enqueue_callback

log = structlog.get_logger("cropq.lifecycle")

CANCELLED_CODE = "Cancelled"
INVALID_STATE = "InvalidState"
"""The error code of a cancel of a finished job, or a delete of an unfinished one (HTTP 409)."""
DEFAULT_REASON = "Cancelled by the client."


class JobAlreadyFinished(Exception):
    """The job ended before the cancel: it stays as it ended."""

    def __init__(self, job: Job) -> None:
        super().__init__(f"The job is already {job.Status.value}.")
        self.job = job


class JobNotFinished(Exception):
    """Only a finished job's record may be deleted (an unfinished one still has a run to report to it)."""

    def __init__(self, job: Job) -> None:
        super().__init__(f"The job is still {job.Status.value}.")
        self.job = job


def cancel_job(
    r: redis.Redis,
    request_id: str,
    queue_name: str,
    reason: str = DEFAULT_REASON,
    *,
    project: str | None = None,
    ttl_seconds: int | None = None,
    send_callback: Callable[[str], None] | None = None,
) -> Job:
    """Atomically move an unfinished job to Cancelled (FinishedAt, Code "Cancelled", Message ``reason``),
    take it out of ``keys.open_jobs(queue_name)``, wake its long-polls, send its callback once and count it
    into its batch. ``project``, when given, must own the job (else JobNotFound, as for a missing one).
    Raises JobNotFound, or JobAlreadyFinished for a finished job."""
    ttl = ttl_seconds or get_settings().result_ttl_seconds

    def cancelled(job: Job) -> Job:
        if project is not None and job.ProjectName != project:
            raise JobNotFound(request_id)
        if job.Status.finished:
            raise JobAlreadyFinished(job)
        return job.model_copy(
            update={
                "Status": JobStatus.CANCELLED,
                "FinishedAt": utcnow_iso(),
                "Code": CANCELLED_CODE,
                "Message": reason,
                "Croppings": None,
            }
        )

    # JobStore.update publishes the done channel and moves the status indexes in the same MULTI.
    job = JobStore(r, ttl).update(request_id, cancelled)
    # Leases renew open_jobs entries with ZADD XX: once removed, a still-running job never comes back.
    r.zrem(keys.open_jobs(queue_name), request_id)
    record_job(r, job.Status.value)
    log.info("job_cancelled", request_id=request_id, project=job.ProjectName)
    _send_callback_once(r, job, ttl, send_callback or enqueue_callback)
    _count_into_batch(r, job)
    return job


def _send_callback_once(r: redis.Redis, job: Job, ttl: int, send: Callable[[str], None]) -> None:
    """The marker is claimed before the send (SET NX), so a crop run that meets the cancelled job at the
    same moment (its ``_send_callback_once``) finds it and sends no second callback."""
    if not job.CallbackURL:
        return
    marker = keys.job_callback_queued(job.RequestId)
    if not r.set(marker, 1, nx=True, ex=ttl):
        return
    try:
        send(job.RequestId)
    except Exception as e:  # broker down: the job stays Cancelled; its queued message, when run, sends it
        r.delete(marker)
        log.warning("cancel_callback_not_sent", request_id=job.RequestId, error=type(e).__name__)


def _count_into_batch(r: redis.Redis, job: Job) -> None:
    """A batch's counts include its cancelled jobs (worker.batches, the prefix batches' module)."""
    if not job.BatchId:
        return
    job_ended(r, job)


def delete_job(r: redis.Redis, request_id: str, queue_name: str, *, project: str | None = None) -> Job:
    """Remove a finished job's record, its side keys and its index entries, atomically with the check that
    it is finished. Returns the job as it was. Raises JobNotFound (also for another ``project``'s job) or
    JobNotFinished."""
    key = keys.job(request_id)
    with r.pipeline() as pipe:
        while True:
            try:
                pipe.watch(key)  # type: ignore[no-untyped-call]
                raw = pipe.get(key)
                if raw is None:
                    raise JobNotFound(request_id)
                job = Job.model_validate_json(raw)
                if project is not None and job.ProjectName != project:
                    raise JobNotFound(request_id)
                if not job.Status.finished:
                    raise JobNotFinished(job)
                pipe.multi()
                pipe.delete(
                    key,
                    keys.job_attempts(request_id),
                    keys.job_ended_runs(request_id),
                    keys.job_callback_queued(request_id),
                    keys.job_resent(request_id),
                )
                unindex_job(pipe, job)
                pipe.zrem(keys.open_jobs(queue_name), request_id)  # normally gone already; never left behind
                pipe.execute()
                log.info("job_deleted", request_id=request_id, project=job.ProjectName)
                return job
            except redis.WatchError:
                continue

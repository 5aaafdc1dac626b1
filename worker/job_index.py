"""The job listing's indexes: which RequestIds a project (and a batch) holds, by creation time and by status.

Every index is a sorted set of RequestIds scored by the job's creation time in ms:

- ``keys.project_jobs(p)``: every job of project ``p``; ``status_jobs(p, s)``: those in status ``s``;
- ``keys.batch_jobs(b)``: every job of batch ``b``; ``batch_status_jobs(b, s)``: those in status ``s``.

Per-status sets make ``?Status=Failed`` read only Failed jobs, however many others a project has. They are
written in the same MULTI as the record (``submit_job``, ``JobStore.update``), so a job is in exactly the
set of its status. Each write renews the sets' expiry to the record TTL: an index outlives every record it
names and dies when the project falls idle. An entry can still outlive its record (the record expired or
was deleted by a crash between two writes): readers skip it and prune it.

Functions here only queue commands, so they serve a sync or an async pipeline alike.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from worker import keys
from worker.contracts import Job, JobStatus


def status_jobs(project: str, status: JobStatus) -> str:
    """A project's jobs in one status (project names hold no ':', so this never meets another key)."""
    return f"{keys.project_jobs(project)}:{status.value}"


def batch_status_jobs(batch_id: str, status: JobStatus) -> str:
    return f"{keys.batch_jobs(batch_id)}:{status.value}"


def listing_key(project: str, status: JobStatus | None = None, batch_id: str | None = None) -> str:
    """The one index a listing with these filters reads."""
    if batch_id is not None:
        return keys.batch_jobs(batch_id) if status is None else batch_status_jobs(batch_id, status)
    return keys.project_jobs(project) if status is None else status_jobs(project, status)


def creation_ms(job: Job) -> int:
    """The index score: CreatedAt (ISO 8601, ms, ``Z``) in ms since the epoch."""
    return int(datetime.fromisoformat(job.CreatedAt).timestamp() * 1000)


def _all_keys(job: Job) -> list[str]:
    found = [keys.project_jobs(job.ProjectName)]
    if job.BatchId:
        found.append(keys.batch_jobs(job.BatchId))
    return found


def _status_keys(job: Job, status: JobStatus) -> list[str]:
    found = [status_jobs(job.ProjectName, status)]
    if job.BatchId:
        found.append(batch_status_jobs(job.BatchId, status))
    return found


def index_new_job(pipe: Any, job: Job, ttl_seconds: int) -> None:
    """Queue the index writes of a job just recorded (on the pipeline that records it)."""
    score = creation_ms(job)
    for key in (*_all_keys(job), *_status_keys(job, job.Status)):
        pipe.zadd(key, {job.RequestId: score})
        pipe.expire(key, ttl_seconds)


def index_status_change(pipe: Any, job: Job, old: JobStatus, ttl_seconds: int) -> None:
    """Queue the index writes of a record update: move the job between status sets when its status
    changed, and renew the expiry of its sets (the record's TTL was just renewed too)."""
    if job.Status is not old:
        for key in _status_keys(job, old):
            pipe.zrem(key, job.RequestId)
        score = creation_ms(job)
        for key in _status_keys(job, job.Status):
            pipe.zadd(key, {job.RequestId: score})
    for key in (*_all_keys(job), *_status_keys(job, job.Status)):
        pipe.expire(key, ttl_seconds)


def unindex_ids(pipe: Any, project: str, request_id: str, batch_id: str | None = None) -> None:
    """Queue the removal of a job from every index it can be in, whatever status it was listed under."""
    pipe.zrem(keys.project_jobs(project), request_id)
    for status in JobStatus:
        pipe.zrem(status_jobs(project, status), request_id)
    if batch_id:
        pipe.zrem(keys.batch_jobs(batch_id), request_id)
        for status in JobStatus:
            pipe.zrem(batch_status_jobs(batch_id, status), request_id)


def unindex_job(pipe: Any, job: Job) -> None:
    unindex_ids(pipe, job.ProjectName, job.RequestId, job.BatchId)

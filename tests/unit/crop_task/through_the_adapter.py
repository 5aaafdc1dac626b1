"""Drive a crop run the way the Celery task does (``worker.tasks._apply`` over ``worker.crop_job``), with
the real collaborators of ``worker.tasks._deps`` on a test Redis: for the tests that check the bookkeeping
in Redis rather than with fakes."""

from __future__ import annotations

from typing import Any

from worker import crop_job, tasks
from worker.contracts import CropTaskMessage, Job
from worker.crop_job import RunPolicy
from worker.jobstore import JobStore
from worker.settings import Settings, get_settings
from worker.storage import StorageUnavailable


def _retries(task: Any) -> int:
    return int(task.request.retries or 0) if task is not None else 0


def run(task: Any, msg: CropTaskMessage, store: JobStore, settings: Settings, since: float | None) -> None:
    outcome = crop_job._run(
        msg, tasks._deps(store, settings), RunPolicy.from_settings(settings), _retries(task), since
    )
    tasks._apply(task, outcome)


def retry_after_outage(
    task: Any,
    msg: CropTaskMessage,
    store: JobStore,
    settings: Settings,
    error: StorageUnavailable,
    since: float,
) -> None:
    """A storage outage met by the run of attempt 1."""
    deps, policy = tasks._deps(store, settings), RunPolicy.from_settings(settings)
    tasks._apply(task, crop_job._retry_after_outage(msg, deps, policy, 1, error, _retries(task), since))


def finish(store: JobStore, rid: str, attempt: int, **fields: Any) -> Job:
    return crop_job.finish(tasks._deps(store, get_settings()), rid, attempt, None, **fields)

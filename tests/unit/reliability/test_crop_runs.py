"""The crop task's run bookkeeping against a real Redis: fencing by attempt, deaths, callbacks sent once,
and the storage outage window. The engine and the image store are replaced; the job store is real."""

from __future__ import annotations

import random
import time
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import pytest
import redis
from celery.exceptions import Reject, Retry

from tests.unit.crop_task.fakes import make_job
from tests.unit.crop_task.through_the_adapter import finish, retry_after_outage, run
from worker import tasks
from worker.contracts import CropTaskMessage, JobStatus, utcnow_iso
from worker.engine.types import CropResult
from worker.jobstore import JobStore
from worker.settings import Settings
from worker.storage import StorageUnavailable

RID = "5D3B7A4E-0000-4000-8000-000000000001"


@pytest.fixture
def store(redis_client: redis.Redis) -> JobStore:
    return JobStore(redis_client, 3600)


@pytest.fixture
def callbacks(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    sent: list[str] = []
    monkeypatch.setattr(tasks, "enqueue_callback", sent.append)
    yield sent


def _record(store: JobStore, **fields: Any) -> None:
    job = make_job(**{"RequestId": RID, "CreatedAt": utcnow_iso(), **fields})
    store.r.set(f"cropq:job:{RID}", job.model_dump_json(exclude_none=True))


class FakeTask:
    def __init__(self, retries: int = 0) -> None:
        self.request = SimpleNamespace(retries=retries)
        self.retries_asked: list[dict[str, Any]] = []

    def retry(self, **options: Any) -> Retry:
        self.retries_asked.append(options)
        raise Retry("retry", options.get("exc"), when=options.get("countdown"))


MSG = CropTaskMessage(RequestId=RID, ProjectName="p", Bucket="b", Key="k.jpg", AspectRatios=["1:1"])


def _engine_ok(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tasks, "_storage", lambda: SimpleNamespace(get=lambda *a: b"image"))
    monkeypatch.setattr(
        tasks,
        "_run_engine",
        lambda data, msg: CropResult(croppings=[], width=10, height=10, matched_hints=[]),
    )


def test_a_run_older_than_the_newest_stores_nothing_and_sends_nothing(
    store: JobStore, callbacks: list[str]
) -> None:
    _record(store, Status=JobStatus.RUNNING, Attempts=2)
    before = store.r.get(f"cropq:job:{RID}")
    with pytest.raises(tasks.StaleRun):
        finish(store, RID, 1, Status=JobStatus.SUCCEEDED)
    assert store.r.get(f"cropq:job:{RID}") == before
    assert callbacks == []
    # The newest run stores its result and sends the one callback.
    finish(store, RID, 2, Status=JobStatus.SUCCEEDED)
    assert store.get(RID).Status is JobStatus.SUCCEEDED and callbacks == [RID]


def test_a_stale_redelivery_does_not_take_the_job_back(
    store: JobStore, callbacks: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    _engine_ok(monkeypatch)
    _record(store, Status=JobStatus.RUNNING, Attempts=5)  # run 5 is under way elsewhere
    with pytest.raises(tasks.StaleRun):
        run(FakeTask(), MSG, store, Settings(), None)  # this run counts as attempt 1
    assert store.get(RID).Attempts == 5 and store.get(RID).Status is JobStatus.RUNNING


def test_runs_that_died_are_counted_and_the_job_is_given_up(
    store: JobStore, callbacks: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    _engine_ok(monkeypatch)
    _record(store)
    settings = Settings(max_attempts=2)
    store.start_run(RID)  # two runs that died: started, never ended
    store.start_run(RID)
    run(FakeTask(), MSG, store, settings, None)
    job = store.get(RID)
    assert job.Status is JobStatus.FAILED and job.Code == "InternalError"
    assert "2 times" in (job.Message or "")
    assert callbacks == [RID]


def test_runs_that_ended_alive_are_not_deaths(
    store: JobStore, callbacks: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    _engine_ok(monkeypatch)
    _record(store)
    for _ in range(4):  # four runs that were retried or requeued, each ending with its process alive
        store.start_run(RID)
        store.end_run(RID)
    run(FakeTask(), MSG, store, Settings(max_attempts=2), None)
    job = store.get(RID)
    assert job.Status is JobStatus.SUCCEEDED and job.Attempts == 5


def test_a_rerun_of_a_finished_job_sends_a_missing_callback_once(
    store: JobStore, callbacks: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    _engine_ok(monkeypatch)
    _record(store, Status=JobStatus.SUCCEEDED, Attempts=1, FinishedAt=utcnow_iso())
    run(FakeTask(), MSG, store, Settings(), None)  # its finisher died before sending the callback
    run(FakeTask(), MSG, store, Settings(), None)
    assert callbacks == [RID]


def test_storage_outage_is_retried_within_the_window_with_the_clock_kept(
    store: JobStore, callbacks: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    _record(store)
    task = FakeTask(retries=3)
    since = time.time() - 50
    with pytest.raises(Retry):
        retry_after_outage(
            task, MSG, store, Settings(storage_outage_seconds=60), StorageUnavailable("down"), since
        )
    (asked,) = task.retries_asked
    assert asked["kwargs"] == {"outage_since": since}
    assert tasks.crop.max_retries is None  # bounded by the window, not by Celery's default count of 3
    assert 0.5 <= asked["countdown"] <= 10.5  # never past the end of the window
    assert store.get(RID).Status is JobStatus.QUEUED


def test_storage_outage_longer_than_the_window_fails_the_job(store: JobStore, callbacks: list[str]) -> None:
    _record(store)
    retry_after_outage(
        FakeTask(retries=9),
        MSG,
        store,
        Settings(storage_outage_seconds=60),
        StorageUnavailable("S3 unreachable"),
        time.time() - 61,
    )
    job = store.get(RID)
    assert job.Status is JobStatus.FAILED and job.Code == "ServiceUnavailable"
    assert "61 s" in (job.Message or "") and callbacks == [RID]


def test_a_retry_that_cannot_be_published_puts_the_message_back(store: JobStore) -> None:
    _record(store)

    class BrokerDown(FakeTask):
        def retry(self, **options: Any) -> Retry:
            raise Reject("publish failed", requeue=False)  # what Celery raises when it cannot publish

    with pytest.raises(Reject) as caught:
        retry_after_outage(BrokerDown(), MSG, store, Settings(), StorageUnavailable("down"), time.time())
    assert caught.value.requeue is True


@pytest.mark.parametrize("retries", range(12))
def test_outage_backoff_grows_to_its_cap_with_jitter(retries: int) -> None:
    rng = random.Random(retries)
    step = min(2**retries, tasks.OUTAGE_BACKOFF_CAP_SECONDS)
    delays = [tasks.outage_countdown(retries, 1000, rng) for _ in range(50)]
    assert all(max(0.5, step / 2) <= d <= step for d in delays)
    if step >= 2:
        assert len(set(delays)) > 1  # jittered
    assert tasks.outage_countdown(retries, 0.2, rng) == 0.5  # the last try comes at the window's end


def test_an_outage_clock_from_the_future_cannot_stretch_the_window(store: JobStore) -> None:
    # The message is ours, but a worker whose clock ran ahead must not keep a job retrying for ever.
    _record(store)
    task = FakeTask()
    with pytest.raises(Retry):
        retry_after_outage(
            task,
            MSG,
            store,
            Settings(storage_outage_seconds=60),
            StorageUnavailable("down"),
            time.time() + 1e6,
        )
    (asked,) = task.retries_asked
    assert asked["kwargs"]["outage_since"] <= time.time()

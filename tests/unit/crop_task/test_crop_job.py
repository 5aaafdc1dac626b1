"""``run_crop_job`` branch by branch, with fakes: no Redis, no Celery, no engine."""

from __future__ import annotations

import random
from collections.abc import MutableMapping
from typing import Any

import pytest
import redis
from celery.exceptions import SoftTimeLimitExceeded
from structlog.testing import capture_logs

from tests.unit.crop_task.fakes import MSG, RESULT, RID, Calls, FakeStore, make_deps, make_job
from worker.contracts import CropTaskMessage, JobStatus, RenderSpec
from worker.crop_job import (
    OUTAGE_BACKOFF_CAP_SECONDS,
    Requeue,
    RetryLater,
    RunPolicy,
    outage_countdown,
    run_crop_job,
)
from worker.engine.errors import ImageTooLarge, UnsupportedImage
from worker.engine.types import CropResult
from worker.render_targets import TargetError
from worker.storage import ObjectNotFound, StorageUnavailable

POLICY = RunPolicy(max_attempts=3, storage_outage_seconds=60, soft_time_limit=45)
NOW = 1_000_000.0


def _events(logs: list[MutableMapping[str, Any]]) -> list[object]:
    return [e["event"] for e in logs]


def test_a_job_is_claimed_cropped_stored_counted_and_notified() -> None:
    store, calls = FakeStore(make_job()), Calls()
    with capture_logs() as logs:
        outcome = run_crop_job(MSG, make_deps(store, calls), POLICY)
    assert outcome is None
    job = store.job
    assert (job.Status, job.Attempts, job.Code) == (JobStatus.SUCCEEDED, 1, None)
    assert job.StartedAt is not None and job.FinishedAt is not None
    assert job.Croppings is not None and job.Croppings[0].Boundary.Left == 5
    assert job.Croppings[0].Output is None  # no Render asked
    assert job.Detections is not None and job.Detections[0].Type == "face"
    assert (job.ImageWidth, job.ImageHeight) == (40, 30)
    # Running is stored before any work, the end counted once before the callback, the callback once.
    assert [w.Status for w in store.writes] == [JobStatus.RUNNING, JobStatus.SUCCEEDED]
    assert calls.log == ["fetch", "engine", "ended", "callback"]
    assert calls.ended == [(JobStatus.SUCCEEDED, 1.0)]  # engine to stored, on the run's timer
    assert calls.callbacks == [RID] and store.callback_queued(RID)
    assert (store.started, store.ended) == (1, 1)  # an alive run counts its end
    assert _events(logs) == ["job_started", "job_finished"]


def test_render_writes_outputs_into_the_stored_croppings() -> None:
    store, calls = FakeStore(make_job()), Calls()
    msg = MSG.model_copy(update={"Render": RenderSpec(TargetURI="oss://thumbs/{RequestId}.jpg")})
    run_crop_job(msg, make_deps(store, calls), POLICY)
    croppings = store.job.Croppings
    assert croppings is not None and croppings[0].Output is not None
    assert croppings[0].Output.URI == "oss://thumbs/x.jpg"


def test_no_callback_url_means_no_callback() -> None:
    store, calls = FakeStore(make_job(CallbackURL=None)), Calls()
    run_crop_job(MSG, make_deps(store, calls), POLICY)
    assert store.job.Status is JobStatus.SUCCEEDED and calls.callbacks == []


def test_a_batch_job_is_counted_into_its_batch_after_its_callback() -> None:
    store, calls = FakeStore(make_job(BatchId="B1")), Calls()
    run_crop_job(MSG, make_deps(store, calls), POLICY)
    assert calls.log[-2:] == ["callback", "batch:B1"]


@pytest.mark.parametrize(
    ("where", "error", "code", "message"),
    [
        ("fetch", ObjectNotFound("no such object"), "ResourceNotFound", "no such object"),
        ("engine", UnsupportedImage("not an image"), "InvalidArgument.Image", "not an image"),
        ("engine", ImageTooLarge("too many pixels"), "InvalidArgument.ImageTooLarge", "too many pixels"),
        ("render", TargetError("bad template"), "InvalidArgument", "bad template"),
        ("engine", SoftTimeLimitExceeded(), "Timeout", "Processing took longer than 45 s."),
        ("engine", ValueError("boom"), "InternalError", "Unexpected error: ValueError"),
    ],
)
def test_terminal_failures_end_the_job_failed_with_their_code(
    where: str, error: BaseException, code: str, message: str
) -> None:
    store, calls = FakeStore(make_job()), Calls()

    def boom(*_: object) -> object:
        raise error

    msg = MSG.model_copy(update={"Render": RenderSpec(TargetURI="oss://t/{RequestId}.jpg")})
    deps = make_deps(store, calls, **{where: boom})  # type: ignore[arg-type]
    assert run_crop_job(msg, deps, POLICY) is None
    job = store.job
    assert (job.Status, job.Code, job.Message, job.Croppings) == (JobStatus.FAILED, code, message, None)
    assert calls.callbacks == [RID] and calls.ended == [(JobStatus.FAILED, None)]
    assert store.ended == 1


def test_an_unavailable_store_is_retried_with_the_outage_clock_started() -> None:
    store, calls = FakeStore(make_job()), Calls()

    def down(msg: CropTaskMessage) -> bytes:
        raise StorageUnavailable("S3 unreachable")

    outcome = run_crop_job(MSG, make_deps(store, calls, fetch=down, now=NOW), POLICY, retries_done=2)
    assert isinstance(outcome, RetryLater)
    assert outcome.since == NOW and 2.0 <= outcome.countdown <= 4.0  # the third try: 4 s with equal jitter
    assert store.job.Status is JobStatus.RUNNING  # nothing decided, nothing sent
    assert calls.callbacks == [] and store.ended == 1  # a retry is no death


def test_the_outage_clock_is_kept_across_retries_and_the_last_try_is_at_the_window_s_end() -> None:
    store, calls = FakeStore(make_job()), Calls()

    def down(msg: CropTaskMessage) -> bytes:
        raise StorageUnavailable("down")

    deps = make_deps(store, calls, fetch=down, now=NOW)
    outcome = run_crop_job(MSG, deps, POLICY, retries_done=9, outage_since=NOW - 59)
    assert isinstance(outcome, RetryLater)
    assert outcome.since == NOW - 59 and outcome.countdown == 1.0  # never past the window


def test_an_outage_longer_than_the_window_fails_the_job() -> None:
    store, calls = FakeStore(make_job()), Calls()

    def down(msg: CropTaskMessage) -> bytes:
        raise StorageUnavailable("S3 unreachable")

    deps = make_deps(store, calls, fetch=down, now=NOW)
    assert run_crop_job(MSG, deps, POLICY, retries_done=9, outage_since=NOW - 61) is None
    job = store.job
    assert (job.Status, job.Code) == (JobStatus.FAILED, "ServiceUnavailable")
    assert job.Message == "The image store stayed unavailable for 61 s: S3 unreachable"
    assert calls.callbacks == [RID]


def test_an_outage_clock_from_the_future_cannot_stretch_the_window() -> None:
    store, calls = FakeStore(make_job()), Calls()

    def down(msg: CropTaskMessage) -> bytes:
        raise StorageUnavailable("down")

    outcome = run_crop_job(MSG, make_deps(store, calls, fetch=down, now=NOW), POLICY, outage_since=NOW + 1e6)
    assert isinstance(outcome, RetryLater) and outcome.since == NOW


def test_runs_that_died_are_counted_and_the_job_is_given_up() -> None:
    store, calls = FakeStore(make_job(), started=3, ended=1), Calls()  # two of three runs died
    deps = make_deps(store, calls)
    assert run_crop_job(MSG, deps, RunPolicy(2, 60, 45)) is None
    job = store.job
    assert (job.Status, job.Code) == (JobStatus.FAILED, "InternalError")
    assert job.Message == "The job stopped its worker 2 times; it was given up."
    assert "engine" not in calls.log and calls.callbacks == [RID]


def test_runs_that_ended_alive_are_not_deaths() -> None:
    store, calls = FakeStore(make_job(), started=4, ended=4), Calls()  # four retries or requeues
    run_crop_job(MSG, make_deps(store, calls), RunPolicy(2, 60, 45))
    assert (store.job.Status, store.job.Attempts) == (JobStatus.SUCCEEDED, 5)


def test_a_stale_redelivery_stores_nothing_and_sends_nothing() -> None:
    store, calls = FakeStore(make_job(Status=JobStatus.RUNNING, Attempts=5)), Calls()
    with capture_logs() as logs:
        assert run_crop_job(MSG, make_deps(store, calls), POLICY) is None  # this run is attempt 1
    assert store.writes == [] and calls.log == []
    assert _events(logs) == ["stale_run_discarded"] and logs[0]["newest_attempt"] == 5
    assert store.ended == 1


def test_a_run_overtaken_while_it_cropped_discards_its_result() -> None:
    store, calls = FakeStore(make_job()), Calls()

    def slow_engine(data: bytes, msg: CropTaskMessage) -> CropResult:
        # The host lost its network; the job was handed on and run 2 started meanwhile.
        store.jobs[RID] = store.job.model_copy(update={"Attempts": 2})
        return RESULT

    run_crop_job(MSG, make_deps(store, calls, engine=slow_engine), POLICY)
    assert store.job.Status is JobStatus.RUNNING and store.job.Attempts == 2
    assert calls.callbacks == [] and calls.ended == []


def test_a_cancelled_job_never_runs() -> None:
    store, calls = FakeStore(make_job(Status=JobStatus.CANCELLED)), Calls()
    store.queued_callbacks.add(RID)  # the cancel sent its callback
    run_crop_job(MSG, make_deps(store, calls), POLICY)
    assert calls.log == [] and store.writes == []


def test_a_cancel_between_the_read_and_the_claim_still_stops_the_run() -> None:
    queued = make_job()
    store, calls = FakeStore(make_job(Status=JobStatus.CANCELLED)), Calls()
    store.get = lambda request_id: queued  # type: ignore[method-assign]  # the read before the cancel
    run_crop_job(MSG, make_deps(store, calls), POLICY)
    assert calls.log == [] and store.writes == [] and store.job.Status is JobStatus.CANCELLED


def test_a_rerun_of_a_finished_job_sends_a_missing_callback_once() -> None:
    store, calls = FakeStore(make_job(Status=JobStatus.SUCCEEDED, Attempts=1)), Calls()
    deps = make_deps(store, calls)
    run_crop_job(MSG, deps, POLICY)  # its finisher died before sending the callback
    run_crop_job(MSG, deps, POLICY)
    assert calls.callbacks == [RID] and "engine" not in calls.log and store.writes == []


def test_a_withdrawn_or_expired_job_is_left_alone() -> None:
    store, calls = FakeStore(), Calls()
    assert run_crop_job(MSG, make_deps(store, calls), POLICY) is None
    assert calls.log == [] and store.ended == 1


def test_redis_gone_puts_the_message_back_and_decides_nothing() -> None:
    store, calls = FakeStore(make_job()), Calls()

    def redis_down() -> None:
        raise redis.ConnectionError("Connection refused")

    store.before_get = redis_down
    outcome = run_crop_job(MSG, make_deps(store, calls), POLICY)
    assert isinstance(outcome, Requeue) and isinstance(outcome.error, redis.ConnectionError)
    assert store.writes == [] and calls.log == [] and store.ended == 1


@pytest.mark.parametrize("retries", range(12))
def test_outage_backoff_grows_to_its_cap_with_jitter(retries: int) -> None:
    rng = random.Random(retries)
    step = min(2**retries, OUTAGE_BACKOFF_CAP_SECONDS)
    delays = [outage_countdown(retries, 1000, rng) for _ in range(50)]
    assert all(max(0.5, step / 2) <= d <= step for d in delays)
    if step >= 2:
        assert len(set(delays)) > 1  # jittered
    assert outage_countdown(retries, 0.2, rng) == 0.5  # the last try comes at the window's end

from __future__ import annotations

import json
import random
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any
from unittest.mock import patch

import pytest
from celery.exceptions import SoftTimeLimitExceeded
from hypothesis import given
from hypothesis import strategies as st
from pydantic import SecretStr, ValidationError
from structlog.testing import capture_logs

from worker import keys
from worker.celery_app import app
from worker.contracts import CROP_TASK, WEBHOOK_TASK, CallbackState, CallbackStatus, Job, JobStatus
from worker.jobstore import JobNotFound
from worker.projects import Project, grace_end
from worker.sealing import WEBHOOK_SECRETS, SecretBox
from worker.settings import Settings
from worker.webhooks import tasks as tasks_module
from worker.webhooks import webhook_queue
from worker.webhooks.delivery import DeliveryOutcome
from worker.webhooks.signing import new_secret, verify
from worker.webhooks.tasks import load_secrets, process_delivery, retry_delay, send_callback

RID = "8E2A-REQ"
SECRET = new_secret()
SCHEDULE = [5, 30, 60]
URL = "https://hooks.example.com/cropq?token=s3cr3t"
OK = DeliveryOutcome(delivered=True, status_code=200)
ERR500 = DeliveryOutcome(delivered=False, status_code=500, error="HTTP 500")


class FakeStore:
    def __init__(self, *jobs: Job) -> None:
        self.jobs = {j.RequestId: j for j in jobs}

    def get(self, request_id: str) -> Job:
        if request_id not in self.jobs:
            raise JobNotFound(request_id)
        return self.jobs[request_id]

    def update(self, request_id: str, change: Callable[[Job], Job | None]) -> Job:
        new = change(self.get(request_id))
        if new is not None:
            self.jobs[request_id] = new
        return self.jobs[request_id]

    @property
    def callback(self) -> CallbackState | None:
        return self.jobs[RID].Callback


class FakeSender:
    def __init__(self, *outcomes: DeliveryOutcome) -> None:
        self.outcomes = list(outcomes)
        self.calls: list[tuple[str, bytes, dict[str, str]]] = []

    def __call__(self, url: str, body: bytes, headers: dict[str, str]) -> DeliveryOutcome:
        self.calls.append((url, body, headers))
        return self.outcomes.pop(0)


def make_job(**changes: object) -> Job:
    base: dict[str, object] = {
        "RequestId": RID,
        "ProjectName": "demo",
        "Status": JobStatus.SUCCEEDED,
        "SourceURI": "oss://photos/cat.jpg",
        "AspectRatios": ["16:9"],
        "CallbackURL": URL,
        "UserData": "u",
        "CreatedAt": "2026-11-25T16:00:00.000Z",
        "FinishedAt": "2026-11-25T16:00:02.000Z",
    }
    return Job.model_validate(base | changes)


def run(
    store: FakeStore, send: FakeSender, retries_done: int = 0, secret: str | list[str] | None = SECRET
) -> float | None:
    secrets = [secret] if isinstance(secret, str) else secret
    return process_delivery(
        RID,
        store=store,
        secret_for=lambda name: secrets if name == "demo" else None,
        send=send,
        retries_done=retries_done,
        schedule=SCHEDULE,
        rng=random.Random(1),
    )


def test_success_is_signed_recorded_and_ends() -> None:
    store, send = FakeStore(make_job()), FakeSender(OK)
    assert run(store, send) is None
    url, body, headers = send.calls[0]
    assert url == URL
    verify(SECRET, headers, body)  # receivers can check it with the project's secret
    assert headers["webhook-id"] == RID
    event = json.loads(body)
    assert event["type"] == "crop-job.succeeded"
    assert event["timestamp"] == "2026-11-25T16:00:02.000Z"
    assert event["data"]["RequestId"] == RID and event["data"]["UserData"] == "u"
    assert "Callback" not in event["data"]
    cb = store.callback
    assert cb is not None
    assert (cb.Status, cb.Attempts, cb.LastStatusCode, cb.LastError) == (
        CallbackStatus.DELIVERED,
        1,
        200,
        None,
    )
    assert cb.DeliveredAt is not None


def test_failed_job_sends_failed_event() -> None:
    store, send = (
        FakeStore(make_job(Status=JobStatus.FAILED, Code="ResourceNotFound", Message="m")),
        FakeSender(OK),
    )
    run(store, send)
    event = json.loads(send.calls[0][1])
    assert event["type"] == "crop-job.failed" and event["data"]["Code"] == "ResourceNotFound"


def test_failure_retries_on_schedule_then_fails() -> None:
    store = FakeStore(make_job())
    send = FakeSender(*[ERR500] * (len(SCHEDULE) + 1))
    for n, base in enumerate(SCHEDULE):
        countdown = run(store, send, retries_done=n)
        assert countdown is not None and 0.8 * base <= countdown <= 1.2 * base
        cb = store.callback
        assert cb is not None
        assert (cb.Status, cb.Attempts, cb.LastStatusCode, cb.LastError) == (
            CallbackStatus.RETRYING,
            n + 1,
            500,
            "HTTP 500",
        )
    assert run(store, send, retries_done=len(SCHEDULE)) is None
    cb = store.callback
    assert cb is not None and (cb.Status, cb.Attempts) == (CallbackStatus.FAILED, len(SCHEDULE) + 1)
    bodies = {c[1] for c in send.calls}
    ids = {c[2]["webhook-id"] for c in send.calls}
    assert len(bodies) == 1 and ids == {RID}  # the same event on every attempt


def test_success_after_retrying() -> None:
    store, send = FakeStore(make_job()), FakeSender(ERR500, OK)
    assert run(store, send, 0) is not None
    assert run(store, send, 1) is None
    cb = store.callback
    assert cb is not None and (cb.Status, cb.Attempts, cb.LastError) == (CallbackStatus.DELIVERED, 2, None)


@pytest.mark.parametrize(
    "outcome",
    [
        DeliveryOutcome(delivered=False, status_code=410, gone=True, error="HTTP 410 Gone"),
        DeliveryOutcome(delivered=False, refused=True, error="refused: private address"),
    ],
)
def test_gone_or_refused_fails_without_retry(outcome: DeliveryOutcome) -> None:
    store, send = FakeStore(make_job()), FakeSender(outcome)
    assert run(store, send, retries_done=0) is None
    cb = store.callback
    assert cb is not None and (cb.Status, cb.Attempts, cb.LastError) == (
        CallbackStatus.FAILED,
        1,
        outcome.error,
    )


@pytest.mark.parametrize(
    ("retry_after", "low", "high"),
    [(8.0, 8.0, 8.0), (1000.0, 10.0, 10.0), (1.0, 4.0, 6.0)],  # honoured / capped at 2×5 s / jittered base
)
def test_retry_after_is_clamped_to_the_schedule(retry_after: float, low: float, high: float) -> None:
    store = FakeStore(make_job())
    send = FakeSender(DeliveryOutcome(delivered=False, status_code=429, retry_after_seconds=retry_after))
    countdown = run(store, send, retries_done=0)  # scheduled delay 5 s
    assert countdown is not None and low <= countdown <= high


@given(
    base=st.integers(1, 3600),
    retry_after=st.none() | st.floats(0, 10**6, allow_nan=False),
    seed=st.integers(0, 2**32),
)
def test_retry_delay_stays_within_bounds(base: int, retry_after: float | None, seed: int) -> None:
    delay = retry_delay(base, retry_after, random.Random(seed))
    assert 0.8 * base <= delay <= 2 * base
    if retry_after is not None and base <= retry_after <= 2 * base:
        assert delay >= retry_after  # the receiver's wish is honoured inside the clamp
    if retry_after is None:
        assert delay <= 1.2 * base


@pytest.mark.parametrize("status", [CallbackStatus.DELIVERED, CallbackStatus.FAILED])
def test_ended_delivery_is_not_repeated(status: CallbackStatus) -> None:
    store, send = FakeStore(make_job(Callback=CallbackState(Status=status, Attempts=2))), FakeSender()
    assert run(store, send) is None
    assert send.calls == []


def test_a_delivered_state_is_never_downgraded() -> None:
    store = FakeStore(make_job())

    class Racing(FakeSender):  # a duplicate message delivered while this attempt was failing
        def __call__(self, url: str, body: bytes, headers: dict[str, str]) -> DeliveryOutcome:
            store.jobs[RID] = make_job(Callback=CallbackState(Status=CallbackStatus.DELIVERED, Attempts=1))
            return ERR500

    run(store, Racing())
    cb = store.callback
    assert cb is not None and cb.Status is CallbackStatus.DELIVERED


@pytest.mark.parametrize(
    "job",
    [make_job(CallbackURL=None), make_job(Status=JobStatus.RUNNING, FinishedAt=None)],
    ids=["no-callback-url", "not-finished"],
)
def test_nothing_to_send(job: Job) -> None:
    store, send = FakeStore(job), FakeSender()
    assert run(store, send) is None
    assert send.calls == [] and store.callback is None


def test_missing_job_is_ignored() -> None:
    send = FakeSender()
    assert run(FakeStore(), send) is None and send.calls == []


def test_missing_secret_fails_without_sending() -> None:
    store, send = FakeStore(make_job()), FakeSender()
    assert run(store, send, secret=None) is None
    cb = store.callback
    assert send.calls == []
    assert cb is not None and (cb.Status, cb.Attempts) == (CallbackStatus.FAILED, 0)


def test_logs_carry_request_id_and_no_secrets() -> None:
    store, send = FakeStore(make_job()), FakeSender(ERR500, OK)
    with capture_logs() as logs:
        run(store, send, 0)
        run(store, send, 1)
    assert [e["event"] for e in logs] == ["webhook.retrying", "webhook.delivered"]
    for entry in logs:
        assert entry["request_id"] == RID
        text = repr(entry)
        assert "s3cr3t" not in text and SECRET not in text and "crop-job" not in text


def test_task_is_registered_with_celery_retry_budget() -> None:
    task = app.tasks[WEBHOOK_TASK]
    assert task.name == send_callback.name == WEBHOOK_TASK
    assert task.max_retries == len(Settings().webhook_retry_schedule)
    assert task.acks_late


def test_default_schedule_retries_for_hours() -> None:
    # A receiver down for hours still gets its callback: the countdowns are leased, so no delay has to fit
    # the visibility timeout.
    s = Settings()
    assert sum(s.webhook_retry_schedule) > 24 * 3600
    assert max(s.webhook_retry_schedule) > s.visibility_timeout


@pytest.mark.parametrize("schedule", [[0, 5], [-1], [5, 0, 60]])
def test_schedules_without_a_delay_are_refused(schedule: list[int]) -> None:
    with pytest.raises(ValidationError):
        Settings(webhook_retry_schedule=schedule)


def test_any_positive_schedule_is_taken() -> None:
    s = Settings(webhook_retry_schedule=[60, 600, 36000], visibility_timeout=30)
    assert s.webhook_retry_schedule == [60, 600, 36000]
    assert Settings(webhook_retry_schedule=[]).webhook_retry_schedule == []  # no retries at all


class TimeLimited(FakeSender):
    """Celery's soft time limit firing in the middle of the POST."""

    def __call__(self, url: str, body: bytes, headers: dict[str, str]) -> DeliveryOutcome:
        self.calls.append((url, body, headers))
        raise SoftTimeLimitExceeded()


def test_a_time_limit_hit_mid_post_is_a_failed_attempt_retried_on_schedule() -> None:
    store = FakeStore(make_job())
    countdown = run(store, TimeLimited(), retries_done=0)
    assert countdown is not None and 0.8 * SCHEDULE[0] <= countdown <= 1.2 * SCHEDULE[0]
    cb = store.callback
    assert cb is not None and (cb.Status, cb.Attempts) == (CallbackStatus.RETRYING, 1)
    assert cb.LastError is not None and cb.LastError.startswith("timeout")
    # ...and on the last step of the schedule it ends the delivery as Failed, recorded, not lost.
    assert run(store, TimeLimited(), retries_done=len(SCHEDULE)) is None
    cb = store.callback
    assert cb is not None and (cb.Status, cb.Attempts) == (CallbackStatus.FAILED, 2)


def test_during_a_rotation_both_secrets_sign() -> None:
    old = new_secret()
    store, send = FakeStore(make_job()), FakeSender(OK)
    run(store, send, secret=[SECRET, old])
    _, body, headers = send.calls[0]
    verify(SECRET, headers, body)
    verify(old, headers, body)


def test_load_secrets_lists_the_previous_secret_only_during_its_grace() -> None:
    box = SecretBox(SecretStr("k" * 32), WEBHOOK_SECRETS)
    new, old = new_secret(), new_secret()
    now = datetime(2026, 11, 25, 16, 0, tzinfo=UTC)
    project = Project(
        ProjectName="demo",
        CreatedAt="2026-01-01T00:00:00.000Z",
        WebhookSecret=box.seal("demo", new),
        PreviousWebhookSecret=box.seal("demo", old),
        PreviousWebhookSecretExpiresAt=grace_end(now),
    )

    class FakeRedis:
        def get(self, key: str) -> bytes | None:
            return project.model_dump_json().encode() if key == keys.project("demo") else None

    tasks_module._box.cache_clear()
    try:
        with patch.object(tasks_module, "_box", lambda: box):
            r: Any = FakeRedis()
            assert load_secrets(r, "demo", now) == [new, old]
            assert load_secrets(r, "demo", now + timedelta(hours=25)) == [new]
            assert load_secrets(r, "gone", now) is None
    finally:
        tasks_module._box.cache_clear()


def test_callbacks_travel_on_their_own_queue_with_limits_just_above_the_deadline() -> None:
    s = Settings()
    router = app.amqp.router
    assert router.route({}, WEBHOOK_TASK)["queue"].name == webhook_queue(s.queue_name) == "cropq.webhooks"
    assert router.route({}, CROP_TASK)["queue"].name == s.queue_name
    task = app.tasks[WEBHOOK_TASK]
    assert s.webhook_timeout_seconds < task.soft_time_limit < task.time_limit
    assert task.time_limit <= s.webhook_timeout_seconds + 15

"""The job listing's indexes, the listing's pages and tokens, cancel and delete, against a real Redis.

The crop run and the callback sender are replaced where they appear; Redis is real, so WATCH/MULTI, sorted
set order and expiries are the server's own.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
import redis
import redis.asyncio as aioredis

from api.errors import ImmError
from api.job_lifecycle import SCAN_BUDGET, Cursor, ListingScope, decode_token, encode_token, list_jobs
from tests.unit.crop_task.through_the_adapter import finish, run
from worker import keys, tasks
from worker.contracts import CropTaskMessage, Job, JobStatus, WebhookEvent
from worker.job_index import batch_status_jobs, index_new_job, listing_key, status_jobs
from worker.job_lifecycle import JobAlreadyFinished, JobNotFinished, cancel_job, delete_job
from worker.jobstore import JobNotFound, JobStore
from worker.settings import get_settings
from worker.webhooks.tasks import build_body

TTL = 3600
QUEUE = "lifecycle-test"
KEY = b"k" * 32
T0 = datetime(2030, 1, 1, tzinfo=UTC)
T0_MS = int(T0.timestamp() * 1000)


def _iso(at: datetime) -> str:
    return at.strftime("%Y-%m-%dT%H:%M:%S.") + f"{at.microsecond // 1000:03d}Z"


def _add(
    r: redis.Redis,
    rid: str,
    *,
    project: str = "p",
    status: JobStatus = JobStatus.QUEUED,
    ms: int = 0,
    batch: str | None = None,
    callback: str | None = None,
) -> Job:
    """Record a job and index it in one MULTI, as submit_job does."""
    job = Job(
        RequestId=rid,
        ProjectName=project,
        Status=status,
        BatchId=batch,
        SourceURI="oss://b/k.jpg",
        AspectRatios=["1:1"],
        CallbackURL=callback,
        CreatedAt=_iso(T0 + timedelta(milliseconds=ms)),
    )
    with r.pipeline() as pipe:
        pipe.set(keys.job(rid), job.model_dump_json(exclude_none=True), ex=TTL)
        pipe.zadd(keys.open_jobs(QUEUE), {rid: 1.0})
        index_new_job(pipe, job, TTL)
        pipe.execute()
    return job


def _page(
    redis_url: str, scope: ListingScope, max_results: int, token: str | None = None
) -> tuple[list[str], str | None]:
    async def run() -> tuple[list[str], str | None]:
        client = aioredis.Redis.from_url(redis_url, decode_responses=True)
        try:
            jobs, nxt = await list_jobs(client, scope, max_results, token, KEY)
        finally:
            await client.aclose()
        return [j.RequestId for j in jobs], nxt

    return asyncio.run(run())


def _all_pages(redis_url: str, scope: ListingScope, max_results: int) -> list[str]:
    seen: list[str] = []
    token: str | None = None
    while True:
        ids, token = _page(redis_url, scope, max_results, token)
        seen += ids
        if token is None:
            return seen


ALL = ListingScope("p", None, None)


def test_a_new_job_is_in_its_project_and_status_sets_with_expiry(redis_client: redis.Redis) -> None:
    job = _add(redis_client, "A", batch="B1", ms=5)
    score = T0_MS + 5
    for key in (
        keys.project_jobs("p"),
        status_jobs("p", JobStatus.QUEUED),
        keys.batch_jobs("B1"),
        batch_status_jobs("B1", JobStatus.QUEUED),
    ):
        assert redis_client.zscore(key, "A") == score, key
        assert 0 < redis_client.ttl(key) <= TTL, key
    assert job.BatchId == "B1"


def test_a_status_change_moves_the_job_between_status_sets_in_the_same_write(
    redis_client: redis.Redis,
) -> None:
    _add(redis_client, "A", batch="B1")
    store = JobStore(redis_client, TTL)
    store.update("A", lambda j: j.model_copy(update={"Status": JobStatus.RUNNING}))
    assert redis_client.zscore(status_jobs("p", JobStatus.QUEUED), "A") is None
    assert redis_client.zscore(status_jobs("p", JobStatus.RUNNING), "A") is not None
    assert redis_client.zscore(batch_status_jobs("B1", JobStatus.RUNNING), "A") is not None
    store.update("A", lambda j: j.model_copy(update={"Status": JobStatus.FAILED}))
    members = {
        s: redis_client.zrange(status_jobs("p", s), 0, -1) for s in JobStatus
    }  # exactly one status set holds it
    assert members == {s: (["A"] if s is JobStatus.FAILED else []) for s in JobStatus}
    assert redis_client.zrange(keys.project_jobs("p"), 0, -1) == ["A"]


def test_pages_run_newest_first_and_every_job_once_while_jobs_are_created(
    redis_client: redis.Redis, redis_url: str
) -> None:
    # Ties on the creation ms included: three jobs share each ms.
    for i in range(30):
        _add(redis_client, f"J{i:03d}", ms=i // 3)
    first, token = _page(redis_url, ALL, 7)
    assert first == [f"J{i:03d}" for i in (29, 28, 27, 26, 25, 24, 23)]
    seen = list(first)
    n = 100
    while token is not None:
        # New jobs, some in the very ms of the cursor's job, arrive between pages.
        _add(redis_client, f"N{n}", ms=1000 + n)
        cursor_ms = int(seen[-1][1:]) // 3
        _add(redis_client, f"Z{n}", ms=cursor_ms)  # sorts before the cursor: never met
        _add(redis_client, f"A{n}", ms=cursor_ms)  # sorts after it: met once, later
        n += 1
        ids, token = _page(redis_url, ALL, 7, token)
        seen += ids
    assert len(seen) == len(set(seen)) and not any(s[0] in "NZ" for s in seen)
    old = [s for s in seen if s.startswith("J")]
    assert old == [f"J{i:03d}" for i in range(29, -1, -1)]  # each exactly once, in order


def test_status_and_batch_filters_read_their_own_sets(redis_client: redis.Redis, redis_url: str) -> None:
    for i in range(10):
        _add(redis_client, f"Q{i}", ms=i)
    _add(redis_client, "F1", status=JobStatus.FAILED, ms=20, batch="B1")
    _add(redis_client, "F2", status=JobStatus.FAILED, ms=21)
    _add(redis_client, "S1", status=JobStatus.SUCCEEDED, ms=22, batch="B1")
    assert _all_pages(redis_url, ListingScope("p", JobStatus.FAILED, None), 1) == ["F2", "F1"]
    assert _all_pages(redis_url, ListingScope("p", None, "B1"), 5) == ["S1", "F1"]
    assert _all_pages(redis_url, ListingScope("p", JobStatus.FAILED, "B1"), 5) == ["F1"]
    assert _all_pages(redis_url, ListingScope("p", JobStatus.CANCELLED, None), 5) == []
    assert listing_key("p", JobStatus.FAILED, "B1") == batch_status_jobs("B1", JobStatus.FAILED)


def test_expired_records_are_skipped_and_pruned(redis_client: redis.Redis, redis_url: str) -> None:
    for i in range(6):
        _add(redis_client, f"J{i}", ms=i)
    redis_client.delete(keys.job("J4"), keys.job("J2"))  # their TTL ran out
    ids, token = _page(redis_url, ALL, 2)
    assert (ids, token is not None) == (["J5", "J3"], True)
    assert _page(redis_url, ALL, 2, token) == (["J1", "J0"], None)
    assert redis_client.zrange(keys.project_jobs("p"), 0, -1) == ["J0", "J1", "J3", "J5"]
    assert redis_client.zrange(status_jobs("p", JobStatus.QUEUED), 0, -1) == ["J0", "J1", "J3", "J5"]


def test_a_long_run_of_dead_entries_makes_a_short_page_then_resumes(
    redis_client: redis.Redis, redis_url: str
) -> None:
    _add(redis_client, "OLD", ms=0)
    with redis_client.pipeline(transaction=False) as pipe:  # index entries whose records are all gone
        pipe.zadd(keys.project_jobs("p"), {f"D{i:05d}": T0_MS + 10 + i for i in range(SCAN_BUDGET + 10)})
        pipe.execute()
    ids, token = _page(redis_url, ALL, 5)
    assert ids == [] and token is not None
    assert _page(redis_url, ALL, 5, token) == (["OLD"], None)
    assert redis_client.zcard(keys.project_jobs("p")) == 1


def test_a_token_is_bound_to_its_project_and_filters() -> None:
    token = encode_token(Cursor(123, "J7"), ALL, KEY)
    assert decode_token(token, ALL, KEY) == Cursor(123, "J7")
    mac = token.split(".")[1]
    forged = encode_token(Cursor(999, "J7"), ALL, b"x" * 32).split(".")[0] + "." + mac
    for bad in (
        forged,
        token[:-2] + ("AA" if not token.endswith("AA") else "BB"),
        "not a token",
        "a.b.c",
        "!!!.???",
        "",
        "x" * 600,
    ):
        with pytest.raises(ImmError) as e:
            decode_token(bad, ALL, KEY)
        assert (e.value.status, e.value.code) == (400, "InvalidArgument"), bad
    for other in (
        ListingScope("q", None, None),
        ListingScope("p", JobStatus.FAILED, None),
        ListingScope("p", None, "B1"),
    ):
        with pytest.raises(ImmError):
            decode_token(token, other, KEY)


@pytest.fixture
def sent(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    calls: list[str] = []
    monkeypatch.setattr("worker.job_lifecycle.enqueue_callback", calls.append)
    monkeypatch.setattr(tasks, "enqueue_callback", calls.append)
    yield calls


def test_cancel_of_a_queued_job(redis_client: redis.Redis, sent: list[str]) -> None:
    _add(redis_client, "A", callback="https://example.test/hook")
    pubsub = redis_client.pubsub(ignore_subscribe_messages=True)
    pubsub.subscribe(keys.job_done_channel("A"))
    job = cancel_job(redis_client, "A", QUEUE, "changed my mind", ttl_seconds=TTL)
    assert (job.Status, job.Code, job.Message) == (JobStatus.CANCELLED, "Cancelled", "changed my mind")
    assert job.FinishedAt is not None
    stored = JobStore(redis_client, TTL).get("A")
    assert stored.Status is JobStatus.CANCELLED
    assert redis_client.zscore(keys.open_jobs(QUEUE), "A") is None
    assert redis_client.zrange(status_jobs("p", JobStatus.CANCELLED), 0, -1) == ["A"]
    assert redis_client.zrange(status_jobs("p", JobStatus.QUEUED), 0, -1) == []
    assert sent == ["A"] and redis_client.exists(keys.job_callback_queued("A"))
    messages = [pubsub.get_message(timeout=1) for _ in range(3)]  # the first read is the subscription
    assert [m["data"] for m in messages if m is not None] == ["Cancelled"]
    pubsub.close()
    with pytest.raises(JobAlreadyFinished):
        cancel_job(redis_client, "A", QUEUE, ttl_seconds=TTL)
    assert sent == ["A"]  # no second callback
    event = WebhookEvent.model_validate_json(build_body(stored))
    assert event.type == "crop-job.cancelled"


def test_a_cancelled_job_s_message_runs_nothing_and_sends_no_second_callback(
    redis_client: redis.Redis, sent: list[str]
) -> None:
    _add(redis_client, "A", callback="https://example.test/hook")
    store = JobStore(redis_client, TTL)
    queued = store.get("A")
    cancel_job(redis_client, "A", QUEUE, ttl_seconds=TTL)

    class StaleReadStore(JobStore):
        """Reads the job as it was before the cancel (the cancel lands between the run's read and its
        Running write)."""

        def get(self, request_id: str) -> Job:
            return queued

    msg = CropTaskMessage(RequestId="A", ProjectName="p", Bucket="b", Key="k.jpg", AspectRatios=["1:1"])
    run(None, msg, StaleReadStore(redis_client, TTL), get_settings(), None)  # type: ignore[arg-type]
    after = store.get("A")
    assert after.Status is JobStatus.CANCELLED and after.StartedAt is None
    run(None, msg, store, get_settings(), None)  # type: ignore[arg-type]
    assert store.get("A").Status is JobStatus.CANCELLED
    assert sent == ["A"]


def test_a_running_job_s_result_is_discarded_after_a_cancel(
    redis_client: redis.Redis, sent: list[str]
) -> None:
    _add(redis_client, "A", status=JobStatus.RUNNING)
    cancel_job(redis_client, "A", QUEUE, ttl_seconds=TTL)
    store = JobStore(redis_client, TTL)
    finish(store, "A", 0, Status=JobStatus.SUCCEEDED, Croppings=[])
    job = store.get("A")
    assert (job.Status, job.Croppings) == (JobStatus.CANCELLED, None)
    assert redis_client.zrange(status_jobs("p", JobStatus.SUCCEEDED), 0, -1) == []
    assert sent == []  # no CallbackURL


def test_cancel_of_another_project_s_job_is_not_found(redis_client: redis.Redis, sent: list[str]) -> None:
    _add(redis_client, "A", project="other")
    with pytest.raises(JobNotFound):
        cancel_job(redis_client, "A", QUEUE, project="p", ttl_seconds=TTL)
    with pytest.raises(JobNotFound):
        cancel_job(redis_client, "missing", QUEUE, ttl_seconds=TTL)
    assert JobStore(redis_client, TTL).get("A").Status is JobStatus.QUEUED


def test_a_callback_that_cannot_be_queued_is_left_to_the_job_s_message(redis_client: redis.Redis) -> None:
    _add(redis_client, "A", callback="https://example.test/hook")

    def broker_down(rid: str) -> None:
        raise ConnectionError("broker down")

    job = cancel_job(redis_client, "A", QUEUE, ttl_seconds=TTL, send_callback=broker_down)
    assert job.Status is JobStatus.CANCELLED
    assert not redis_client.exists(keys.job_callback_queued("A"))  # a later run of its message sends it


def test_delete_removes_a_finished_job_everywhere_and_refuses_an_unfinished_one(
    redis_client: redis.Redis, redis_url: str
) -> None:
    _add(redis_client, "Q", batch="B1")
    _add(redis_client, "F", status=JobStatus.FAILED, batch="B1", ms=1)
    for side in (keys.job_attempts, keys.job_ended_runs, keys.job_callback_queued, keys.job_resent):
        redis_client.set(side("F"), 1)
    with pytest.raises(JobNotFinished):
        delete_job(redis_client, "Q", QUEUE)
    with pytest.raises(JobNotFound):
        delete_job(redis_client, "F", QUEUE, project="other")
    assert delete_job(redis_client, "F", QUEUE, project="p").Status is JobStatus.FAILED
    assert redis_client.keys("cropq:job:F*") == []
    assert _all_pages(redis_url, ALL, 10) == ["Q"]
    assert _all_pages(redis_url, ListingScope("p", None, "B1"), 10) == ["Q"]
    assert redis_client.zcard(status_jobs("p", JobStatus.FAILED)) == 0
    assert redis_client.zcard(batch_status_jobs("B1", JobStatus.FAILED)) == 0
    with pytest.raises(JobNotFound):
        delete_job(redis_client, "F", QUEUE)

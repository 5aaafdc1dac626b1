"""The orphan sweeper's decisions against a real Redis (the resend is recorded instead of sent)."""

from __future__ import annotations

import redis

from worker import keys
from worker.contracts import CropTaskMessage, Job, JobStatus, utcnow_iso
from worker.jobstore import JobStore
from worker.orphans import MAX_RESENDS, OrphanSweeper, message_of, orphan_after

QUEUE = "orphans-test"
VT = 10.0
LATE = orphan_after(VT) + 1


def _job(r: redis.Redis, rid: str, status: JobStatus = JobStatus.QUEUED, seen_at: float = 0.0) -> None:
    job = Job(
        RequestId=rid,
        ProjectName="p",
        Status=status,
        SourceURI="oss://bucket/dir/photo one.jpg",
        AspectRatios=["1:1", "16:9"],
        InclusionHints=["dog"],
        CreatedAt=utcnow_iso(),
    )
    r.set(keys.job(rid), job.model_dump_json(exclude_none=True))
    r.zadd(keys.open_jobs(QUEUE), {rid: seen_at})


given_up: list[tuple[str, str]] = []


def _sweeper(r: redis.Redis) -> tuple[OrphanSweeper, list[CropTaskMessage]]:
    sent: list[CropTaskMessage] = []
    given_up.clear()
    sweeper = OrphanSweeper(
        JobStore(r, 3600), QUEUE, VT, sent.append, lambda job, why: given_up.append((job.RequestId, why))
    )
    return sweeper, sent


def test_a_lost_job_is_sent_again_after_two_sightings(redis_client: redis.Redis) -> None:
    _job(redis_client, "A")
    sweeper, sent = _sweeper(redis_client)
    assert sweeper.sweep(LATE) == []  # first sighting only
    assert sweeper.sweep(LATE + 5) == ["A"]
    (msg,) = sent
    assert (msg.Bucket, msg.Key, msg.AspectRatios, msg.InclusionHints) == (
        "bucket",
        "dir/photo one.jpg",
        ["1:1", "16:9"],
        ["dog"],
    )
    # Its sign of life is now: it is not sent again on the next sweeps.
    assert sweeper.sweep(LATE + 10) == [] and sweeper.sweep(LATE + 15) == []


def test_a_job_showing_life_between_sweeps_is_left_alone(redis_client: redis.Redis) -> None:
    _job(redis_client, "A")
    sweeper, sent = _sweeper(redis_client)
    sweeper.sweep(LATE)
    redis_client.zadd(keys.open_jobs(QUEUE), {"A": 3.0})  # a lease renewal, still old but moved
    assert sweeper.sweep(LATE + 5) == []
    assert sent == []


def test_nothing_is_taken_for_lost_while_the_queue_has_a_backlog(redis_client: redis.Redis) -> None:
    _job(redis_client, "A")
    redis_client.lpush(QUEUE, "a message waiting its turn")
    sweeper, sent = _sweeper(redis_client)
    for t in range(5):
        assert sweeper.sweep(LATE + t) == []
    redis_client.delete(QUEUE)
    assert sweeper.sweep(LATE + 10) == []  # the backlog reset the sightings
    assert sweeper.sweep(LATE + 15) == ["A"] and len(sent) == 1


def test_recent_finished_and_missing_jobs_are_not_sent(redis_client: redis.Redis) -> None:
    _job(redis_client, "young", seen_at=LATE)
    _job(redis_client, "done", status=JobStatus.SUCCEEDED)
    redis_client.zadd(keys.open_jobs(QUEUE), {"expired": 0.0})
    sweeper, sent = _sweeper(redis_client)
    sweeper.sweep(LATE)
    assert sweeper.sweep(LATE + 1) == [] and sent == []
    assert redis_client.zrange(keys.open_jobs(QUEUE), 0, -1) == ["young"]  # the others dropped


def test_message_of_round_trips_a_job() -> None:
    job = Job(
        RequestId="R",
        ProjectName="p",
        Status=JobStatus.RUNNING,
        SourceURI="s3://b/k/x.png",
        AspectRatios=["4:3"],
        CreatedAt=utcnow_iso(),
    )
    assert message_of(job) == CropTaskMessage(
        RequestId="R", ProjectName="p", Bucket="b", Key="k/x.png", AspectRatios=["4:3"]
    )


def test_a_job_lost_again_and_again_is_given_up(redis_client: redis.Redis) -> None:
    _job(redis_client, "A")
    sweeper, sent = _sweeper(redis_client)
    now = LATE
    for _ in range(MAX_RESENDS + 1):
        sweeper.sweep(now)
        sweeper.sweep(now + 1)
        now += orphan_after(VT) + 2  # lost again: no sign of life since it was sent
    assert len(sent) == MAX_RESENDS
    assert given_up == [
        ("A", f"The job was lost {MAX_RESENDS} times after it was accepted; it was given up.")
    ]
    assert redis_client.zrange(keys.open_jobs(QUEUE), 0, -1) == []

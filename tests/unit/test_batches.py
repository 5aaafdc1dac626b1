"""Prefix batches' logic against a real Redis: the listing and feeding from a fake bucket listing, ends
counted once, crash reruns, cancels, vanished objects, the manifest, the orphan sweeper's batch rules and
the API's checks. Messages are recorded instead of sent."""

from __future__ import annotations

import io
import itertools
import json
from collections.abc import Iterator
from typing import IO, Any

import pytest
import redis

from api.batches import build_batch_params, check_batch_access
from api.errors import ImmError
from api.schemas import SubmitPrefixBatchRequest
from worker import batches, keys
from worker.batches import BatchFeeder, FeedResult
from worker.contracts import Batch, BatchStatus, CropTaskMessage, Job, JobStatus, batch_queue, utcnow_iso
from worker.jobstore import JobStore
from worker.orphans import OrphanSweeper, orphan_after
from worker.projects import Project

QUEUE = "batches-test"
BID = "B1"


class FakeBucket:
    """A sorted listing with S3's start_after semantics, counting the objects it yields."""

    def __init__(self, object_keys: list[str]) -> None:
        self.keys = sorted(object_keys)
        self.yielded = 0

    def __call__(self, bucket: str, prefix: str, start_after: str | None) -> Iterator[str]:
        for key in self.keys:
            if key.startswith(prefix) and (start_after is None or key > start_after):
                self.yielded += 1
                yield key


class Recorder:
    def __init__(self) -> None:
        self.crops: list[CropTaskMessage] = []
        self.feeds: list[tuple[str, float, bool]] = []
        self.finishes: list[str] = []
        self.webhooks: list[str] = []
        self.fail_crops_after: int | None = None

    def crop(self, message: CropTaskMessage) -> None:
        if self.fail_crops_after is not None and len(self.crops) >= self.fail_crops_after:
            raise ConnectionError("broker gone")
        self.crops.append(message)

    def feed(self, batch_id: str, countdown: float, heartbeat: bool) -> None:
        self.feeds.append((batch_id, countdown, heartbeat))

    def finish(self, batch_id: str) -> None:
        self.finishes.append(batch_id)

    def webhook(self, batch_id: str) -> None:
        self.webhooks.append(batch_id)


def _batch(r: redis.Redis, suffixes: list[str] | None = None, **extra: Any) -> None:
    batch = Batch(
        BatchId=BID,
        ProjectName="p",
        Status=BatchStatus.LISTING,
        SourcePrefix="oss://photos/cat/",
        Suffixes=suffixes or [],
        AspectRatios=["1:1"],
        ManifestURI="oss://out/m.jsonl",
        CreatedAt=utcnow_iso(),
        **extra,
    )
    r.hset(keys.batch(BID), mapping=batches.new_record(batch))  # type: ignore[arg-type]


@pytest.fixture
def recorder(monkeypatch: pytest.MonkeyPatch) -> Recorder:
    rec = Recorder()
    monkeypatch.setattr(batches, "default_sender", lambda: rec)
    return rec


def _feeder(r: redis.Redis, bucket: FakeBucket, rec: Recorder, in_flight: int = 4) -> BatchFeeder:
    return BatchFeeder(r, bucket, rec, in_flight=in_flight, ttl_seconds=3600, queue_name=QUEUE)


@pytest.fixture
def use_feeder(monkeypatch: pytest.MonkeyPatch) -> list[BatchFeeder]:
    """job_ended (also from the cancel core) builds its feeder with feeder_for: hand it the test's."""
    holder: list[BatchFeeder] = []
    monkeypatch.setattr(batches, "feeder_for", lambda settings, r=None: holder[0])
    return holder


def _end(r: redis.Redis, feeder: BatchFeeder, rid: str, status: JobStatus) -> Job:
    def change(job: Job) -> Job:
        update: dict[str, Any] = {"Status": status, "FinishedAt": utcnow_iso()}
        if status is JobStatus.FAILED:
            update |= {"Code": "InvalidArgument", "Message": "not an image"}
        else:
            update["Croppings"] = []
        return job.model_copy(update=update)

    job = JobStore(r, 3600).update(rid, change)
    batches.job_ended(r, job, feeder)
    return job


def _counts(r: redis.Redis) -> tuple[int, int, int, int, int]:
    b = batches.read_batch(r, BID)
    assert b is not None
    return (b.Total, b.Succeeded, b.Failed, b.Cancelled, b.Pending)


def _open_jobs(r: redis.Redis) -> set[str]:
    return set(r.smembers(f"{keys.batch(BID)}:open"))  # type: ignore[arg-type]


def _manifest(r: redis.Redis, rec: Recorder) -> list[dict[str, Any]]:
    written: dict[str, bytes] = {}

    def put(bucket: str, key: str, data: IO[bytes], length: int) -> None:
        written[f"{bucket}/{key}"] = data.read()
        assert len(written[f"{bucket}/{key}"]) == length

    batches.finish_batch(r, BID, put, rec)
    return [json.loads(line) for line in written["out/m.jsonl"].decode().splitlines()]


def test_a_batch_is_listed_fed_within_its_bound_counted_and_written(
    redis_client: redis.Redis, recorder: Recorder, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(batches, "COMMIT_EVERY", 5)
    names = [f"cat/{i:03d}.jpg" for i in range(20)] + [
        "cat/big.JPG",
        "cat/a.png",
        "cat/notes.txt",
        "cat/dir/",
    ]
    bucket = FakeBucket([*names, "dog/0.jpg"])
    _batch(redis_client, suffixes=[".jpg"], CallbackURL="https://example.com/hook")
    feeder = _feeder(redis_client, bucket, recorder)

    assert feeder.run(BID) == FeedResult(batches.HEARTBEAT_SECONDS)
    assert _counts(redis_client) == (21, 0, 0, 0, 21)  # .JPG matches; .png, .txt, the folder do not
    assert batches.read_batch(redis_client, BID).Status is BatchStatus.RUNNING  # type: ignore[union-attr]
    assert len(recorder.crops) == 4 and len(_open_jobs(redis_client)) == 4
    first = recorder.crops[0]
    assert (first.RequestId, first.Bucket, first.Key) == (f"{BID}-1", "photos", "cat/000.jpg")

    seen: list[tuple[int, int, int, int, int]] = []
    ended = 0
    while len(recorder.crops) > ended:
        rid = recorder.crops[ended].RequestId
        _end(redis_client, feeder, rid, JobStatus.FAILED if ended % 7 == 3 else JobStatus.SUCCEEDED)
        ended += 1
        assert len(_open_jobs(redis_client)) <= 4  # never more than batch_in_flight
        seen.append(_counts(redis_client))
    # Every end topped the batch up from its look-ahead: the feeder was needed only for the listing.
    assert recorder.feeds == []
    assert sorted(m.Key for m in recorder.crops) == sorted(n for n in names if n.lower().endswith(".jpg"))
    assert len({m.RequestId for m in recorder.crops}) == 21
    for before, after in itertools.pairwise(seen):  # never backwards
        assert all(a >= b for a, b in zip(after[:4], before[:4], strict=True)) and after[4] <= before[4]
    assert recorder.finishes == [BID]  # the last end sent the finisher, once

    lines = _manifest(redis_client, recorder)
    assert [line["SourceURI"] for line in lines] == [f"oss://photos/{m.Key}" for m in recorder.crops]
    failed = [line for line in lines if line["Status"] == "Failed"]
    assert len(failed) == 3 and all(line["Code"] == "InvalidArgument" for line in failed)
    assert all("Croppings" in line for line in lines if line["Status"] == "Succeeded")
    batch = batches.read_batch(redis_client, BID)
    assert batch is not None and batch.Status is BatchStatus.PARTIALLY_FAILED and batch.FinishedAt
    assert _counts(redis_client) == (21, 18, 3, 0, 0)
    assert recorder.webhooks == [BID]
    batches.finish_batch(redis_client, BID, lambda *a: None, recorder)  # a rerun sends no second callback
    assert recorder.webhooks == [BID]


def test_a_job_end_is_counted_once(redis_client: redis.Redis, recorder: Recorder) -> None:
    _batch(redis_client)
    feeder = _feeder(redis_client, FakeBucket(["cat/a.jpg", "cat/b.jpg"]), recorder)
    feeder.run(BID)
    job = _end(redis_client, feeder, f"{BID}-1", JobStatus.SUCCEEDED)
    assert batches.count_end(redis_client, job) == batches.NOT_COUNTED  # a rerun's end, or a reconcile
    assert feeder.reconcile(BID) == 0
    assert _counts(redis_client) == (2, 1, 0, 0, 1)


def test_an_end_whose_count_was_lost_is_found_by_the_feeder(
    redis_client: redis.Redis, recorder: Recorder
) -> None:
    _batch(redis_client)
    feeder = _feeder(redis_client, FakeBucket(["cat/a.jpg"]), recorder)
    feeder.run(BID)
    # The worker died between storing the end and counting it.
    JobStore(redis_client, 3600).update(
        f"{BID}-1", lambda j: j.model_copy(update={"Status": JobStatus.SUCCEEDED, "Croppings": []})
    )
    assert feeder.run(BID) == FeedResult(None)
    assert _counts(redis_client) == (1, 1, 0, 0, 0) and recorder.finishes == [BID]


def test_a_listing_is_resumed_from_its_cursor_across_runs(
    redis_client: redis.Redis, recorder: Recorder, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(batches, "COMMIT_EVERY", 10)
    bucket = FakeBucket([f"cat/{i:03d}.jpg" for i in range(35)])
    _batch(redis_client)
    ticks = iter(range(0, 10_000, 3))  # every clock read is 3 s later: each run lists one commit's worth
    feeder = BatchFeeder(
        redis_client,
        bucket,
        recorder,
        in_flight=2,
        ttl_seconds=3600,
        queue_name=QUEUE,
        clock=lambda: next(ticks),
    )
    totals: list[int] = []
    while batches.read_batch(redis_client, BID).Status is BatchStatus.LISTING:  # type: ignore[union-attr]
        assert feeder.run(BID).again_in == 0.0 or totals  # more listing: at once
        totals.append(_counts(redis_client)[0])
    assert totals == [10, 20, 30, 35]
    assert bucket.yielded == 35 + 35  # each object listed once per phase (the look-ahead read one page)
    assert [m.Key for m in recorder.crops] == ["cat/000.jpg", "cat/001.jpg"]


def test_a_feeder_killed_before_sending_sends_on_the_next_run(
    redis_client: redis.Redis, recorder: Recorder
) -> None:
    _batch(redis_client)
    feeder = _feeder(redis_client, FakeBucket([f"cat/{i}.jpg" for i in range(6)]), recorder)
    recorder.fail_crops_after = 1
    with pytest.raises(ConnectionError):
        feeder.run(BID)
    recorder.fail_crops_after = None
    feeder.run(BID)  # the jobs recorded but not sent are sent now (again: harmless), none recorded twice
    assert {m.RequestId for m in recorder.crops} == {f"{BID}-{n}" for n in (1, 2, 3, 4)}
    assert _open_jobs(redis_client) == {f"{BID}-{n}" for n in (1, 2, 3, 4)}
    assert redis_client.hget(keys.batch(BID), "Fed") == "4"


def test_a_stale_listing_write_is_refused(redis_client: redis.Redis, recorder: Recorder) -> None:
    _batch(redis_client)
    feeder = _feeder(redis_client, FakeBucket([]), recorder)
    redis_client.hset(keys.batch(BID), "ListCursor", "cat/k")  # another run moved on meanwhile
    with pytest.raises(batches.Stale):
        feeder._commit_listing(BID, None, "cat/z", 99, "cat/z", done=True)
    assert _counts(redis_client)[0] == 0


def _kombu_message(task_id: str) -> str:
    return json.dumps({"body": "", "headers": {"id": task_id, "task": "cropq.crop"}, "properties": {}})


def test_cancel_cancels_queued_jobs_drops_their_messages_and_ends_the_batch(
    redis_client: redis.Redis, recorder: Recorder, use_feeder: list[BatchFeeder]
) -> None:
    _batch(redis_client)
    feeder = _feeder(redis_client, FakeBucket([f"cat/{i}.jpg" for i in range(10)]), recorder)
    use_feeder.append(feeder)
    feeder.run(BID)
    _end(redis_client, feeder, f"{BID}-1", JobStatus.SUCCEEDED)  # stays Succeeded
    JobStore(redis_client, 3600).update(
        f"{BID}-2", lambda j: j.model_copy(update={"Status": JobStatus.RUNNING})
    )
    queue = batch_queue(QUEUE)
    redis_client.lpush(queue, *[_kombu_message(f"{BID}-{n}") for n in (3, 4, 5)], _kombu_message("other"))

    assert batches.cancel_status(redis_client, BID) == 1
    assert batches.cancel_status(redis_client, BID) == 2  # again: already cancelled
    assert batches.cancel_queued_jobs(redis_client, BID, QUEUE) == 3
    states = {n: JobStore(redis_client, 3600).get(f"{BID}-{n}").Status for n in range(1, 6)}
    assert states == {
        1: JobStatus.SUCCEEDED,
        2: JobStatus.RUNNING,
        3: JobStatus.CANCELLED,
        4: JobStatus.CANCELLED,
        5: JobStatus.CANCELLED,
    }
    assert redis_client.lrange(queue, 0, -1) == [_kombu_message("other")]
    assert feeder.run(BID).again_in == batches.HEARTBEAT_SECONDS  # job 2 still runs: not finished yet
    assert len(recorder.crops) == 5  # nothing fed after the cancel
    _end(redis_client, feeder, f"{BID}-2", JobStatus.SUCCEEDED)  # it ends by itself
    assert recorder.finishes == [BID]
    assert _counts(redis_client) == (10, 2, 0, 8, 0)  # never-fed objects count as cancelled
    lines = _manifest(redis_client, recorder)
    assert [line["Status"] for line in lines] == [
        "Succeeded",
        "Succeeded",
        "Cancelled",
        "Cancelled",
        "Cancelled",
    ]
    assert batches.read_batch(redis_client, BID).Status is BatchStatus.CANCELLED  # type: ignore[union-attr]
    assert batches.cancel_status(redis_client, BID) == 2


def test_objects_deleted_between_the_listings_are_counted_failed(
    redis_client: redis.Redis, recorder: Recorder
) -> None:
    _batch(redis_client)
    bucket = FakeBucket([f"cat/{i}.jpg" for i in range(6)])
    feeder = _feeder(redis_client, bucket, recorder, in_flight=10)
    feeder._list(BID, batches.read_batch(redis_client, BID), {})  # type: ignore[arg-type]
    bucket.keys = [k for k in bucket.keys if k not in ("cat/2.jpg", "cat/4.jpg")] + ["cat/zzz.jpg"]
    feeder.run(BID)
    assert [m.Key for m in recorder.crops] == ["cat/0.jpg", "cat/1.jpg", "cat/3.jpg", "cat/5.jpg"]
    for m in recorder.crops:
        _end(redis_client, feeder, m.RequestId, JobStatus.SUCCEEDED)
    assert _counts(redis_client) == (6, 4, 2, 0, 0)
    lines = _manifest(redis_client, recorder)
    assert len(lines) == 6 and sum(line.get("Code") == "ResourceNotFound" for line in lines) == 2


def test_an_empty_prefix_ends_at_once(redis_client: redis.Redis, recorder: Recorder) -> None:
    _batch(redis_client)
    assert _feeder(redis_client, FakeBucket(["dog/a.jpg"]), recorder).run(BID) == FeedResult(None)
    assert recorder.finishes == [BID]
    assert _manifest(redis_client, recorder) == []
    assert batches.read_batch(redis_client, BID).Status is BatchStatus.SUCCEEDED  # type: ignore[union-attr]


def test_a_stalled_batch_is_revived(redis_client: redis.Redis, recorder: Recorder) -> None:
    redis_client.zadd(batches.ACTIVE, {"old": 0.0, "fresh": 1000.0})
    redis_client.set(batches.wake_mark("old"), 1)  # the wake whose message was lost
    assert batches.revive_stalled(redis_client, recorder, 1000.0) == ["old"]
    assert recorder.feeds == [("old", 0.0, False)]


def test_the_sweeper_leaves_waiting_batch_jobs_and_resends_lost_ones_to_the_batch_queue(
    redis_client: redis.Redis,
) -> None:
    for rid in ("waiting", "lost"):
        job = Job(
            RequestId=rid,
            ProjectName="p",
            Status=JobStatus.QUEUED,
            BatchId=BID,
            SourceURI="oss://photos/cat/a.jpg",
            AspectRatios=["1:1"],
            CreatedAt=utcnow_iso(),
        )
        redis_client.set(keys.job(rid), job.model_dump_json())
        redis_client.zadd(keys.open_jobs(QUEUE), {rid: 0.0})
    redis_client.lpush(batch_queue(QUEUE), _kombu_message("waiting"))
    interactive: list[CropTaskMessage] = []
    batch: list[CropTaskMessage] = []
    sweeper = OrphanSweeper(
        JobStore(redis_client, 3600), QUEUE, 10.0, interactive.append, lambda j, w: None, batch.append
    )
    late = orphan_after(10.0) + 1
    sweeper.sweep(late)
    assert sweeper.sweep(late + 5) == ["lost"]
    assert interactive == [] and [m.RequestId for m in batch] == ["lost"]


# --------------------------------------------------------------------------- the API's checks


def _params(**body: Any) -> Any:
    return build_batch_params("p", SubmitPrefixBatchRequest.model_validate(body), None)


def test_the_request_is_checked_as_jobs_are() -> None:
    p = _params(
        SourcePrefix="oss://photos/",
        Suffixes=[".JPG", ".jpg", ".png"],
        ManifestURI="oss://out/{BatchId}.jsonl",
    )
    assert (p.bucket, p.prefix, p.suffixes) == ("photos", "", [".jpg", ".png"])
    bad: list[dict[str, Any]] = [
        {"SourcePrefix": "photos/"},
        {"SourcePrefix": "oss://photos/x", "Suffixes": ["jpg"]},
        {"SourcePrefix": "oss://photos/x", "ManifestURI": "oss://out/{Stem}.jsonl"},
        {"SourcePrefix": "oss://photos/x", "ManifestURI": "oss://out/"},
        {"SourcePrefix": "oss://photos/x", "AspectRatios": ["7:1"]},
        {"SourcePrefix": "oss://photos/x", "CallbackURL": "ftp://x"},
        {
            "SourcePrefix": "oss://photos/x",
            "AspectRatios": ["1:1", "4:3"],
            "Render": {"TargetURI": "oss://t/{Stem}"},
        },
    ]
    for body in bad:
        with pytest.raises(ImmError) as e:
            _params(**body)
        assert e.value.status == 400, body


def test_buckets_are_checked_against_the_project() -> None:
    project = Project(
        ProjectName="p",
        Buckets=["photos"],
        WritableBuckets=["out"],
        CreatedAt=utcnow_iso(),
        WebhookSecret="s",
    )
    check_batch_access(_params(SourcePrefix="oss://photos/a/", ManifestURI="oss://out/m.jsonl"), project)
    for body in (
        {"SourcePrefix": "oss://other/a/"},
        {"SourcePrefix": "oss://photos/a/", "ManifestURI": "oss://photos/m.jsonl"},  # readable, not writable
        {"SourcePrefix": "oss://photos/a/", "Render": {"TargetURI": "oss://photos/{Stem}.jpg"}},
    ):
        with pytest.raises(ImmError) as e:
            check_batch_access(_params(**body), project)
        assert e.value.status == 400, body


def test_manifest_lines_stream_through_a_file(redis_client: redis.Redis) -> None:
    out = io.BytesIO()
    batch = Batch(
        BatchId=BID,
        ProjectName="p",
        Status=BatchStatus.RUNNING,
        SourcePrefix="oss://b/",
        AspectRatios=[],
        CreatedAt=utcnow_iso(),
    )
    assert batches.write_manifest(redis_client, batch, 3, 0, out) == 3  # records gone: still one line each
    assert [json.loads(x)["RequestId"] for x in out.getvalue().splitlines()] == [
        f"{BID}-{n}" for n in (1, 2, 3)
    ]

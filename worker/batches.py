"""Prefix batches: list a bucket prefix page by page, feed its objects to crop jobs a few at a time, count
their ends, then write one manifest and send one callback.

A batch is a Redis hash (``keys.batch``) with its request (``spec``, JSON) and its progress fields. Its life:

1. ``Listing``: the feeder task counts the matching objects page by page from a cursor (``ListCursor``,
   the last key seen), so ``Total`` grows; no key is kept anywhere. When the listing ends, ``Total`` is
   final and the batch is ``Running``.
2. ``Running``: the feeder lists the prefix again from its own cursor (``FeedCursor``), up to the last
   matching key of phase 1 (``ListEnd``), through a bounded look-ahead list (at most one page of keys), and
   records jobs ``<BatchId>-<n>`` (``n``: the object's ordinal in listing order) so that at most
   ``batch_in_flight`` of them are queued or running (the ``open`` set). Jobs go to the batch queue, which
   workers read only when the interactive queue is empty.
3. Each job's end is counted exactly once (``job_ended``: an atomic SREM from ``open`` + HINCRBY), which
   also wakes the feeder. When the listing is done, every object fed and nothing open, the first caller
   that sees it (a job's end, the feeder, a cancel) claims ``Finalising`` and sends the finisher, which
   streams the manifest (one JSON line per object) to a spooled file, puts it once, sets the final status
   and sends the ``crop-batch.finished`` callback once.

Crash safety: every progress write is a compare-and-set (WATCH on the hash) from the state it was computed
from, and job records are written in the same MULTI as the cursor that passed them, under deterministic
RequestIds, so a feeder killed anywhere and run again recreates nothing twice and skips nothing. Jobs
recorded but whose messages may not have been sent (``Sent`` < ``Fed``) are sent again; a duplicate message
finds its job running or finished and stores nothing twice (worker/tasks.py). A feeder or finisher message
lost for good is revived by the orphan sweeper (``revive_stalled``), and a job end whose count was lost (its
worker died between the two writes) is found by the feeder's reconcile of ``open``.

Objects deleted between the two listings are not seen again: they are counted ``Failed`` (and written to the
manifest as such, without a RequestId) so that counts stay exact; objects added meanwhile inside the listed
range may take the place of the last listed ones (the number of jobs never exceeds ``Total``).
"""

from __future__ import annotations

import json
import secrets
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import IO, Any, Protocol

import redis
import structlog

from worker import keys
from worker.celery_config import sending_app
from worker.contracts import (
    BATCH_FEED_TASK,
    BATCH_FINISH_TASK,
    BATCH_WEBHOOK_TASK,
    CROP_TASK,
    Batch,
    BatchStatus,
    CropTaskMessage,
    Job,
    JobStatus,
    batch_queue,
    utcnow_iso,
)
from worker.job_index import index_new_job
from worker.settings import Settings, get_settings

log = structlog.get_logger("cropq.batches")

LIST_SLICE_SECONDS = 2.0
"""Listing time one feeder run spends before it hands the worker back (and sends itself again at once)."""
COMMIT_EVERY = 1000
"""Listed objects between two cursor commits (one S3 page): a killed run lists at most this many again."""
LOOKAHEAD_OBJECTS = 1000
"""Listed objects one refill of the look-ahead list reads at most: keys held in Redis at once per batch."""
HEARTBEAT_SECONDS = 1.0
"""While a batch runs, its feeder looks again this often even without a wake (reconcile, lost wakes)."""
LOCK_MS = 30_000
"""How long a feeder run holds its batch; a killed run's hold lapses by itself."""
SCHEDULED_TTL_SECONDS = 30
"""A queued feeder message stands for the batch this long; after that a wake may send another."""
STALL_SECONDS = 60.0
"""A running batch whose feeder showed no life for this long has lost its message: the sweeper revives it."""
MANIFEST_REFUSALS = frozenset({"NoSuchBucket", "AccessDenied", "InvalidBucketName", "KeyTooLongError"})
MANIFEST_CHUNK = 500
MANIFEST_SPOOL_BYTES = 8 * 1024 * 1024
"""Manifest bytes held in memory before the spooled file moves to disk."""
CANCEL_REASON = "The batch was cancelled."

ACTIVE = f"{keys.PREFIX}:batches:active"
"""Sorted set of unfinished batches scored by their feeder's last sign of life (the sweeper's index)."""


def _open(batch_id: str) -> str:
    """Set of the batch's jobs recorded and not yet counted as ended (its in-flight jobs)."""
    return f"{keys.batch(batch_id)}:open"


def _ahead(batch_id: str) -> str:
    """List of listed object keys not yet turned into jobs (at most one refill)."""
    return f"{keys.batch(batch_id)}:ahead"


def _lock(batch_id: str) -> str:
    return f"{keys.batch(batch_id)}:feeding"


def _scheduled(batch_id: str, heartbeat: bool = False) -> str:
    """Set while a feeder message (a wake, or the periodic heartbeat) waits for the batch."""
    return f"{keys.batch(batch_id)}:{'heartbeat' if heartbeat else 'wake'}"


def wake_mark(batch_id: str) -> str:
    """Set by whoever sends the feeder a wake (the API with a batch's first run): see ``wake``."""
    return _scheduled(batch_id)


def side_keys(batch_id: str) -> list[str]:
    return [
        _open(batch_id),
        _ahead(batch_id),
        _lock(batch_id),
        _scheduled(batch_id),
        _scheduled(batch_id, True),
    ]


def job_request_id(batch_id: str, ordinal: int) -> str:
    return f"{batch_id}-{ordinal}"


def _text(value: str | bytes | None) -> str | None:
    return value.decode("utf-8") if isinstance(value, bytes) else value


def _int(value: str | bytes | None) -> int:
    return int(_text(value) or 0)


def _decoded(fields: Any) -> dict[str, str | None]:
    """A HGETALL answer with text keys and values (whether the client decodes or not)."""
    return {_text(k) or "": _text(v) for k, v in dict(fields).items()}


# --------------------------------------------------------------------------- the record


COUNTERS = {JobStatus.SUCCEEDED: "Succeeded", JobStatus.FAILED: "Failed", JobStatus.CANCELLED: "Cancelled"}


def new_record(batch: Batch) -> dict[str, str]:
    """The hash fields of a batch just accepted."""
    return {
        "spec": batch.model_dump_json(exclude_none=True),
        "Status": BatchStatus.LISTING.value,
        "Total": "0",
        "Succeeded": "0",
        "Failed": "0",
        "Cancelled": "0",
        "Fed": "0",
        "Sent": "0",
    }


def batch_of(fields: dict[Any, Any]) -> Batch | None:
    """The ``Batch`` a record's fields describe (None for a missing record). Pending is Total minus the
    jobs that ended, so it never goes up once the listing is done."""
    f = _decoded(fields)
    spec = f.get("spec")
    if not spec:
        return None
    base = Batch.model_validate_json(spec)
    total = _int(f.get("Total"))
    done = {name: _int(f.get(name)) for name in COUNTERS.values()}
    return base.model_copy(
        update={
            "Status": BatchStatus(f.get("Status") or BatchStatus.LISTING.value),
            "Total": total,
            **done,
            "Pending": max(total - sum(done.values()), 0),
            "FinishedAt": f.get("FinishedAt"),
        }
    )


def read_batch(r: redis.Redis, batch_id: str) -> Batch | None:
    return batch_of(r.hgetall(keys.batch(batch_id)))


# --------------------------------------------------------------------------- counting ends

# Ready to finalise: nothing open, and either cancelled or every listed object fed (or vanished). The first
# caller to see it claims Finalising; a cancelled batch's objects never fed count as cancelled.
_FINALISE_CHECK = """
local function finalise()
  if redis.call('HEXISTS', KEYS[1], 'Finalising') == 1 then return 1 end
  if redis.call('SCARD', KEYS[2]) > 0 then return 1 end
  local st = redis.call('HGET', KEYS[1], 'Status')
  local total = tonumber(redis.call('HGET', KEYS[1], 'Total') or '0')
  local fed = tonumber(redis.call('HGET', KEYS[1], 'Fed') or '0')
  local vanished = tonumber(redis.call('HGET', KEYS[1], 'Vanished') or '0')
  if st == 'Cancelled' then
    local never = total - fed - vanished
    if never > 0 then redis.call('HINCRBY', KEYS[1], 'Cancelled', never) end
  elseif st ~= 'Running' or fed + vanished < total then
    return 1
  end
  redis.call('HSET', KEYS[1], 'Finalising', '1')
  return 2
end
"""

_JOB_ENDED = (
    _FINALISE_CHECK
    + """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
if redis.call('SREM', KEYS[2], ARGV[1]) == 0 then return 0 end
redis.call('HINCRBY', KEYS[1], ARGV[2], 1)
return finalise()
"""
)

_MAYBE_FINALISE = (
    _FINALISE_CHECK
    + """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
return finalise()
"""
)

_CANCEL = """
local st = redis.call('HGET', KEYS[1], 'Status')
if not st then return 0 end
if st == 'Cancelled' then return 2 end
if st ~= 'Listing' and st ~= 'Running' then return 3 end
redis.call('HSET', KEYS[1], 'Status', 'Cancelled')
return 1
"""
"""0: no such batch; 1: cancelled now; 2: cancelled before; 3: already finished."""

_UNLOCK = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""

NOT_COUNTED, COUNTED, FINALISE = 0, 1, 2


def count_end(r: redis.Redis, job: Job) -> int:
    """Count a batch job's end once (NOT_COUNTED when it was counted before); FINALISE when this end
    completed the batch and the caller must send the finisher."""
    assert job.BatchId is not None
    field = COUNTERS.get(job.Status)
    if field is None:
        return NOT_COUNTED
    return int(r.eval(_JOB_ENDED, 2, keys.batch(job.BatchId), _open(job.BatchId), job.RequestId, field))


def claim_finalise(r: redis.Redis, batch_id: str) -> bool:
    return int(r.eval(_MAYBE_FINALISE, 2, keys.batch(batch_id), _open(batch_id))) == FINALISE


def cancel_status(r: redis.Redis, batch_id: str) -> int:
    """Mark the batch Cancelled (see ``_CANCEL`` for the answers). Any feeder run in progress then fails
    its compare-and-set and stops."""
    return int(r.eval(_CANCEL, 1, keys.batch(batch_id)))


# --------------------------------------------------------------------------- sending tasks


class Sender(Protocol):
    """How batch work leaves this process (Celery in production, a recorder in unit tests)."""

    def crop(self, message: CropTaskMessage) -> None: ...
    def feed(self, batch_id: str, countdown: float, heartbeat: bool) -> None: ...
    def finish(self, batch_id: str) -> None: ...
    def webhook(self, batch_id: str) -> None: ...


class CelerySender:
    def __init__(self, queue_name: str) -> None:
        self.queue = batch_queue(queue_name)

    def crop(self, message: CropTaskMessage) -> None:
        sending_app().send_task(
            CROP_TASK, args=[message.model_dump()], task_id=message.RequestId, queue=self.queue
        )

    def feed(self, batch_id: str, countdown: float, heartbeat: bool) -> None:
        sending_app().send_task(
            BATCH_FEED_TASK, args=[batch_id, heartbeat], queue=self.queue, countdown=countdown or None
        )

    def finish(self, batch_id: str) -> None:
        sending_app().send_task(BATCH_FINISH_TASK, args=[batch_id], queue=self.queue)

    def webhook(self, batch_id: str) -> None:
        sending_app().send_task(BATCH_WEBHOOK_TASK, args=[batch_id])


def wake(
    r: redis.Redis, sender: Sender, batch_id: str, countdown: float = 0.0, heartbeat: bool = False
) -> bool:
    """Send the feeder unless a message of the same kind already waits for the batch (the run clears its
    mark as it starts, so a change made after that start always gets a run of its own). The heartbeat is
    a separate kind, so a heartbeat waiting its countdown never delays a wake."""
    mark = _scheduled(batch_id, heartbeat)
    if not r.set(mark, 1, nx=True, ex=SCHEDULED_TTL_SECONDS + int(countdown)):
        return False
    try:
        sender.feed(batch_id, countdown, heartbeat)
    except Exception:
        r.delete(mark)
        raise
    return True


@lru_cache(maxsize=1)
def default_sender() -> CelerySender:
    return CelerySender(get_settings().queue_name)


def job_ended(r: redis.Redis, job: Job, feeder: BatchFeeder | None = None) -> None:
    """A job of a batch ended (Succeeded, Failed or Cancelled): count it once into its batch, then top the
    batch up from its look-ahead (a few Redis writes, no listing) or wake the feeder, or send the finisher
    when it was the batch's last. Never raises for the batch's sake: a count missed here is found by the
    feeder's reconcile."""
    if not job.BatchId:
        return
    try:
        feeder = feeder or feeder_for(get_settings(), r)
        outcome = count_end(r, job)
        if outcome == FINALISE:
            feeder.sender.finish(job.BatchId)
        elif outcome == COUNTED and not feeder.top_up(job.BatchId):
            wake(r, feeder.sender, job.BatchId)
    except Exception as e:
        log.warning("batch_count_deferred", batch_id=job.BatchId, request_id=job.RequestId, error=str(e))


# --------------------------------------------------------------------------- listing


Lister = Callable[[str, str, str | None], Iterator[str]]
"""(bucket, prefix, start_after) -> object keys in listing order, lazily, page by page."""


def split_prefix(uri: str) -> tuple[str, str]:
    """``oss://bucket/prefix`` (or s3://) -> (bucket, prefix)."""
    bucket, _, prefix = uri.split("://", 1)[1].partition("/")
    return bucket, prefix


def matches(key: str, suffixes: Sequence[str]) -> bool:
    if key.endswith("/"):
        return False  # a folder marker, never an image
    return not suffixes or key.lower().endswith(tuple(suffixes))


def minio_lister(client: Any) -> Lister:
    def listing(bucket: str, prefix: str, start_after: str | None) -> Iterator[str]:
        for obj in client.list_objects(bucket, prefix=prefix, recursive=True, start_after=start_after):
            if not obj.is_dir:
                yield str(obj.object_name)

    return listing


# --------------------------------------------------------------------------- the feeder


class Stale(Exception):
    """The batch moved on since this run read it (another run, or a cancel): this run's writes are void."""


@dataclass
class FeedResult:
    again_in: float | None
    """Seconds before the feeder should look again (0: at once), or None when the batch needs it no more."""


class BatchFeeder:
    """Every decision about one batch, given Redis, a lister and a sender (unit-tested with fakes)."""

    def __init__(
        self,
        r: redis.Redis,
        lister: Lister,
        sender: Sender,
        *,
        in_flight: int,
        ttl_seconds: int,
        queue_name: str,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.r = r
        self.lister = lister
        self.sender = sender
        self.in_flight = in_flight
        self.ttl = ttl_seconds
        self.queue_name = queue_name
        self.clock = clock

    # ---------------------------------------------------------------- entry points
    def run(self, batch_id: str, heartbeat: bool = False) -> FeedResult:
        """One feeder run: take the batch's lock, do what the batch needs now, say when to look again."""
        self.r.delete(_scheduled(batch_id, heartbeat))
        self.r.zadd(ACTIVE, {batch_id: time.time()}, xx=True)  # alive, even when a top-up holds the lock
        token = secrets.token_hex(8)
        if not self.r.set(_lock(batch_id), token, nx=True, px=LOCK_MS):
            return FeedResult(HEARTBEAT_SECONDS)  # another run holds it; look again soon in case it dies
        try:
            return self._step(batch_id)
        finally:
            self.r.eval(_UNLOCK, 1, _lock(batch_id), token)

    def top_up(self, batch_id: str) -> bool:
        """Feed a running batch from its look-ahead only, if no feeder run holds it; False when the feeder
        is needed (the look-ahead ran dry, the batch is busy or not running)."""
        token = secrets.token_hex(8)
        if not self.r.set(_lock(batch_id), token, nx=True, px=LOCK_MS):
            return False
        try:
            fields = self._fields(batch_id)
            if fields.get("Status") != BatchStatus.RUNNING.value:
                return False
            batch = batch_of(fields)
            assert batch is not None
            return self._feed(batch_id, batch, refill=False)
        except Stale:
            return False
        finally:
            self.r.eval(_UNLOCK, 1, _lock(batch_id), token)

    def _step(self, batch_id: str) -> FeedResult:
        key = keys.batch(batch_id)
        fields = _decoded(self.r.hgetall(key))
        batch = batch_of(fields)
        if batch is None:
            self.r.zrem(ACTIVE, batch_id)
            return FeedResult(None)
        if fields.get("FinishedAt"):
            self.r.zrem(ACTIVE, batch_id)
            return FeedResult(None)
        if fields.get("Finalising"):
            self.sender.finish(batch_id)  # idempotent; the finisher's message may have been lost
            return FeedResult(None)
        if self.reconcile(batch_id) and self.r.hexists(key, "Finalising"):
            return FeedResult(None)  # a reconciled end was the batch's last: the finisher was sent
        self._resend_unsent(batch_id, batch, fields)
        again: float | None = HEARTBEAT_SECONDS
        try:
            if batch.Status is BatchStatus.CANCELLED:
                self.cancel_queued(batch_id)
            elif batch.Status is BatchStatus.LISTING:
                if not self._list(batch_id, batch, fields) or not self._feed(batch_id, batch):
                    again = 0.0  # more listing to do: the next run comes at once, behind waiting jobs
            elif batch.Status is BatchStatus.RUNNING and not self._feed(batch_id, batch):
                again = 0.0  # the listing slice was spent before the look-ahead was refilled
        except Stale:
            again = 0.0
        if claim_finalise(self.r, batch_id):
            self.sender.finish(batch_id)
            return FeedResult(None)
        return FeedResult(again)

    # ---------------------------------------------------------------- phase 1
    def _list(self, batch_id: str, batch: Batch, fields: dict[str, str | None]) -> bool:
        """Count matching objects from ListCursor for about LIST_SLICE_SECONDS; True when the listing ended
        (the batch is Running then)."""
        bucket, prefix = split_prefix(batch.SourcePrefix)
        cursor = fields.get("ListCursor")
        total = _int(fields.get("Total"))
        end = fields.get("ListEnd")
        deadline = self.clock() + LIST_SLICE_SECONDS
        seen = counted = 0
        last: str | None = None
        for obj_key in self.lister(bucket, prefix, cursor):
            last, seen = obj_key, seen + 1
            if matches(obj_key, batch.Suffixes):
                counted += 1
                end = obj_key
            if seen >= COMMIT_EVERY:
                self._commit_listing(batch_id, cursor, last, total + counted, end, done=False)
                cursor, total, seen, counted = last, total + counted, 0, 0
                if self.clock() >= deadline:
                    return False
        self._commit_listing(batch_id, cursor, last or cursor, total + counted, end, done=True)
        log.info("batch_listed", batch_id=batch_id, total=total + counted)
        return True

    def _commit_listing(
        self, batch_id: str, expected: str | None, cursor: str | None, total: int, end: str | None, done: bool
    ) -> None:
        def write(pipe: Any, fields: dict[str, str | None]) -> None:
            if fields.get("ListCursor") != expected or fields.get("Status") != BatchStatus.LISTING.value:
                raise Stale(batch_id)
            mapping = {"Total": str(total)}
            if cursor is not None:
                mapping["ListCursor"] = cursor
            if end is not None:
                mapping["ListEnd"] = end
            if done:
                mapping["Status"] = BatchStatus.RUNNING.value
            pipe.hset(keys.batch(batch_id), mapping=mapping)

        self._cas(batch_id, write)

    # ---------------------------------------------------------------- phase 2
    def _feed(self, batch_id: str, batch: Batch, refill: bool = True) -> bool:
        """Record and send jobs until ``in_flight`` of them are open (or every listed object is fed),
        refilling the look-ahead from the listing when allowed; False when it ran dry unrefilled."""
        deadline = self.clock() + LIST_SLICE_SECONDS
        refilled = False
        while True:
            room = self.in_flight - int(self.r.scard(_open(batch_id)))
            if room <= 0:
                return True
            fields = self._fields(batch_id)
            fed, total = _int(fields.get("Fed")), _int(fields.get("Total"))
            if fed + _int(fields.get("Vanished")) >= total:
                return True
            if int(self.r.llen(_ahead(batch_id))) == 0:
                if fields.get("FeedDone"):
                    return True
                if not refill or (refilled and self.clock() >= deadline) or not self._refill(batch_id, batch):
                    return False
                refilled = True
                continue
            self._record(batch_id, batch, room)

    def _refill(self, batch_id: str, batch: Batch) -> bool:
        """Read up to one page of the listing from FeedCursor into the look-ahead list; False when there is
        nothing left to read."""
        fields = self._fields(batch_id)
        cursor, end = fields.get("FeedCursor"), fields.get("ListEnd")
        wanted = _int(fields.get("Total")) - _int(fields.get("Fed")) - _int(fields.get("Vanished"))
        bucket, prefix = split_prefix(batch.SourcePrefix)
        taken: list[str] = []
        last: str | None = None
        exhausted = True
        if end is not None and wanted > 0:
            for seen, obj_key in enumerate(self.lister(bucket, prefix, cursor), start=1):
                if obj_key > end:
                    break
                last = obj_key
                if matches(obj_key, batch.Suffixes):
                    taken.append(obj_key)
                    if len(taken) >= wanted:
                        break
                if seen >= LOOKAHEAD_OBJECTS:
                    exhausted = obj_key == end
                    break
        vanished = max(wanted - len(taken), 0) if exhausted else 0
        progressed = bool(taken) or (last is not None and not exhausted)

        def write(pipe: Any, now: dict[str, str | None]) -> None:
            if now.get("FeedCursor") != cursor or now.get("Status") != BatchStatus.RUNNING.value:
                raise Stale(batch_id)
            mapping: dict[str, str] = {}
            if last is not None:
                mapping["FeedCursor"] = last
            if exhausted or len(taken) >= wanted:
                mapping["FeedDone"] = "1"
            if vanished:
                # Listed in phase 1, gone by now: counted Failed so that the counts stay exact.
                mapping["Vanished"] = str(vanished)
                pipe.hincrby(keys.batch(batch_id), "Failed", vanished)
            if taken:
                pipe.rpush(_ahead(batch_id), *taken)
                pipe.expire(_ahead(batch_id), self.ttl)
            if mapping:
                pipe.hset(keys.batch(batch_id), mapping=mapping)

        self._cas(batch_id, write)
        if vanished:
            log.warning("batch_objects_vanished", batch_id=batch_id, count=vanished)
        return progressed

    def _record(self, batch_id: str, batch: Batch, room: int) -> None:
        """Turn up to ``room`` look-ahead keys into job records (one MULTI with the Fed count), then send
        their messages."""
        bucket, _ = split_prefix(batch.SourcePrefix)
        scheme = batch.SourcePrefix.split("://", 1)[0]
        messages: list[CropTaskMessage] = []

        def write(pipe: Any, now: dict[str, str | None]) -> None:
            if now.get("Status") != BatchStatus.RUNNING.value:
                raise Stale(batch_id)
            fed = _int(now.get("Fed"))
            room_left = min(room, _int(now.get("Total")) - fed - _int(now.get("Vanished")))
            object_keys = (
                [_text(k) or "" for k in pipe.lrange(_ahead(batch_id), 0, room_left - 1)]
                if room_left > 0
                else []
            )
            messages.clear()
            pipe.multi()
            if not object_keys:
                return
            pipe.ltrim(_ahead(batch_id), len(object_keys), -1)
            created = utcnow_iso()
            seen_at = time.time()
            for i, obj_key in enumerate(object_keys, start=fed + 1):
                rid = job_request_id(batch_id, i)
                job = Job(
                    RequestId=rid,
                    ProjectName=batch.ProjectName,
                    Status=JobStatus.QUEUED,
                    BatchId=batch_id,
                    SourceURI=f"{scheme}://{bucket}/{obj_key}",
                    AspectRatios=batch.AspectRatios,
                    InclusionHints=batch.InclusionHints,
                    Render=batch.Render,
                    CreatedAt=created,
                )
                pipe.set(keys.job(rid), job.model_dump_json(exclude_none=True), ex=self.ttl, nx=True)
                index_new_job(pipe, job, self.ttl)
                pipe.zadd(keys.open_jobs(self.queue_name), {rid: seen_at})  # worker/orphans.py
                pipe.sadd(_open(batch_id), rid)
                messages.append(
                    CropTaskMessage(
                        RequestId=rid,
                        ProjectName=batch.ProjectName,
                        Bucket=bucket,
                        Key=obj_key,
                        AspectRatios=batch.AspectRatios,
                        InclusionHints=batch.InclusionHints,
                        Render=batch.Render,
                    )
                )
            pipe.expire(_open(batch_id), self.ttl)
            pipe.hset(keys.batch(batch_id), "Fed", str(fed + len(object_keys)))

        self._cas(batch_id, write, watch_ahead=True, queued=True)
        for message in messages:
            self.sender.crop(message)
        if messages:
            last = int(messages[-1].RequestId.rsplit("-", 1)[1])
            self.r.hset(keys.batch(batch_id), "Sent", str(last))

    def _resend_unsent(self, batch_id: str, batch: Batch, fields: dict[str, str | None]) -> None:
        """Jobs recorded by a run that died before sending them: sent now (a duplicate is harmless)."""
        sent, fed = _int(fields.get("Sent")), _int(fields.get("Fed"))
        if sent >= fed:
            return
        from worker.orphans import message_of  # the sweeper module imports this one

        rids = [job_request_id(batch_id, n) for n in range(sent + 1, fed + 1)]
        for raw in self.r.mget([keys.job(rid) for rid in rids]):
            if raw is not None:
                job = Job.model_validate_json(raw)
                if not job.Status.finished:
                    self.sender.crop(message_of(job))
        self.r.hset(keys.batch(batch_id), "Sent", str(fed))
        log.warning("batch_jobs_sent_again", batch_id=batch_id, count=len(rids))

    # ---------------------------------------------------------------- ends and cancels
    def reconcile(self, batch_id: str) -> int:
        """Count the open jobs that ended without being counted (their worker died between the two writes,
        or their record is gone); returns how many."""
        rids = [_text(m) or "" for m in self.r.smembers(_open(batch_id))]
        found = 0
        for rid, raw in zip(rids, self.r.mget([keys.job(rid) for rid in rids]) if rids else [], strict=True):
            if raw is None:
                job = _gone(batch_id, rid)
            else:
                job = Job.model_validate_json(raw)
                if not job.Status.finished:
                    continue
            outcome = count_end(self.r, job)
            if outcome != NOT_COUNTED:
                found += 1
                if outcome == FINALISE:
                    self.sender.finish(batch_id)
        if found:
            log.warning("batch_ends_reconciled", batch_id=batch_id, count=found)
        return found

    def cancel_queued(self, batch_id: str) -> int:
        """Cancel every open job of the batch still Queued (a running one ends by itself) and take their
        messages off the batch queue; returns how many were cancelled."""
        return cancel_queued_jobs(self.r, batch_id, self.queue_name)

    # ---------------------------------------------------------------- helpers
    def _fields(self, batch_id: str) -> dict[str, str | None]:
        return _decoded(self.r.hgetall(keys.batch(batch_id)))

    def _cas(
        self,
        batch_id: str,
        write: Callable[[Any, dict[str, str | None]], None],
        *,
        watch_ahead: bool = False,
        queued: bool = False,
    ) -> None:
        """Run ``write`` against the batch's current fields inside WATCH/MULTI, again on every conflict;
        ``write`` raises Stale when the batch moved on. ``queued``: ``write`` calls ``pipe.multi()``
        itself (after its own reads)."""
        key = keys.batch(batch_id)
        watched = [key, _ahead(batch_id)] if watch_ahead else [key]
        with self.r.pipeline() as pipe:
            while True:
                try:
                    pipe.watch(*watched)  # type: ignore[no-untyped-call]
                    fields = _decoded(pipe.hgetall(key))
                    if not fields.get("spec"):
                        raise Stale(batch_id)
                    if not queued:
                        pipe.multi()
                    write(pipe, fields)
                    pipe.execute()
                    return
                except redis.WatchError:
                    continue


def _gone(batch_id: str, rid: str) -> Job:
    """Stands for an open job whose record is gone (expired or deleted): counted Failed."""
    return Job(
        RequestId=rid,
        ProjectName="",
        Status=JobStatus.FAILED,
        BatchId=batch_id,
        SourceURI="",
        AspectRatios=[],
        CreatedAt=utcnow_iso(),
    )


def queued_messages(r: redis.Redis, queue: str) -> Iterator[tuple[str, bytes | str]]:
    """(task id, raw message) of every message waiting in ``queue``'s Redis list(s). The batch queue holds
    at most ``batch_in_flight`` messages per running batch, so reading it whole is cheap."""
    from worker.orphans import queue_lists

    for name in queue_lists(queue):
        start = 0
        while True:
            chunk = r.lrange(name, start, start + 999)
            if not chunk:
                break
            for raw in chunk:
                try:
                    task_id = json.loads(raw)["headers"]["id"]
                except (ValueError, KeyError, TypeError):
                    continue
                yield str(task_id), raw
            start += len(chunk)


def drop_queued_messages(r: redis.Redis, queue: str, request_ids: Iterable[str]) -> int:
    """Take the messages of ``request_ids`` off ``queue`` (a worker that took one meanwhile finds its job
    finished and does nothing)."""
    from worker.orphans import queue_lists

    wanted = set(request_ids)
    found = [raw for task_id, raw in queued_messages(r, queue) if task_id in wanted]
    removed = 0
    for raw in found:
        for name in queue_lists(queue):
            removed += int(r.lrem(name, 1, raw))  # type: ignore[arg-type]
    return removed


def cancel_queued_jobs(r: redis.Redis, batch_id: str, queue_name: str) -> int:
    """Cancel the batch's open jobs that are still Queued (each counted into the batch), and take their
    messages off the batch queue."""
    from worker.job_lifecycle import JobAlreadyFinished, cancel_job
    from worker.jobstore import JobNotFound

    rids = [_text(m) or "" for m in r.smembers(_open(batch_id))]
    cancelled = []
    for rid, raw in zip(rids, r.mget([keys.job(rid) for rid in rids]) if rids else [], strict=True):
        if raw is None or Job.model_validate_json(raw).Status is not JobStatus.QUEUED:
            continue
        try:
            cancel_job(r, rid, queue_name, CANCEL_REASON)  # counts it into the batch (job_ended)
        except (JobAlreadyFinished, JobNotFound):
            continue  # it ended meanwhile; its own end counts it
        cancelled.append(rid)
    if cancelled:
        drop_queued_messages(r, batch_queue(queue_name), cancelled)
        log.info("batch_jobs_cancelled", batch_id=batch_id, count=len(cancelled))
    return len(cancelled)


# --------------------------------------------------------------------------- the finisher


ManifestWriter = Callable[[str, str, IO[bytes], int], None]
"""(bucket, key, file, length): store the manifest."""


def manifest_line(job: Job | None, rid: str | None) -> dict[str, Any]:
    if job is None:
        return {
            "RequestId": rid,
            "Status": "Failed",
            "Code": "ResourceNotFound",
            "Message": "Job record gone.",
        }
    line: dict[str, Any] = {
        "SourceURI": job.SourceURI,
        "RequestId": job.RequestId,
        "Status": job.Status.value,
    }
    if job.Status is JobStatus.SUCCEEDED:
        line["Croppings"] = [c.model_dump(exclude_none=True) for c in job.Croppings or []]
    else:
        line["Code"], line["Message"] = job.Code, job.Message
    return line


def write_manifest(r: redis.Redis, batch: Batch, fed: int, vanished: int, out: IO[bytes]) -> int:
    """One JSON line per object, in listing order, read ``MANIFEST_CHUNK`` records at a time; returns the
    lines written."""
    lines = 0
    for start in range(1, fed + 1, MANIFEST_CHUNK):
        rids = [job_request_id(batch.BatchId, n) for n in range(start, min(start + MANIFEST_CHUNK, fed + 1))]
        for rid, raw in zip(rids, r.mget([keys.job(rid) for rid in rids]), strict=True):
            job = None if raw is None else Job.model_validate_json(raw)
            out.write(json.dumps(manifest_line(job, rid), separators=(",", ":")).encode() + b"\n")
            lines += 1
    gone = {"Status": "Failed", "Code": "ResourceNotFound", "Message": "Deleted before its job was made."}
    for _ in range(vanished):
        out.write(json.dumps({"SourceURI": None, "RequestId": None, **gone}).encode() + b"\n")
        lines += 1
    return lines


def final_status(batch: Batch, cancelled: bool) -> BatchStatus:
    if cancelled:
        return BatchStatus.CANCELLED
    return BatchStatus.SUCCEEDED if batch.Succeeded == batch.Total else BatchStatus.PARTIALLY_FAILED


def finish_batch(r: redis.Redis, batch_id: str, put: ManifestWriter, sender: Sender) -> Batch | None:
    """Write the manifest, set the final status, send the callback once. Safe to run again: the manifest
    is overwritten with the same lines and the callback is claimed by a marker."""
    key = keys.batch(batch_id)
    fields = _decoded(r.hgetall(key))
    batch = batch_of(fields)
    if batch is None or not fields.get("Finalising"):
        return batch
    if not fields.get("FinishedAt"):
        if batch.ManifestURI:
            bucket, manifest_key = split_prefix(batch.ManifestURI)
            with tempfile.SpooledTemporaryFile(max_size=MANIFEST_SPOOL_BYTES) as spool:
                lines = write_manifest(r, batch, _int(fields.get("Fed")), _int(fields.get("Vanished")), spool)
                length = spool.tell()
                spool.seek(0)
                put(bucket, manifest_key, spool, length)
            log.info("batch_manifest_written", batch_id=batch_id, lines=lines, bytes=length)
        status = final_status(batch, batch.Status is BatchStatus.CANCELLED)
        r.hset(key, mapping={"Status": status.value, "FinishedAt": utcnow_iso()})
        r.zrem(ACTIVE, batch_id)
        r.delete(*side_keys(batch_id))
        log.info("batch_finished", batch_id=batch_id, status=status.value, total=batch.Total)
        batch = read_batch(r, batch_id)
        assert batch is not None
    if batch.CallbackURL and r.hsetnx(key, "CallbackQueued", "1"):
        try:
            sender.webhook(batch_id)
        except Exception:
            r.hdel(key, "CallbackQueued")
            raise
    return batch


# --------------------------------------------------------------------------- the sweeper's part


def revive_stalled(r: redis.Redis, sender: Sender, now: float) -> list[str]:
    """Send the feeder of every unfinished batch whose feeder showed no life for STALL_SECONDS (its message
    was lost with a worker, or never sent)."""
    found: list[str | bytes] = r.zrangebyscore(ACTIVE, "-inf", now - STALL_SECONDS, start=0, num=100)  # type: ignore[assignment]
    stalled = [_text(b) or "" for b in found]
    for batch_id in stalled:
        r.delete(_scheduled(batch_id), _scheduled(batch_id, True))
        wake(r, sender, batch_id)
        r.zadd(ACTIVE, {batch_id: now})
        log.warning("batch_feeder_revived", batch_id=batch_id)
    return stalled


# --------------------------------------------------------------------------- wiring (tasks: batch_tasks.py)


@lru_cache(maxsize=1)
def redis_connection() -> redis.Redis:
    from worker.jobstore import connect

    return connect(get_settings().redis_url)


@lru_cache(maxsize=1)
def minio_client() -> Any:
    from worker.storage import S3Storage

    return S3Storage(get_settings()).client


def _lister(bucket: str, prefix: str, start_after: str | None) -> Iterator[str]:
    return minio_lister(minio_client())(
        bucket, prefix, start_after
    )  # the S3 client only where a listing runs


def feeder_for(settings: Settings, r: redis.Redis | None = None) -> BatchFeeder:
    return BatchFeeder(
        r or redis_connection(),
        _lister,
        default_sender(),
        in_flight=settings.batch_in_flight,
        ttl_seconds=settings.result_ttl_seconds,
        queue_name=settings.queue_name,
    )

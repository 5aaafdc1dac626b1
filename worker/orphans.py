"""Orphaned jobs: open in their record, held by no worker, waiting in no queue. Put back on the queue.

Leases and the visibility timeout recover every message that sits in kombu's unacked hash. A few paths lose
the message itself while its job stays open: kombu's consumer pops a message and records it as unacked in
two separate commands (a worker process dying between them drops it), and a fenced stale run's late
acknowledgement removes the unacked entry of the message that was handed on. Sidekiq answers the same gap
with an orphan check; this is ours.

Every open job has an entry in ``cropq:open:<queue>`` scored by its last sign of life: the API adds it when
it accepts the job, the lease keeper refreshes it while a worker holds the job's message, and the run that
finishes the job removes it. A sweeper in every worker (one at a time per queue, under a Redis lock) looks
only when the queue is empty, so no job waiting in a backlog is ever taken for lost: a job whose entry is
older than twice the visibility timeout (plus a margin) on two sweeps in a row, with its score unchanged,
is sent again under its RequestId. Should it be alive after all, the duplicate run is fenced by attempt
numbers or finds the job finished, and stores nothing twice.

Jobs of prefix batches share the index and wait in the batch queue (``<queue>.batch``), which an interactive
backlog may hold up for long: a stale batch job whose message still waits there is not lost (that queue
holds at most ``batch_in_flight`` messages per batch, so it is read whole), and a lost one is sent again to
the batch queue. The same loop revives batches whose feeder message was lost (worker/batches.py).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import redis
import structlog
from celery import Celery
from celery.signals import worker_shutdown

from worker import keys
from worker.contracts import CropTaskMessage, Job, batch_queue
from worker.jobstore import JobNotFound, JobStore, connect

log = structlog.get_logger("cropq.orphans")

MARGIN_SECONDS = 5.0
BATCH = 100
MAX_RESENDS = 3
"""A job lost this many times is not lost by chance: the next sweep ends it ``Failed`` instead."""


def orphan_after(visibility_timeout: float) -> float:
    """An open job is suspect after this long without a sign of life: twice the time a lost worker's
    message takes to come back by itself, plus a margin."""
    return 2 * visibility_timeout + MARGIN_SECONDS


KOMBU_PRIORITY_SEP = "\x06\x16"
KOMBU_PRIORITY_STEPS = (3, 6, 9)


def queue_lists(queue: str) -> list[str]:
    """The Redis lists kombu keeps for ``queue``: the queue itself and one per priority step."""
    return [queue, *(f"{queue}{KOMBU_PRIORITY_SEP}{p}" for p in KOMBU_PRIORITY_STEPS)]


def message_of(job: Job) -> CropTaskMessage:
    """The crop task's message, rebuilt from the job record (it holds everything the message carried)."""
    if job.SourceURI.startswith(("http://", "https://")):
        bucket, key, url = "", "", job.SourceURI
    else:
        bucket, _, key = job.SourceURI.split("://", 1)[1].partition("/")
        url = None
    return CropTaskMessage(
        RequestId=job.RequestId,
        ProjectName=job.ProjectName,
        Bucket=bucket,
        Key=key,
        SourceURL=url,
        AspectRatios=job.AspectRatios,
        InclusionHints=job.InclusionHints,
        Render=job.Render,
    )


class OrphanSweeper:
    def __init__(
        self,
        store: JobStore,
        queue: str,
        visibility_timeout: float,
        resend: Callable[[CropTaskMessage], None],
        give_up: Callable[[Job, str], None],
        resend_batch: Callable[[CropTaskMessage], None] | None = None,
    ) -> None:
        self.store = store
        self.queue = queue
        self.stale_after = orphan_after(visibility_timeout)
        self.resend = resend
        self.resend_batch = resend_batch or resend
        self.give_up = give_up
        self._suspects: dict[str, float] = {}

    def _waiting_batch_jobs(self) -> set[str]:
        from worker.batches import queued_messages  # that module imports this one

        return {task_id for task_id, _ in queued_messages(self.store.r, batch_queue(self.queue))}

    def sweep(self, now: float) -> list[str]:
        """One look; returns the RequestIds sent again."""
        r = self.store.r
        index = keys.open_jobs(self.queue)
        if r.llen(self.queue) > 0:
            self._suspects = {}  # a backlog: old entries may simply be waiting their turn
            return []
        stale: list[tuple[bytes | str, float]] = r.zrangebyscore(  # type: ignore[assignment]
            index, "-inf", now - self.stale_after, start=0, num=BATCH, withscores=True
        )
        suspects: dict[str, float] = {}
        resent = []
        waiting: set[str] | None = None  # batch jobs whose message waits in the batch queue, read once
        for member, score in stale:
            rid = member.decode() if isinstance(member, bytes) else str(member)
            if self._suspects.get(rid) != score:
                suspects[rid] = score  # first sighting: look again next sweep
                continue
            try:
                job = self.store.get(rid)
            except JobNotFound:
                r.zrem(index, rid)  # expired or withdrawn
                continue
            if job.Status.finished:
                r.zrem(index, rid)  # its finisher could not remove it
                continue
            if job.BatchId:
                waiting = self._waiting_batch_jobs() if waiting is None else waiting
                if rid in waiting:
                    continue  # not lost: waiting its turn behind interactive jobs
            times = int(r.incr(keys.job_resent(rid)))
            r.expire(keys.job_resent(rid), self.store.ttl)
            if times > MAX_RESENDS:
                log.error("orphaned_job_given_up", request_id=rid, resends=times - 1)
                self.give_up(
                    job, f"The job was lost {times - 1} times after it was accepted; it was given up."
                )
                r.zrem(index, rid)
                continue
            # The new sign of life goes in before the message goes out: a resent job can run and finish (and
            # leave the index) before this thread writes again, and must not be put back after its end.
            r.zadd(index, {rid: now})
            (self.resend_batch if job.BatchId else self.resend)(message_of(job))
            resent.append(rid)
            log.warning("orphaned_job_sent_again", request_id=rid, status=job.Status.value, resends=times)
        self._suspects = suspects
        return resent


LostJobFailer = Callable[[JobStore, Job, str], None]
"""Ends a job whose message keeps vanishing, callback included (the crop task module's ``fail_lost_job``)."""


def _run(app: Celery, stop: threading.Event, fail_lost: LostJobFailer) -> None:
    from worker.contracts import CROP_TASK
    from worker.settings import get_settings

    s = get_settings()
    store = JobStore(connect(s.redis_url), s.result_ttl_seconds)
    interval = max(s.visibility_timeout / 2, 1.0)

    def resend(msg: CropTaskMessage) -> None:
        app.send_task(CROP_TASK, args=[msg.model_dump()], task_id=msg.RequestId, queue=s.queue_name)

    def resend_batch(msg: CropTaskMessage) -> None:
        app.send_task(
            CROP_TASK, args=[msg.model_dump()], task_id=msg.RequestId, queue=batch_queue(s.queue_name)
        )

    def give_up(job: Job, reason: str) -> None:
        fail_lost(store, job, reason)

    from worker.batches import CelerySender, revive_stalled

    sweeper = OrphanSweeper(store, s.queue_name, s.visibility_timeout, resend, give_up, resend_batch)
    batch_sender = CelerySender(s.queue_name)
    lock = keys.orphan_sweep_lock(s.queue_name)
    while not stop.wait(interval):
        try:
            # One sweeper per queue at a time; the lock lapses by itself if its holder dies.
            if store.r.set(lock, 1, nx=True, px=int(interval * 1000 * 0.9)):
                sweeper.sweep(time.time())
                revive_stalled(store.r, batch_sender, time.time())
        except (redis.RedisError, OSError) as e:
            log.debug("orphan_sweep_failed", error=type(e).__name__)
        except Exception:  # never let the thread die: it is the last line of defence
            log.exception("orphan_sweep_crashed")


_stop = threading.Event()


def start(sender: Any, fail_lost: LostJobFailer) -> None:
    """Start the sweeper thread in a crop worker; called on ``worker_ready`` by the crop task module, which
    knows how a lost job is failed (so this module, which the API reaches, never imports the engine side)."""
    app = getattr(sender, "app", None)
    if app is None:
        return
    threading.Thread(target=_run, args=(app, _stop, fail_lost), name="cropq-orphans", daemon=True).start()


@worker_shutdown.connect
def _shutdown(**_: Any) -> None:
    _stop.set()

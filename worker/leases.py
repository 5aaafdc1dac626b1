"""Leases on the messages a worker holds, so a lost worker's jobs come back in seconds, not half an hour.

Kombu's Redis transport keeps every delivered, unacknowledged message in a hash (``unacked``) and its delivery
time in a sorted set (``unacked_index``); any worker puts a message whose time is older than the visibility
timeout back on its queue. Alone that forces a choice: a long timeout (a dead host's jobs wait for it) or a
short one (a long job, or a retry waiting for its countdown, is handed out twice). A lease removes the choice,
as Sidekiq's reliable fetch does with its heartbeats:

- renew: every quarter of the visibility timeout, the worker's main process moves the index time of every
  message it still holds (running, prefetched or waiting for a retry countdown) to now, so only messages of a
  worker that stopped renewing (host gone, network cut, process frozen) ever become visible again;
- release: a message the worker stopped holding without acknowledging it is put back on its queue at once.
  That happens when the broker connection drops: Celery forgets its prefetched and countdown messages (their
  delivery tags belong to the dead connection) and would otherwise leave them for the visibility timeout.
  An acknowledged message is no longer in the hash, so putting it back is a no-op; one whose acknowledgement
  failed with the connection is put back and its rerun finds the job finished.

The keeper runs in a thread of the worker's main process over its own broker connection (kombu's, so a
Sentinel URL works the same), and talks to Redis only through kombu's own QoS code.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any, Protocol

import redis
import structlog
from celery import Celery
from celery.signals import task_received, worker_ready, worker_shutdown

from worker import keys

log = structlog.get_logger("cropq.leases")

RENEWALS_PER_TIMEOUT = 4
"""Renewals per visibility timeout: a renewal may fail or come late three times before a message expires."""

RELEASE_GRACE_SECONDS = 2.0
"""How long a message that left the worker's hands may take to be acknowledged before it counts as dropped."""

TICK_SECONDS = 0.5


class UnackedIndex(Protocol):
    """What the keeper needs from the broker: the transport's unacked bookkeeping."""

    def renew(self, tags: Iterable[str], now: float) -> None: ...
    def touch_jobs(self, request_ids: Iterable[str], now: float) -> None: ...
    def unacked_since(self, tag: str) -> float | None: ...
    def restore(self, tag: str) -> None: ...


class LeaseKeeper:
    """The decisions, free of threads and connections (unit-tested with a fake index)."""

    def __init__(self, index: UnackedIndex, visibility_timeout: float) -> None:
        self.index = index
        self.renew_every = max(visibility_timeout / RENEWALS_PER_TIMEOUT, TICK_SECONDS)
        self._held: set[str] = set()
        self._released: dict[str, float] = {}  # tag -> when it left our hands
        self._seen: dict[str, float] = {}  # tag -> the last time it was ours (held, received or renewed)
        self._next_renewal = 0.0

    def tick(
        self, held: set[str], now: float, jobs: Iterable[str] = (), received: Iterable[str] = ()
    ) -> list[str]:
        """Renew what is held (when due) and put back what was dropped; returns the tags put back. ``jobs``:
        the crop jobs among the held messages, whose sign of life the orphan sweeper reads is refreshed
        with each renewal. ``received``: tags delivered since the last tick, so a message dropped before a
        tick ever saw it held still counts as ours."""
        received = set(received)
        for tag in (self._held | received) - held:
            self._released.setdefault(tag, now)
        for tag in held & self._released.keys():
            del self._released[tag]  # back in our hands (e.g. a countdown message became a running task)
        for tag in held | received:
            self._seen[tag] = now
        self._held = held
        if held and now >= self._next_renewal:
            self.index.renew(sorted(held), now)
            self.index.touch_jobs(sorted(jobs), now)
            self._next_renewal = now + self.renew_every
        restored = []
        for tag, since in list(self._released.items()):
            if now - since < RELEASE_GRACE_SECONDS:
                continue
            delivered_at = self.index.unacked_since(tag)
            # Still unacknowledged, and not delivered (or renewed) since it was ours: a message requeued
            # and taken by another worker keeps its delivery tag, and is that worker's now.
            if delivered_at is not None and delivered_at <= self._seen.get(tag, now):
                self.index.restore(tag)
                restored.append(tag)
            del self._released[tag]
            self._seen.pop(tag, None)
        return restored


def held_messages() -> dict[str, str | None]:
    """The messages this worker process holds (running, prefetched, or scheduled for a countdown): delivery
    tag -> RequestId for crop jobs, None for other tasks. Celery's request sets are changed by the main
    thread while we copy them, hence the retry."""
    from celery.worker import state

    from worker.contracts import CROP_TASK

    for _ in range(5):
        try:
            requests = [
                *tuple(state.active_requests),
                *tuple(state.reserved_requests),
                *tuple(getattr(state, "scheduled_requests", ())),  # Celery 5.5+
            ]
            break
        except RuntimeError:  # "set changed size during iteration"
            time.sleep(0.01)
    else:
        return {}
    held: dict[str, str | None] = {}
    for request in requests:
        tag = getattr(request.message, "delivery_tag", None)
        if tag:
            held[str(tag)] = str(request.id) if request.name == CROP_TASK else None
    return held


_received: list[str] = []
_received_lock = threading.Lock()


@task_received.connect
def _on_received(request: Any = None, **_: Any) -> None:
    tag = getattr(getattr(request, "message", None), "delivery_tag", None)
    if tag:
        with _received_lock:
            _received.append(str(tag))


def drain_received() -> list[str]:
    """Delivery tags of the messages received since the last call (from Celery's task_received signal)."""
    with _received_lock:
        tags = list(_received)
        _received.clear()
    return tags


class KombuUnackedIndex:
    """The Redis transport's unacked hash and index, through a broker connection of our own."""

    def __init__(self, app: Celery, queue: str) -> None:
        self.app = app
        self.queue = queue
        self._conn: Any = None

    def _channel(self) -> Any:
        if self._conn is None:
            self._conn = self.app.connection_for_write()
            self._conn.ensure_connection(max_retries=1)
        return self._conn.default_channel

    def reset(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(Exception):  # a dead connection may fail to close; it is dropped anyway
                conn.release()

    def renew(self, tags: Iterable[str], now: float) -> None:
        channel = self._channel()
        # XX: never re-add a message that was acknowledged or put back meanwhile.
        channel.client.zadd(channel.unacked_index_key, dict.fromkeys(tags, now), xx=True)

    def touch_jobs(self, request_ids: Iterable[str], now: float) -> None:
        rids = list(request_ids)
        if rids:  # XX: a job that finished meanwhile stays out of the index
            self._channel().client.zadd(keys.open_jobs(self.queue), dict.fromkeys(rids, now), xx=True)

    def unacked_since(self, tag: str) -> float | None:
        """When the message was delivered or last renewed, if it is still unacknowledged."""
        channel = self._channel()
        score = channel.client.zscore(channel.unacked_index_key, tag)
        return None if score is None else float(score)

    def restore(self, tag: str) -> None:
        self._channel().qos.restore_by_tag(tag)  # to the head of its queue (kombu consumes from the right)


def _run(app: Celery, stop: threading.Event, held: Callable[[], dict[str, str | None]]) -> None:
    index = KombuUnackedIndex(app, str(app.conf.task_default_queue))
    keeper = LeaseKeeper(index, float(app.conf.broker_transport_options["visibility_timeout"]))
    while not stop.wait(TICK_SECONDS):
        try:
            received = drain_received()
            messages = held()
            jobs = [rid for rid in messages.values() if rid]
            for tag in keeper.tick(set(messages), time.time(), jobs, received):
                log.info("message_released_put_back", delivery_tag=tag)
        except Exception as e:  # broker down: keep the state, try again next tick on a new connection
            log.debug("lease_tick_failed", error=type(e).__name__)
            index.reset()
    index.reset()


def _dead_channels_raise_connection_errors() -> None:
    """Keep a Redis restart from killing the worker.

    On a lost connection Celery 5.7 collects the kombu transport and closes the connection; the channel
    the old messages were delivered on is then dead (no connection, or a transport without a client). Any
    later use of it: kombu restoring the held messages as the channel closes, acknowledging a job that
    finished after the reconnect, or requeueing one whose child was killed: died on an AttributeError
    ("'NoneType' object has no attribute 'hostname'" / "'client'") that no one catches, ending the worker.
    Raising a connection error instead lets Celery and kombu log it and go on, as they do for any broker
    error; the message stays unacknowledged in Redis, and the lease keeper puts it back on its queue (a
    rerun of a finished job stores nothing).
    """
    from kombu.transport import redis as kombu_redis

    original = kombu_redis.Channel.conn_or_acquire
    if getattr(original, "_cropq_guarded", False):
        return

    @contextlib.contextmanager
    def conn_or_acquire(self: Any, client: Any = None) -> Iterator[Any]:
        if client is None and getattr(self.connection, "client", None) is None:
            raise redis.ConnectionError("this broker channel died with its connection (Redis went away)")
        with original(self, client) as conn:
            yield conn

    conn_or_acquire._cropq_guarded = True  # type: ignore[attr-defined]
    kombu_redis.Channel.conn_or_acquire = conn_or_acquire  # type: ignore[method-assign]


_dead_channels_raise_connection_errors()
_stop = threading.Event()


@worker_ready.connect
def _start(sender: Any = None, **_: Any) -> None:
    app = getattr(sender, "app", None)
    if app is None or not app.conf.broker_url.startswith(("redis", "sentinel")):
        return
    threading.Thread(target=_run, args=(app, _stop, held_messages), name="cropq-leases", daemon=True).start()


@worker_shutdown.connect
def _shutdown(**_: Any) -> None:
    _stop.set()

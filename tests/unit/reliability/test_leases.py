"""The lease keeper's decisions, with a fake unacked index (the Redis side is kombu's own code)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterable

from worker.leases import RELEASE_GRACE_SECONDS, LeaseKeeper


class FakeIndex:
    def __init__(self) -> None:
        self.unacked: dict[str, float] = {}
        self.renewals: list[tuple[list[str], float]] = []
        self.restored: list[str] = []
        self.touched: list[tuple[list[str], float]] = []

    def deliver(self, tag: str, at: float) -> None:
        self.unacked[tag] = at

    def ack(self, tag: str) -> None:
        self.unacked.pop(tag, None)

    def renew(self, tags: Iterable[str], now: float) -> None:
        tags = list(tags)
        self.renewals.append((tags, now))
        for tag in tags:
            if tag in self.unacked:  # ZADD XX
                self.unacked[tag] = now

    def touch_jobs(self, request_ids: Iterable[str], now: float) -> None:
        self.touched.append((list(request_ids), now))

    def unacked_since(self, tag: str) -> float | None:
        return self.unacked.get(tag)

    def restore(self, tag: str) -> None:
        self.restored.append(tag)
        self.unacked.pop(tag)


def test_held_messages_are_renewed_four_times_per_visibility_timeout() -> None:
    index = FakeIndex()
    keeper = LeaseKeeper(index, visibility_timeout=60)
    index.deliver("a", 0.0)
    for second in range(0, 61):
        keeper.tick({"a"}, float(second))
    assert [at for _, at in index.renewals] == [0.0, 15.0, 30.0, 45.0, 60.0]
    assert index.unacked["a"] == 60.0  # never older than a quarter of the timeout: never handed out


def test_nothing_is_renewed_or_restored_when_nothing_is_held() -> None:
    index = FakeIndex()
    keeper = LeaseKeeper(index, visibility_timeout=60)
    for second in range(10):
        assert keeper.tick(set(), float(second)) == []
    assert index.renewals == [] and index.restored == []


def test_an_acknowledged_message_is_not_put_back() -> None:
    index = FakeIndex()
    keeper = LeaseKeeper(index, visibility_timeout=60)
    index.deliver("a", 0.0)
    keeper.tick({"a"}, 0.0)
    index.ack("a")
    keeper.tick(set(), 1.0)
    assert keeper.tick(set(), 1.0 + RELEASE_GRACE_SECONDS + 0.1) == []
    assert index.restored == []


def test_a_dropped_message_is_put_back_after_the_grace_period() -> None:
    # The connection dropped: Celery forgot its prefetched message, which stays unacknowledged in Redis.
    index = FakeIndex()
    keeper = LeaseKeeper(index, visibility_timeout=60)
    index.deliver("running", 0.0)
    index.deliver("prefetched", 0.0)
    keeper.tick({"running", "prefetched"}, 0.0)
    keeper.tick({"running"}, 1.0)
    assert keeper.tick({"running"}, 1.0 + RELEASE_GRACE_SECONDS / 2) == []  # may still be acked
    assert keeper.tick({"running"}, 1.0 + RELEASE_GRACE_SECONDS) == ["prefetched"]
    assert index.restored == ["prefetched"] and "running" in index.unacked
    assert keeper.tick({"running"}, 10.0) == []  # put back once only


def test_a_message_that_comes_back_into_hand_is_not_put_back() -> None:
    # A countdown message becomes a running task: it may leave one set a moment before joining another.
    index = FakeIndex()
    keeper = LeaseKeeper(index, visibility_timeout=60)
    index.deliver("a", 0.0)
    keeper.tick({"a"}, 0.0)
    keeper.tick(set(), 0.5)
    keeper.tick({"a"}, 1.0)
    assert keeper.tick({"a"}, 5.0) == [] and index.restored == []


class FlakyIndex(FakeIndex):
    down = True

    def renew(self, tags: Iterable[str], now: float) -> None:
        if self.down:
            raise ConnectionError("broker down")
        super().renew(tags, now)

    def unacked_since(self, tag: str) -> float | None:
        if self.down:
            raise ConnectionError("broker down")
        return super().unacked_since(tag)


def test_a_broker_outage_delays_renewal_and_put_back_without_forgetting_them() -> None:
    index = FlakyIndex()
    keeper = LeaseKeeper(index, visibility_timeout=60)
    index.deliver("running", 0.0)
    index.deliver("dropped", 0.0)
    for now, held in ((0.0, {"running", "dropped"}), (1.0, {"running"}), (5.0, {"running"})):
        with contextlib.suppress(ConnectionError):
            keeper.tick(held, now)
    index.down = False  # Redis is back
    assert keeper.tick({"running"}, 6.0) == ["dropped"]
    assert index.renewals[-1] == (["running"], 6.0)


def test_held_crop_jobs_show_a_sign_of_life_with_each_renewal() -> None:
    index = FakeIndex()
    keeper = LeaseKeeper(index, visibility_timeout=8)
    for second in range(5):
        keeper.tick({"tag-a", "tag-b"}, float(second), jobs=["RID-A"])
    assert index.touched == [(["RID-A"], 0.0), (["RID-A"], 2.0), (["RID-A"], 4.0)]


def test_a_message_dropped_before_any_tick_saw_it_held_is_still_put_back() -> None:
    # Received and dropped with the connection within one tick: only the received signal knew of it.
    index = FakeIndex()
    keeper = LeaseKeeper(index, visibility_timeout=60)
    index.deliver("quick", 0.0)
    keeper.tick(set(), 0.5, received=["quick"])
    assert keeper.tick(set(), 0.5 + RELEASE_GRACE_SECONDS) == ["quick"]


def test_a_message_another_worker_took_meanwhile_is_left_to_it() -> None:
    # Our child was killed; Celery requeued the message and another worker took it (same delivery tag,
    # a later delivery time): putting it back would run the job twice at once.
    index = FakeIndex()
    keeper = LeaseKeeper(index, visibility_timeout=60)
    index.deliver("a", 0.0)
    keeper.tick({"a"}, 0.0)
    keeper.tick(set(), 1.0)
    index.deliver("a", 1.5)  # requeued and delivered to the other worker
    assert keeper.tick(set(), 1.0 + RELEASE_GRACE_SECONDS) == []
    assert index.restored == [] and index.unacked["a"] == 1.5

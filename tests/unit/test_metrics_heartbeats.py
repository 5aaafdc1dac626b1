"""The heartbeat set (worker/heartbeats.py) on a real Valkey: who counts as alive, pruning, and the worker
probe (``python -m worker.health``) reading it."""

from __future__ import annotations

import pytest
import redis

from worker import health, heartbeats, keys
from worker.settings import Settings

NOW = 1_700_000_000.0
WINDOW = heartbeats.ALIVE_WINDOW_SECONDS


def test_a_recent_beat_is_alive_and_a_stale_one_is_not(redis_client: redis.Redis) -> None:
    heartbeats.beat(redis_client, "celery@a", now=NOW)
    assert heartbeats.is_alive(redis_client, "celery@a", now=NOW + WINDOW)
    assert not heartbeats.is_alive(redis_client, "celery@a", now=NOW + WINDOW + 1)
    assert not heartbeats.is_alive(redis_client, "celery@never", now=NOW)


def test_beats_live_in_one_sorted_set_and_stale_members_are_pruned(redis_client: redis.Redis) -> None:
    heartbeats.beat(redis_client, "celery@old", now=NOW)
    heartbeats.beat(redis_client, "celery@new", now=NOW + WINDOW + 5)  # old is stale by now
    assert redis_client.zrange(keys.WORKER_HEARTBEATS, 0, -1, withscores=True) == [
        ("celery@new", NOW + WINDOW + 5)
    ]


def test_alive_nodes_filters_by_prefix_and_window(redis_client: redis.Redis) -> None:
    heartbeats.beat(redis_client, "q1-w1", now=NOW - WINDOW - 1)
    for node in ("q1-w2", "q1-w3", "webhooks-q1-w2"):
        heartbeats.beat(redis_client, node, now=NOW)
    assert heartbeats.alive_nodes(redis_client, "q1-", now=NOW) == ["q1-w2", "q1-w3"]
    assert heartbeats.alive_nodes(redis_client, now=NOW) == ["q1-w2", "q1-w3", "webhooks-q1-w2"]


def test_a_node_that_shuts_down_leaves_at_once(redis_client: redis.Redis) -> None:
    heartbeats.beat(redis_client, "celery@a", now=NOW)
    heartbeats.beat(redis_client, "celery@b", now=NOW)
    heartbeats.forget(redis_client, "celery@a")
    assert heartbeats.alive_nodes(redis_client, now=NOW) == ["celery@b"]


def test_the_probe_reads_the_set(
    redis_client: redis.Redis, redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(health, "get_settings", lambda: Settings(redis_url=redis_url))
    assert not health.check("celery@probe")
    heartbeats.beat(redis_client, "celery@probe")
    assert health.check("celery@probe")
    heartbeats.forget(redis_client, "celery@probe")
    assert not health.check("celery@probe")


def test_the_probe_is_unhealthy_when_redis_is_unreachable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(health, "get_settings", lambda: Settings(redis_url="redis://127.0.0.1:1/0"))
    assert not health.check("celery@probe")

"""The two kinds of metrics: this process's on /metrics, the cluster's (read from Redis) on /metrics/cluster,
with names that never overlap, values that match what was recorded, and a 503 while Redis is down."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest
import redis
import redis.asyncio as aioredis
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from api.main import create_app
from api.metrics import queues_of, read_cluster_figures, render_cluster
from worker import heartbeats, keys
from worker.settings import Settings
from worker.stats import ACCEPTED, ClusterFigures, record_job, record_webhook

QUEUE = "metrics-unit-queue"


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    found: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            assert isinstance(s, Sample)
            found[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return found


def cropq_names(text: str) -> set[str]:
    return {name for name, _ in samples(text) if name.startswith("cropq")}


def read(redis_url: str, now: float) -> ClusterFigures:
    async def main() -> ClusterFigures:
        client = aioredis.Redis.from_url(redis_url, decode_responses=True)
        try:
            return await read_cluster_figures(client, QUEUE, now=now)
        finally:
            await client.aclose()

    return asyncio.run(main())


def test_cluster_figures_are_what_was_recorded(redis_client: redis.Redis, redis_url: str) -> None:
    redis_client.hincrby(keys.STATS, ACCEPTED, 5)
    record_job(redis_client, "Succeeded", 0.3)
    record_job(redis_client, "Succeeded", 7.0)
    record_job(redis_client, "Failed")
    record_webhook(redis_client, "error")
    record_webhook(redis_client, "delivered")
    record_webhook(redis_client, "delivered")
    crop, batch, hooks = queues_of(QUEUE)
    redis_client.rpush(crop, "m1", "m2", "m3")
    redis_client.rpush(hooks, "h1")
    redis_client.zadd(keys.open_jobs(QUEUE), {"r1": 1.0, "r2": 2.0})
    now = 1_700_000_000.0
    heartbeats.beat(redis_client, "w1", now=now)
    heartbeats.beat(redis_client, "w2", now=now - 10)
    redis_client.zadd(keys.WORKER_HEARTBEATS, {"gone": now - heartbeats.ALIVE_WINDOW_SECONDS - 1})

    got = samples(render_cluster(read(redis_url, now)).decode())

    assert got[("cropq_cluster_jobs_accepted_total", ())] == 5
    assert got[("cropq_cluster_jobs_finished_total", (("status", "Succeeded"),))] == 2
    assert got[("cropq_cluster_jobs_finished_total", (("status", "Failed"),))] == 1
    assert got[("cropq_cluster_jobs_finished_total", (("status", "Cancelled"),))] == 0
    assert got[("cropq_cluster_crop_seconds_bucket", (("le", "0.25"),))] == 0
    assert got[("cropq_cluster_crop_seconds_bucket", (("le", "0.5"),))] == 1
    assert got[("cropq_cluster_crop_seconds_bucket", (("le", "10.0"),))] == 2
    assert got[("cropq_cluster_crop_seconds_bucket", (("le", "+Inf"),))] == 2
    assert got[("cropq_cluster_crop_seconds_count", ())] == 2
    assert got[("cropq_cluster_crop_seconds_sum", ())] == pytest.approx(7.3)
    assert got[("cropq_cluster_webhook_attempts_total", (("outcome", "delivered"),))] == 2
    assert got[("cropq_cluster_webhook_attempts_total", (("outcome", "error"),))] == 1
    assert got[("cropq_cluster_queue_backlog", (("queue", crop),))] == 3
    assert got[("cropq_cluster_queue_backlog", (("queue", batch),))] == 0
    assert got[("cropq_cluster_queue_backlog", (("queue", hooks),))] == 1
    assert got[("cropq_cluster_jobs_open", (("queue", QUEUE),))] == 2
    assert got[("cropq_cluster_workers_alive", ())] == 2
    # The scrape pruned the stale member: the set never grows with workers long gone.
    assert redis_client.zrange(keys.WORKER_HEARTBEATS, 0, -1) == ["w2", "w1"]


def test_an_empty_redis_reads_as_zeros(redis_client: redis.Redis, redis_url: str) -> None:
    got = samples(render_cluster(read(redis_url, 1_700_000_000.0)).decode())
    assert got[("cropq_cluster_jobs_accepted_total", ())] == 0
    assert got[("cropq_cluster_workers_alive", ())] == 0
    assert got[("cropq_cluster_queue_backlog", (("queue", QUEUE),))] == 0


def _settings(redis_url: str) -> Settings:
    return Settings(
        redis_url=redis_url,
        queue_name=QUEUE,
        s3_endpoint="127.0.0.1:1",  # no S3 needed for the operations routes
        log_level="WARNING",
    )


@pytest.fixture
def api(redis_client: redis.Redis, redis_url: str) -> Iterator[TestClient]:
    with TestClient(create_app(_settings(redis_url))) as c:
        yield c


def test_per_process_and_cluster_names_never_overlap(api: TestClient, redis_client: redis.Redis) -> None:
    api.get("/healthz")  # one observed request, so the latency histogram has samples
    process = api.get("/metrics")
    cluster = api.get("/metrics/cluster")
    assert process.status_code == cluster.status_code == 200
    assert process.headers["content-type"].startswith("text/plain")
    process_names, cluster_names = cropq_names(process.text), cropq_names(cluster.text)
    assert "cropq_http_request_seconds_count" in process_names
    assert "cropq_cluster_workers_alive" in cluster_names
    assert not process_names & cluster_names
    assert all(n.startswith("cropq_cluster_") for n in cluster_names), cluster_names
    assert not any(n.startswith("cropq_cluster_") for n in process_names), process_names
    # The cluster endpoint carries no process figures (its own registry), so it may be scraped anywhere.
    assert not any(name.startswith(("process_", "python_")) for name, _ in samples(cluster.text))


def test_per_process_metrics_need_no_redis_and_the_cluster_endpoint_says_503() -> None:
    with TestClient(create_app(_settings("redis://127.0.0.1:1/0"))) as c:
        assert c.get("/metrics").status_code == 200
        r = c.get("/metrics/cluster")
        assert r.status_code == 503
        assert r.text.startswith("Redis unavailable: connection refused")

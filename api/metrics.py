"""Prometheus metrics, in two kinds that never share a name:

- per-process (``GET /metrics``): what THIS API process did: jobs it accepted, its request latencies, its
  Python runtime. Every replica is scraped; ``sum()`` over replicas is the service's figure.
- cluster-wide (``GET /metrics/cluster``, names ``cropq_cluster_*``): queues, jobs by outcome, engine time,
  callbacks and live workers, read from Redis at scrape time (worker/stats.py). Every replica would report
  the same values, so this endpoint is scraped once (through the Service), never summed.
"""

from __future__ import annotations

import time

import redis.asyncio as aioredis
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

from worker import heartbeats, keys
from worker.contracts import batch_queue
from worker.stats import ClusterFigures, cluster_families
from worker.webhooks import webhook_queue

JOBS_SUBMITTED = Counter(
    "cropq_jobs_submitted_total", "Crop jobs this API process accepted (answered 202 or 200)", ["face"]
)
HTTP_SECONDS = Histogram(
    "cropq_http_request_seconds",
    "HTTP request latency in this API process",
    ["method", "route", "status"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)


def queues_of(queue_name: str) -> list[str]:
    """Every queue a deployment with crop queue ``queue_name`` uses: crop, prefix batches, callbacks."""
    return [queue_name, batch_queue(queue_name), webhook_queue(queue_name)]


async def read_cluster_figures(
    r: aioredis.Redis, queue_name: str, now: float | None = None
) -> ClusterFigures:
    """One pipelined round trip: the counters, each queue's length, the open jobs, the live workers."""
    queues = queues_of(queue_name)
    stale = heartbeats.stale_before(time.time() if now is None else now)
    async with r.pipeline(transaction=False) as pipe:
        pipe.hgetall(keys.STATS)
        for queue in queues:
            pipe.llen(queue)  # kombu keeps a queue's messages in a list named after it
        pipe.zcard(keys.open_jobs(queue_name))
        pipe.zremrangebyscore(keys.WORKER_HEARTBEATS, "-inf", f"({stale}")
        pipe.zcount(keys.WORKER_HEARTBEATS, stale, "+inf")
        replies = await pipe.execute()
    counters, lengths = replies[0], replies[1 : 1 + len(queues)]
    open_jobs, _, alive = replies[1 + len(queues) :]
    return ClusterFigures(
        counters={_text(k): _text(v) for k, v in counters.items()},
        backlog=dict(zip(queues, (int(n) for n in lengths), strict=True)),
        open_jobs={queue_name: int(open_jobs)},
        workers_alive=int(alive),
    )


def _text(value: str | bytes) -> str:
    return value.decode() if isinstance(value, bytes) else value


class _Families(Collector):
    def __init__(self, families: list[Metric]) -> None:
        self.families = families

    def collect(self) -> list[Metric]:
        return self.families


def render_cluster(figures: ClusterFigures) -> bytes:
    """The cluster figures in the Prometheus text format (a registry of their own: no process metrics)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Families(cluster_families(figures)))
    return generate_latest(registry)

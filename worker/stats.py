"""Cluster-wide counters kept in one Redis hash, written by every API process and every worker (prefork
children on many hosts need no Prometheus multiprocess directory this way), and turned into metric
families by ``cluster_families``. They describe the whole service, so they are exported by one endpoint
(``/metrics/cluster``) that is scraped once, never by every replica's ``/metrics``: see ``api.metrics``.

Every name here starts with ``cropq_cluster_``; a name without it is a per-process figure, safe to sum."""

from __future__ import annotations

from collections.abc import Mapping

import redis
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.metrics_core import Metric
from pydantic import BaseModel, ConfigDict

from worker import keys
from worker.contracts import JobStatus

CROP_SECONDS_BUCKETS = (0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
FINISHED_STATUSES = tuple(s.value for s in JobStatus if s.finished)
WEBHOOK_OUTCOMES = ("delivered", "error")

ACCEPTED = "jobs:accepted"


def record_job(client: redis.Redis, status: str, crop_seconds: float | None = None) -> None:
    """Count a finished job; with ``crop_seconds``, also observe the engine time in a histogram."""
    with client.pipeline(transaction=False) as pipe:
        pipe.hincrby(keys.STATS, f"jobs:{status}", 1)
        if crop_seconds is not None:
            pipe.hincrbyfloat(keys.STATS, "crop_seconds:sum", crop_seconds)
            pipe.hincrby(keys.STATS, "crop_seconds:count", 1)
            for bound in CROP_SECONDS_BUCKETS:
                if crop_seconds <= bound:
                    pipe.hincrby(keys.STATS, f"crop_seconds:le:{bound}", 1)
        pipe.execute()


def record_webhook(client: redis.Redis, outcome: str) -> None:
    client.hincrby(keys.STATS, f"webhook:{outcome}", 1)


class ClusterFigures(BaseModel):
    """What ``/metrics/cluster`` reads from Redis in one round trip."""

    model_config = ConfigDict(frozen=True)

    counters: Mapping[str, str] = {}
    """The ``keys.STATS`` hash as HGETALL returns it."""
    backlog: Mapping[str, int] = {}
    """Messages waiting, by queue name."""
    open_jobs: Mapping[str, int] = {}
    """Jobs accepted and not finished yet (queued or running), by crop queue."""
    workers_alive: int = 0


def _count(counters: Mapping[str, str], field: str) -> int:
    return int(counters.get(field, 0))


def cluster_families(figures: ClusterFigures) -> list[Metric]:
    """The figures as Prometheus metric families (a counter's ``_total`` suffix is added by the family)."""
    c = figures.counters
    accepted = CounterMetricFamily(
        "cropq_cluster_jobs_accepted", "Crop jobs accepted by all API processes (answered 202 or 200)"
    )
    accepted.add_metric([], _count(c, ACCEPTED))
    finished = CounterMetricFamily(
        "cropq_cluster_jobs_finished", "Crop jobs finished, by status", labels=["status"]
    )
    for status in FINISHED_STATUSES:
        finished.add_metric([status], _count(c, f"jobs:{status}"))
    crop = HistogramMetricFamily("cropq_cluster_crop_seconds", "Engine time per job, all workers")
    crop.add_metric(
        [],
        [(str(bound), _count(c, f"crop_seconds:le:{bound}")) for bound in CROP_SECONDS_BUCKETS]
        + [("+Inf", _count(c, "crop_seconds:count"))],
        sum_value=float(c.get("crop_seconds:sum", 0.0)),
    )
    webhooks = CounterMetricFamily(
        "cropq_cluster_webhook_attempts", "Callback POSTs by all workers, by outcome", labels=["outcome"]
    )
    for outcome in WEBHOOK_OUTCOMES:
        webhooks.add_metric([outcome], _count(c, f"webhook:{outcome}"))
    backlog = GaugeMetricFamily(
        "cropq_cluster_queue_backlog", "Messages waiting in a queue, by queue", labels=["queue"]
    )
    for queue, waiting in sorted(figures.backlog.items()):
        backlog.add_metric([queue], waiting)
    open_jobs = GaugeMetricFamily(
        "cropq_cluster_jobs_open", "Jobs accepted and not finished (queued or running)", labels=["queue"]
    )
    for queue, count in sorted(figures.open_jobs.items()):
        open_jobs.add_metric([queue], count)
    workers = GaugeMetricFamily(
        "cropq_cluster_workers_alive", "Celery worker nodes whose heartbeat is recent (crop and callback)"
    )
    workers.add_metric([], figures.workers_alive)
    return [accepted, finished, crop, webhooks, backlog, open_jobs, workers]

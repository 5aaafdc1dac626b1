"""Prometheus metrics: API counters in-process, queue and worker figures read from Redis at scrape time
(so they are right however many API replicas and worker machines there are)."""

from __future__ import annotations

from prometheus_client import Counter, Histogram

JOBS_SUBMITTED = Counter("cropq_jobs_submitted_total", "Crop jobs accepted", ["face"])
HTTP_SECONDS = Histogram(
    "cropq_http_request_seconds",
    "HTTP request latency",
    ["method", "route", "status"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)

"""Two API replicas on one Redis and one worker: each replica's /metrics counts only the jobs it accepted,
so the sum over replicas is the service's count, and /metrics/cluster gives the same figures on either
replica (the jobs accepted once, not once per replica). A worker that stops leaves the live count at once."""

from __future__ import annotations

import time
from typing import Any

import httpx
import pytest
import redis
from prometheus_client.parser import text_string_to_metric_families

from cropq_cli.localstack import free_port, start_api
from tests.conftest import Stack
from tests.integration.helpers import jpeg, submit, wait_done

pytestmark = pytest.mark.integration

METRICS_DB = 12
"""A database of its own: the cluster counters are service-wide, and other tests' stacks share the server."""


def series(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def accepted_here(client: httpx.Client) -> float:
    got = series(client.get("/metrics").text)
    return sum(v for (name, _), v in got.items() if name == "cropq_jobs_submitted_total")


def cluster(client: httpx.Client) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    r = client.get("/metrics/cluster")
    assert r.status_code == 200, r.text
    return series(r.text)


def one(name: str, **labels: str) -> tuple[str, frozenset[tuple[str, str]]]:
    return name, frozenset(labels.items())


def test_two_api_replicas_report_job_counts_that_sum_correctly(
    make_stack: Any, redis_url: str, tmp_path: Any
) -> None:
    own_db = redis_url.rsplit("/", 1)[0] + f"/{METRICS_DB}"
    with redis.Redis.from_url(own_db) as r:
        r.flushdb()
    stack: Stack = make_stack(workers=1, redis_url=own_db)
    queue = stack.env["CROPQ_QUEUE_NAME"]
    port = free_port()
    second = start_api({**stack.env, "CROPQ_API_PORT": str(port)}, "127.0.0.1", port, tmp_path / "api-2.log")
    try:
        project, bucket = stack.project()
        uri = stack.put(bucket, "m.jpg", jpeg(320, 240))
        with (
            stack.http() as first,
            httpx.Client(base_url=f"http://127.0.0.1:{port}", headers=stack.admin_auth, timeout=60) as other,
        ):
            rids = [submit(first, project, {"SourceURI": uri}) for _ in range(3)]
            rids += [submit(other, project, {"SourceURI": uri}) for _ in range(2)]
            for rid in rids:
                assert wait_done(first, project, rid)["Status"] == "Succeeded"

            per_replica = [accepted_here(first), accepted_here(other)]
            assert per_replica == [3, 2]

            # The finished count is written just after the job's end is published: allow it a moment.
            deadline = time.monotonic() + 5
            while cluster(first)[one("cropq_cluster_jobs_finished_total", status="Succeeded")] < 5:
                assert time.monotonic() < deadline, cluster(first)
                time.sleep(0.05)
            figures = cluster(first)
            assert cluster(other) == figures  # the same figures from either replica: scrape one
            assert figures[one("cropq_cluster_jobs_accepted_total")] == sum(per_replica) == 5
            assert figures[one("cropq_cluster_jobs_finished_total", status="Succeeded")] == 5
            assert figures[one("cropq_cluster_jobs_finished_total", status="Failed")] == 0
            assert figures[one("cropq_cluster_crop_seconds_count")] == 5
            assert figures[one("cropq_cluster_queue_backlog", queue=queue)] == 0
            assert figures[one("cropq_cluster_jobs_open", queue=queue)] == 0
            assert figures[one("cropq_cluster_workers_alive")] == 2  # the crop worker and its callback worker

            # A worker that shuts down leaves the heartbeat set at once, not after the 45 s window.
            stack.workers[0].stop()
            assert cluster(other)[one("cropq_cluster_workers_alive")] == 0
    finally:
        second.stop()

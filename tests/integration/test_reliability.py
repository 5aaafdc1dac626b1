"""Nothing accepted is lost: worker deaths mid-job, a poison job, and a storage outage.

Each test runs its own stack (own queue) so killing processes cannot disturb other tests.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path
from typing import Any

import pytest
import redis

from cropq_cli.localstack import child_pids
from tests.conftest import Stack
from tests.integration.helpers import FlakyProxy, jpeg, png, submit, wait_done

pytestmark = pytest.mark.integration


def _status(stack: Stack, rid: str) -> str | None:
    raw = redis.Redis.from_url(stack.redis_url).get(f"cropq:job:{rid}")
    if raw is None:
        return None
    import json

    return str(json.loads(raw)["Status"])


def _wait_running(stack: Stack, rid: str, timeout: float = 60, attempt: int = 1) -> None:
    """Wait until run number ``attempt`` of the job is under way."""
    r = redis.Redis.from_url(stack.redis_url)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if _status(stack, rid) == "Running" and int(r.get(f"cropq:job:{rid}:attempts") or 0) == attempt:
            return
        time.sleep(0.005)
    raise AssertionError(f"job {rid} never ran")


def _heavy_image(stack: Stack, bucket: str) -> str:
    # Noise PNG: no DCT shortcut, so decoding takes long enough to be caught mid-job.
    return stack.put(bucket, "heavy.png", png(3000, 3000))


def test_sigkill_of_the_worker_child_mid_job_reruns_it(make_stack: Any) -> None:
    stack: Stack = make_stack(workers=1)
    project, bucket = stack.project()
    uri = _heavy_image(stack, bucket)
    with stack.http() as c:
        rid = submit(c, project, {"SourceURI": uri, "AspectRatios": ["1:1"]})
        _wait_running(stack, rid)
        (child,) = child_pids(stack.workers[0].pid)
        os.kill(child, signal.SIGKILL)
        job = wait_done(c, project, rid, timeout=120)
    assert job["Status"] == "Succeeded", job
    assert job["Attempts"] == 2


def test_sigkill_of_a_whole_worker_mid_job_another_worker_finishes_it(make_stack: Any) -> None:
    stack: Stack = make_stack(
        workers=2, visibility_timeout="6", webhook_retry_schedule="[1, 2]", webhook_timeout_seconds="1"
    )
    project, bucket = stack.project()
    uri = _heavy_image(stack, bucket)
    with stack.http() as c:
        rid = submit(c, project, {"SourceURI": uri, "AspectRatios": ["1:1", "16:9"]})
        _wait_running(stack, rid)
        (victim,) = [w for w in stack.workers if rid in w.log_path.read_text()]
        survivor = next(w for w in stack.workers if w is not victim)
        victim.signal_group(signal.SIGKILL)  # the machine is gone: main process and children
        job = wait_done(c, project, rid, timeout=120)
    assert job["Status"] == "Succeeded", job
    assert job["Attempts"] == 2
    assert not victim.alive()
    assert rid in survivor.log_path.read_text()


def test_a_job_that_keeps_killing_its_worker_ends_failed(make_stack: Any) -> None:
    stack: Stack = make_stack(workers=1, max_attempts="2")
    project, bucket = stack.project()
    uri = _heavy_image(stack, bucket)
    with stack.http() as c:
        rid = submit(c, project, {"SourceURI": uri, "AspectRatios": ["1:1"]})
        for attempt in (1, 2):
            _wait_running(stack, rid, attempt=attempt)
            for child in child_pids(stack.workers[0].pid):
                os.kill(child, signal.SIGKILL)
        job = wait_done(c, project, rid, timeout=120)
    assert job["Status"] == "Failed", job
    assert job["Code"] == "InternalError" and "given up" in job["Message"]
    # The worker is still alive and serves the next job.
    ok = stack.put(bucket, "ok.jpg", jpeg(400, 300))
    with stack.http() as c:
        assert wait_done(c, project, submit(c, project, {"SourceURI": ok}))["Status"] == "Succeeded"


def test_storage_outage_is_retried_until_storage_returns(make_stack: Any, s3_server: Any) -> None:
    proxy = FlakyProxy(s3_server.endpoint)
    try:
        stack: Stack = make_stack(
            workers=1, s3_endpoint=f"127.0.0.1:{proxy.port}", storage_outage_seconds="60"
        )
        project, bucket = stack.project()
        uri = stack.put(bucket, "a.jpg", jpeg(600, 400))
        proxy.up.clear()
        with stack.http() as c:
            rid = submit(c, project, {"SourceURI": uri})
            deadline = time.monotonic() + 30
            while proxy.refused < 2 and time.monotonic() < deadline:
                time.sleep(0.05)
            assert proxy.refused >= 2, "the worker did not retry against the unavailable store"
            proxy.up.set()
            job = wait_done(c, project, rid, timeout=120)
        assert job["Status"] == "Succeeded", job
    finally:
        proxy.close()


def test_storage_outage_longer_than_the_window_fails_the_job_with_service_unavailable(
    make_stack: Any, s3_server: Any
) -> None:
    proxy = FlakyProxy(s3_server.endpoint)
    try:
        stack: Stack = make_stack(
            workers=1, s3_endpoint=f"127.0.0.1:{proxy.port}", storage_outage_seconds="6"
        )
        project, bucket = stack.project()
        uri = stack.put(bucket, "a.jpg", jpeg(600, 400))
        proxy.up.clear()  # down for good
        with stack.http() as c:
            t0 = time.monotonic()
            job = wait_done(c, project, submit(c, project, {"SourceURI": uri}), timeout=60)
            took = time.monotonic() - t0
    finally:
        proxy.close()
    assert job["Status"] == "Failed" and job["Code"] == "ServiceUnavailable", job
    assert "unavailable for" in job["Message"]
    assert 6 <= took < 30, took  # tried for the whole window, then gave up at its end
    assert proxy.refused >= 3  # with backoff in between, not once


def test_redis_restart_loses_no_accepted_job_and_workers_reconnect(make_stack: Any, tmp_path: Path) -> None:
    from cropq_cli.localstack import free_port, start_valkey
    from tests.conftest import wait_for_workers_on

    port = free_port()
    valkey = start_valkey(tmp_path / "valkey", port, durable=True)
    try:
        stack: Stack = make_stack(workers=0, redis_url=f"redis://127.0.0.1:{port}/0")
        project, bucket = stack.project()
        uris = [stack.put(bucket, f"r{i}.jpg", jpeg(500, 400, seed=i)) for i in range(3)]
        with stack.http() as c:
            rids = [submit(c, project, {"SourceURI": u}) for u in uris]  # accepted while no worker runs
            valkey.stop()  # the outage: Redis goes away (and comes back from its append-only file)
            down = c.post(f"/v1/projects/{project}/crop-jobs", json={"SourceURI": uris[0]})
            assert down.status_code == 503 and down.json()["Code"] == "ServiceUnavailable"
            valkey = start_valkey(tmp_path / "valkey", port, durable=True)
            stack.add_worker()
            wait_for_workers_on(stack, 1)
            assert all(wait_done(c, project, rid)["Status"] == "Succeeded" for rid in rids)
            # A second outage under a running worker: it reconnects and serves new work.
            valkey.stop()
            valkey = start_valkey(tmp_path / "valkey", port, durable=True)
            job = wait_done(c, project, submit(c, project, {"SourceURI": uris[1]}), timeout=120)
            assert job["Status"] == "Succeeded"
    finally:
        valkey.stop()


def test_sigterm_lets_the_worker_finish_its_job_first(make_stack: Any) -> None:
    stack: Stack = make_stack(workers=1)
    project, bucket = stack.project()
    uri = _heavy_image(stack, bucket)
    worker = stack.workers[0]
    with stack.http() as c:
        rid = submit(c, project, {"SourceURI": uri, "AspectRatios": ["1:1"]})
        _wait_running(stack, rid)
        os.kill(worker.pid, signal.SIGTERM)  # what Kubernetes and `docker stop` send
        assert worker.proc.wait(timeout=120) == 0
        job = c.get(f"/v1/projects/{project}/crop-jobs/{rid}").json()
    assert job["Status"] == "Succeeded" and job["Attempts"] == 1, job


def test_a_child_over_the_memory_limit_is_replaced_after_its_job(make_stack: Any) -> None:
    # 1 MB: every child is over it once a job has run, so each job ends with a fresh child.
    stack: Stack = make_stack(workers=1, worker_max_memory_mb="1")
    project, bucket = stack.project()
    uri = stack.put(bucket, "a.jpg", jpeg(640, 480, patch=(400, 200)))
    main = stack.workers[0].pid
    seen: list[int] = []
    with stack.http() as c:
        for _ in range(2):
            (before,) = child_pids(main)
            seen.append(before)
            rid = submit(c, project, {"SourceURI": uri, "AspectRatios": ["1:1"]})
            assert wait_done(c, project, rid, timeout=60)["Status"] == "Succeeded"
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline and child_pids(main) in ([], [before]):
                time.sleep(0.05)
            (after,) = child_pids(main)
            assert after != before, "the child that ran the job was not replaced"
            assert stack.workers[0].alive()  # the worker itself lives on
    assert len(set(seen)) == 2

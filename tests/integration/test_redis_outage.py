"""Redis crashes under load and comes back from its append-only file: the API answers 503 with an IMM body
within seconds the whole time (never 500, never a hang), /readyz says why, and every accepted job is run
again within seconds of Redis' return (not after the visibility timeout)."""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from cropq_cli.localstack import child_pids, free_port, start_valkey
from tests.conftest import Stack
from tests.integration.helpers import jpeg, png, submit, wait_done

pytestmark = pytest.mark.integration

OUTAGE_SECONDS = 4.0
ANSWER_WITHIN = 6.0


def _probe(stack: Stack, project: str, uri: str, stop: threading.Event, seen: list[dict[str, Any]]) -> None:
    """Every kind of request, over and over, while Redis is down."""
    requests = [
        ("POST", f"/v1/projects/{project}/crop-jobs", {"json": {"SourceURI": uri}}),
        ("GET", f"/v1/projects/{project}/crop-jobs/0F0E0D0C-0000-4000-8000-000000000000", {}),
        ("GET", f"/v1/projects/{project}/crop-jobs/0F0E0D0C-0000-4000-8000-000000000000?wait=5", {}),
        ("GET", "/readyz", {}),
    ]
    with stack.http() as c:
        while not stop.is_set():
            for method, path, kw in requests:
                t0 = time.monotonic()
                try:
                    resp = c.request(method, path, timeout=30, **kw)
                    seen.append(
                        {
                            "path": path,
                            "status": resp.status_code,
                            "body": resp.json(),
                            "seconds": time.monotonic() - t0,
                        }
                    )
                except httpx.HTTPError as e:
                    seen.append(
                        {"path": path, "status": None, "error": repr(e), "seconds": time.monotonic() - t0}
                    )
            time.sleep(0.1)


def test_redis_crash_under_load_answers_503_and_reruns_held_jobs_within_seconds(
    make_stack: Any, tmp_path: Path
) -> None:
    port = free_port()
    data = tmp_path / "valkey"
    valkey = start_valkey(data, port, durable=True)
    try:
        stack: Stack = make_stack(workers=2, concurrency=2, redis_url=f"redis://127.0.0.1:{port}/0")
        project, bucket = stack.project()
        heavy = [stack.put(bucket, f"h{i}.png", png(2400, 2400, seed=i)) for i in range(3)]
        light = [stack.put(bucket, f"l{i}.jpg", jpeg(500, 400, seed=i)) for i in range(6)]
        with stack.http() as c:
            rids = [submit(c, project, {"SourceURI": u}) for u in heavy + light]
            time.sleep(1.0)  # the heavy ones are running, the light ones queued or prefetched
            valkey.signal_group(signal.SIGKILL)  # a crash, not a shutdown
            valkey.proc.wait(10)
            stop, seen = threading.Event(), []  # type: ignore[var-annotated]
            prober = threading.Thread(target=_probe, args=(stack, project, light[0], stop, seen))
            prober.start()
            time.sleep(OUTAGE_SECONDS)
            stop.set()
            prober.join(60)
            valkey = start_valkey(data, port, durable=True)
            back = time.monotonic()
            finished = [wait_done(c, project, rid, timeout=120) for rid in rids]
            recovered = time.monotonic() - back
            probe = submit(c, project, {"SourceURI": light[1]})
            t0 = time.monotonic()
            assert wait_done(c, project, probe, timeout=30)["Status"] == "Succeeded"
            new_job_seconds = time.monotonic() - t0
    finally:
        valkey.stop()

    assert seen, "no request was sent during the outage"
    assert all(s["status"] == 503 for s in seen), [s for s in seen if s["status"] != 503][:3]
    assert all(s["seconds"] <= ANSWER_WITHIN for s in seen), max(s["seconds"] for s in seen)
    api_answers = [s for s in seen if s["path"] != "/readyz"]
    assert all(s["body"]["Code"] == "ServiceUnavailable" and s["body"]["RequestId"] for s in api_answers)
    ready = [s["body"] for s in seen if s["path"] == "/readyz"]
    assert all(
        r["Status"] == "unavailable" and r["Checks"]["Redis"].startswith("unavailable: ") for r in ready
    )
    assert any("refused" in r["Checks"]["Redis"] or "loading" in r["Checks"]["Redis"] for r in ready)

    assert [j["Status"] for j in finished] == ["Succeeded"] * len(rids), finished
    # Running and prefetched jobs were not left for the 60 s visibility timeout.
    assert recovered < 40, f"accepted jobs took {recovered:.1f} s to finish after Redis came back"
    assert new_job_seconds < 10
    print(
        f"outage probes {len(seen)}, slowest answer {max(s['seconds'] for s in seen):.2f} s; "
        f"all {len(rids)} jobs done {recovered:.1f} s after Redis returned; new job {new_job_seconds:.1f} s"
    )


def test_a_redis_restart_with_callbacks_waiting_for_their_countdown_kills_no_worker(
    make_stack: Any, tmp_path: Path
) -> None:
    """Celery 5.7 closing a broken connection made kombu restore the held countdown messages through a
    collected transport and end the callback worker; the lease keeper puts them back instead."""
    from tests.integration.test_callbacks import Receiver

    port = free_port()
    data = tmp_path / "valkey"
    valkey = start_valkey(data, port, durable=True)
    receiver = Receiver([500] * 3)  # the first three POSTs fail: those callbacks wait for a countdown
    try:
        stack: Stack = make_stack(
            workers=1, redis_url=f"redis://127.0.0.1:{port}/0", webhook_retry_schedule="[8, 8, 8]"
        )
        project, bucket = stack.project()
        uris = [stack.put(bucket, f"c{i}.jpg", jpeg(400, 300, seed=i)) for i in range(3)]
        with stack.http() as c:
            rids = [submit(c, project, {"SourceURI": u, "CallbackURL": receiver.url}) for u in uris]
            assert all(wait_done(c, project, rid)["Status"] == "Succeeded" for rid in rids)
            deadline = time.monotonic() + 30
            while len(receiver.requests) < 3 and time.monotonic() < deadline:
                time.sleep(0.1)
            assert len(receiver.requests) == 3  # now each callback waits 8 s, held by the callback worker
            valkey.stop()
            time.sleep(2)
            valkey = start_valkey(data, port, durable=True)
            back = time.monotonic()
            deadline = time.monotonic() + 30  # under the 60 s visibility timeout: the leases put them back
            while time.monotonic() < deadline:
                jobs = [c.get(f"/v1/projects/{project}/crop-jobs/{rid}").json() for rid in rids]
                if all(j["Callback"]["Status"] == "Delivered" for j in jobs):
                    break
                time.sleep(0.5)
        print(f"callbacks delivered {time.monotonic() - back:.1f} s after Redis returned")
        hooks = stack.workers[0].webhooks
        assert hooks is not None and hooks.alive(), hooks.tail() if hooks else "no callback worker"
        assert stack.workers[0].alive()
        assert [j["Callback"]["Status"] for j in jobs] == ["Delivered"] * 3, jobs
        delivered = [h["webhook-id"] for h, _ in receiver.requests[3:]]
        assert sorted(delivered) == sorted(rids)  # each callback delivered once after the restart
    finally:
        receiver.close()
        valkey.stop()


def test_a_child_killed_after_a_redis_restart_does_not_take_its_worker_down(
    make_stack: Any, tmp_path: Path
) -> None:
    """Its message came on the connection that died: requeueing it must go through (or, through a dead
    channel, fail as a connection error the lease keeper repairs), never end the worker."""
    from tests.integration.test_reliability import _wait_running

    port = free_port()
    data = tmp_path / "valkey"
    valkey = start_valkey(data, port, durable=True)
    try:
        stack: Stack = make_stack(workers=1, redis_url=f"redis://127.0.0.1:{port}/0")
        project, bucket = stack.project()
        uri = stack.put(bucket, "heavy.png", png(2000, 2000))
        worker = stack.workers[0]
        with stack.http() as c:
            rid = submit(c, project, {"SourceURI": uri, "AspectRatios": ["1:1"]})
            _wait_running(stack, rid)
            (child,) = child_pids(worker.pid)
            os.kill(child, signal.SIGSTOP)  # the job stays running across the restart
            valkey.stop()
            valkey = start_valkey(data, port, durable=True)
            log = worker.log_path
            deadline = time.monotonic() + 30
            while log.read_text().count("Connected to redis") < 2 and time.monotonic() < deadline:
                time.sleep(0.1)
            os.kill(child, signal.SIGKILL)
            job = wait_done(c, project, rid, timeout=120)
            assert worker.alive(), worker.tail()
            assert job["Status"] == "Succeeded" and job["Attempts"] == 2, job
    finally:
        valkey.stop()

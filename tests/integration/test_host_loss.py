"""Whole-host loss for real: two worker hosts, each in its own network namespace, reach Redis and S3 over a
bridge; one loses its link mid-job. The other host finishes the job once the lost host's lease lapses, and
when the link comes back the lost host's late result is discarded: no overwrite, no second callback.

Needs root (CAP_NET_ADMIN) and iproute2, as CI has; without them the test fails and says why.
"""

from __future__ import annotations

import contextlib
import json
import os
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import redis

from cropq_cli.localstack import free_port, start_api, start_valkey, start_worker, wait_for_workers
from tests.conftest import ADMIN_KEY, S3Server, Stack
from tests.integration.helpers import FlakyProxy, jpeg, png, submit, wait_done
from tests.integration.netns import HostNetwork, NetworkUnavailable, host_network

pytestmark = pytest.mark.integration

VISIBILITY_TIMEOUT = 6
TAKEOVER_BOUND = 45.0  # cut -> the other host's run has succeeded
STALE_BOUND = 40.0  # restore -> the cut host's run has been discarded


class CallbackReceiver:
    """Records the ``webhook-id`` of every POST it gets and answers 200."""

    def __init__(self, bind: str) -> None:
        self.webhook_ids: list[str] = []
        received = self.webhook_ids

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                received.append(self.headers.get("webhook-id", ""))
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer((bind, 0), Handler)
        self.url = f"http://{bind}:{self.server.server_address[1]}/hooks"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def deliveries(self, webhook_id: str) -> int:
        return self.webhook_ids.count(webhook_id)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@contextlib.contextmanager
def _network(hosts: int) -> Iterator[HostNetwork]:
    """The test network, or a failure that says why it cannot be built (never a skip)."""
    building = host_network(hosts)
    try:
        net = building.__enter__()
    except NetworkUnavailable as e:
        missing = f"{e} (this test needs root or CAP_NET_ADMIN, and iproute2)"
    else:
        try:
            yield net
        finally:
            building.__exit__(None, None, None)
        return
    pytest.fail(missing, pytrace=False)


def _env(queue: str, api_port: int, redis_url: str, s3: S3Server, callback_cidr: str) -> dict[str, str]:
    """The settings of tests/conftest.py's stacks, with the short visibility timeout of this test."""
    return {
        **{k: v for k, v in os.environ.items() if not k.startswith("CROPQ_")},
        "PYTHONUNBUFFERED": "1",
        "CROPQ_REDIS_URL": redis_url,
        "CROPQ_S3_ENDPOINT": s3.endpoint,
        "CROPQ_S3_ACCESS_KEY": s3.access_key,
        "CROPQ_S3_SECRET_KEY": s3.secret_key,
        "CROPQ_S3_SECURE": "false",
        "CROPQ_API_PORT": str(api_port),
        "CROPQ_QUEUE_NAME": queue,
        "CROPQ_SECRET_KEY": "test-secret-key-for-encryption-0123456789",
        "CROPQ_ACCESS_KEYS": json.dumps([ADMIN_KEY]),
        "CROPQ_WEBHOOK_ALLOWED_CIDRS": json.dumps(["127.0.0.0/8", callback_cidr]),
        "CROPQ_LOG_JSON": "true",
        "CROPQ_RATE_LIMIT_PER_MINUTE": "0",
        "CROPQ_AUTH_FAILURES_PER_MINUTE": "0",
        "CROPQ_VISIBILITY_TIMEOUT": str(VISIBILITY_TIMEOUT),
    }


def _logged(log_path: Path, event: str, rid: str) -> bool:
    for line in log_path.read_text(errors="replace").splitlines():
        with contextlib.suppress(ValueError):
            record = json.loads(line)
            if isinstance(record, dict) and record.get("event") == event and record.get("request_id") == rid:
                return True
    return False


def _broker_empty(r: redis.Redis, queue: str) -> bool:
    """No message waits on this test's queues (crop and callback) and none is held by a worker."""
    if r.hlen("unacked"):  # kombu's hash of delivered, unacknowledged messages
        return False
    return all(r.llen(key) == 0 for key in r.scan_iter(match=f"{queue}*", _type="list"))


def _wait(check: Callable[[], bool], timeout: float) -> bool:
    """Whether ``check`` came to hold within ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


def test_a_host_cut_off_mid_job_loses_it_and_its_late_result_is_discarded(
    s3_server: S3Server, tmp_path: Path
) -> None:
    # The network is built first and removed last: every process using it is stopped before it goes.
    with _network(2) as net, contextlib.ExitStack() as cleanup:
        bridge = net.bridge_address
        redis_port, api_port = free_port(), free_port()
        valkey = start_valkey(
            tmp_path / "valkey",
            redis_port,
            durable=True,
            bind=(bridge, "127.0.0.1"),
            extra_args=("--protected-mode", "no"),
        )
        cleanup.callback(valkey.stop)
        s3_forwarder = FlakyProxy(s3_server.endpoint, bind=bridge)
        cleanup.callback(s3_forwarder.close)
        receiver = CallbackReceiver(bridge)
        cleanup.callback(receiver.close)

        # The API (root namespace) uses loopback; the hosts reach the same servers at the bridge address.
        queue = f"q{uuid.uuid4().hex[:8]}"
        env = _env(queue, api_port, f"redis://127.0.0.1:{redis_port}/0", s3_server, str(net.subnet))
        api = start_api(env, "127.0.0.1", api_port, tmp_path / "api.log")
        stack = Stack(
            url=f"http://127.0.0.1:{api_port}",
            env=env,
            redis_url=env["CROPQ_REDIS_URL"],
            s3=s3_server,
            workdir=tmp_path,
            api=api,
        )
        cleanup.callback(stack.stop)
        host_env = {
            **env,
            "CROPQ_REDIS_URL": f"redis://{bridge}:{redis_port}/0",
            "CROPQ_S3_ENDPOINT": f"{bridge}:{s3_forwarder.port}",
            # A download the cut freezes resumes when the link is back instead of failing first, so the
            # cut host's run goes on to store its result whatever step the cut caught it in.
            "CROPQ_S3_TIMEOUT_SECONDS": "40",
        }
        for i, host in enumerate(net.hosts, 1):
            name = f"{queue}-h{i}"  # the heartbeat count below finds the workers by this prefix
            log = tmp_path / f"h{i}.log"
            stack.workers.append(start_worker(host_env, name, 1, queue, log, prefix=host.launcher))
        # Runs before stack.stop: workers go down with their links up, not waiting out hung connections.
        cleanup.callback(net.restore_all)
        wait_for_workers(
            stack.redis_url, 2, timeout=90, node_prefix=f"{queue}-", procs=[valkey, api, *stack.workers]
        )
        r = redis.Redis.from_url(stack.redis_url, decode_responses=True)
        cleanup.callback(r.close)
        http = stack.http()
        cleanup.callback(http.close)

        def record(rid: str) -> dict[str, Any]:
            raw = r.get(f"cropq:job:{rid}")
            assert raw is not None, f"job record {rid} is missing"
            job: dict[str, Any] = json.loads(raw)
            return job

        project, bucket = stack.project()
        # Noise PNG: no DCT shortcut, so a run lasts long enough (download, decode, models) to be cut.
        uri = stack.put(bucket, "heavy.png", png(3000, 3000))
        body = {"SourceURI": uri, "AspectRatios": ["1:1", "16:9"], "CallbackURL": receiver.url}
        rid = submit(http, project, body)

        # 1. Attempt 1 runs on one host: cut that host off.
        assert _wait(
            lambda: record(rid)["Status"] == "Running" and r.get(f"cropq:job:{rid}:attempts") == "1", 60
        ), f"attempt 1 did not start within 60 s: {record(rid)}"
        assert _wait(lambda: any(_logged(w.log_path, "job_started", rid) for w in stack.workers), 5), (
            "no worker logged the start of attempt 1"
        )
        workers = dict(zip(net.hosts, stack.workers, strict=True))
        (victim,) = [h for h, w in workers.items() if _logged(w.log_path, "job_started", rid)]
        (survivor,) = [h for h in net.hosts if h != victim]
        net.cut(victim)
        cut_at = time.monotonic()
        assert record(rid)["Status"] == "Running", "attempt 1 ended before the cut: the image is too fast"

        # 2. The other host takes the job over once the cut host's lease lapses; its run succeeds.
        assert _wait(lambda: record(rid).get("Attempts") == 2, TAKEOVER_BOUND), (
            f"no host took the job over within {TAKEOVER_BOUND:.0f} s: {record(rid)}"
        )
        picked_up = time.monotonic() - cut_at
        job = wait_done(http, project, rid, timeout=TAKEOVER_BOUND)
        succeeded = time.monotonic() - cut_at
        assert job["Status"] == "Succeeded" and job["Attempts"] == 2, job
        assert _logged(workers[survivor].log_path, "job_started", rid), "the other host never ran the job"
        assert workers[victim].alive(), "the cut host's worker exited: this test is about its network"
        finished = record(rid)

        # 3. The link comes back: the cut host's run of attempt 1 is fenced off by attempt 2.
        net.restore(victim)
        restored_at = time.monotonic()
        assert _wait(lambda: _logged(workers[victim].log_path, "stale_run_discarded", rid), STALE_BOUND), (
            f"the cut host discarded no stale run in {STALE_BOUND:.0f} s:\n{workers[victim].tail(15)}"
        )
        stale = time.monotonic() - restored_at
        # Whatever the cut host's return set off (an unacknowledged message put back, a rerun, a callback)
        # has run its course once the broker holds no message at all: callbacks are acknowledged after
        # their POST.
        assert _wait(lambda: _broker_empty(r, queue), 30), "messages still held 30 s after the fencing"
        now = record(rid)
        for field in ("Status", "Attempts", "FinishedAt", "Croppings"):
            assert now.get(field) == finished.get(field), (
                f"{field} changed: {finished.get(field)} -> {now.get(field)}"
            )
        assert receiver.deliveries(rid) == 1, receiver.webhook_ids
        # The service goes on: a job submitted now succeeds, on whichever host takes it.
        ok = stack.put(bucket, "ok.jpg", jpeg(400, 300))
        after = wait_done(http, project, submit(http, project, {"SourceURI": ok}))
        assert after["Status"] == "Succeeded", after
        print(f"\ncut -> taken over {picked_up:.1f} s, succeeded {succeeded:.1f} s;", end=" ")
        print(f"restore -> discarded {stale:.1f} s")

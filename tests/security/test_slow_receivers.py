"""Callback receivers that drip or hang, against the real stack: each delivery attempt ends at its deadline,
counts as a failed attempt and is retried on the schedule, and a crop submitted meanwhile is not delayed
(callbacks travel on their own queue, served by their own worker processes)."""

from __future__ import annotations

import select
import socket
import threading
import time
from datetime import datetime
from typing import Any

import pytest

from cropq_cli.localstack import wait_for_workers
from tests.conftest import Stack
from tests.integration.helpers import jpeg, submit, wait_done
from worker.webhooks import webhook_queue

pytestmark = pytest.mark.integration

TIMEOUT = 2.0  # CROPQ_WEBHOOK_TIMEOUT_SECONDS of this stack
SLACK = 1.0  # scheduling and process noise on a busy machine
DRIP_EVERY = 0.5
LIFETIME = 40.0  # a receiver shuts itself down after this, whatever the test does


class SlowReceiver:
    """A TCP server on 127.0.0.1 that reads each request, then drips an endless HTTP header block one
    byte every ``DRIP_EVERY`` s (``drip``) or says nothing at all (``hang``). It notes when each
    connection opened and when the client hung up, and the bytes it managed to send."""

    def __init__(self, mode: str) -> None:
        self.mode = mode
        self.connections: list[dict[str, float | int | None]] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._born = time.monotonic()
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.sock.settimeout(0.2)
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}/hook"
        threading.Thread(target=self._accept, daemon=True).start()

    def _alive(self) -> bool:
        return not self._stop.is_set() and time.monotonic() - self._born < LIFETIME

    def _accept(self) -> None:
        while self._alive():
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                continue
            except OSError:
                break
            record: dict[str, float | int | None] = {"opened": time.monotonic(), "closed": None, "sent": 0}
            with self._lock:
                self.connections.append(record)
            threading.Thread(target=self._serve, args=(conn, record), daemon=True).start()
        self.sock.close()

    def _serve(self, conn: socket.socket, record: dict[str, float | int | None]) -> None:
        payload = b"HTTP/1.1 200 OK\r\nX-Drip: " + b"a" * 1000
        with conn:
            conn.settimeout(5)
            received = b""
            while b"\r\n\r\n" not in received:  # the request head (the small body follows with it)
                chunk = conn.recv(65536)
                if not chunk:
                    break
                received += chunk
            while self._alive():
                # Readable now means the client hung up (it never sends more after its request).
                readable, _, _ = select.select([conn], [], [], DRIP_EVERY)
                if readable:
                    try:
                        if not conn.recv(65536):
                            break
                    except OSError:
                        break
                    continue
                if self.mode == "drip":
                    sent = int(record["sent"] or 0)
                    try:
                        conn.sendall(payload[sent : sent + 1])
                    except OSError:
                        break
                    record["sent"] = sent + 1
            record["closed"] = time.monotonic()

    def open_count(self) -> int:
        with self._lock:
            return sum(1 for c in self.connections if c["closed"] is None)

    def close(self) -> None:
        self._stop.set()


@pytest.fixture(scope="module")
def stack(make_stack: Any) -> Stack:
    s: Stack = make_stack(
        workers=1, webhook_timeout_seconds=str(TIMEOUT), webhook_retry_schedule="[1]", webhook_concurrency="4"
    )
    queue = s.env["CROPQ_QUEUE_NAME"]
    wait_for_workers(s.redis_url, 1, timeout=90, node_prefix=f"webhooks-{queue}-")
    return s


def _wait(check: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.05)
    raise AssertionError(f"{what} not within {timeout} s")


def _seconds(iso: str) -> float:
    return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()


def test_slow_receivers_cost_their_timeout_and_never_delay_a_crop(stack: Stack) -> None:
    assert webhook_queue(stack.env["CROPQ_QUEUE_NAME"]) != stack.env["CROPQ_QUEUE_NAME"]
    project, bucket = stack.project()
    uri = stack.put(bucket, "a.jpg", jpeg(640, 480))
    receivers = [SlowReceiver("drip"), SlowReceiver("drip"), SlowReceiver("hang")]
    try:
        with stack.http() as c:
            assert wait_done(c, project, submit(c, project, {"SourceURI": uri}))["Status"] == "Succeeded"
            rids = [submit(c, project, {"SourceURI": uri, "CallbackURL": r.url}) for r in receivers]
            # The deliveries are under way, held by their receivers.
            _wait(lambda: sum(r.open_count() for r in receivers) >= 2, 30, "two held deliveries")

            crop = wait_done(c, project, submit(c, project, {"SourceURI": uri}), timeout=30)
            assert crop["Status"] == "Succeeded"
            # Picked up at once: behind even one held delivery it would have waited up to TIMEOUT s.
            assert _seconds(crop["StartedAt"]) - _seconds(crop["CreatedAt"]) < 1.0, crop

            jobs = []
            for rid in rids:
                deadline = time.monotonic() + 30
                while True:
                    job = c.get(f"/v1/projects/{project}/crop-jobs/{rid}").json()
                    if job.get("Callback", {}).get("Status") == "Failed" or time.monotonic() > deadline:
                        break
                    time.sleep(0.2)
                jobs.append(job)
    finally:
        for r in receivers:
            r.close()

    for receiver, job in zip(receivers, jobs, strict=True):
        cb = job["Callback"]
        # One attempt plus the one retry of the schedule, each a failed (timed-out) attempt, then Failed.
        assert cb["Status"] == "Failed" and cb["Attempts"] == 2, cb
        assert cb.get("LastStatusCode") is None and cb["LastError"].startswith("timeout"), cb
        conns = receiver.connections
        assert len(conns) == 2, conns
        for conn in conns:
            assert conn["closed"] is not None, conn
            held = float(conn["closed"]) - float(conn["opened"] or 0)
            assert TIMEOUT - 0.5 <= held <= TIMEOUT + SLACK, (receiver.mode, held)
            if receiver.mode == "drip":
                assert int(conn["sent"] or 0) >= 2  # it really was dripping while we waited
        gap = float(conns[1]["opened"] or 0) - float(conns[0]["closed"] or 0)
        assert gap >= 0.5, gap  # the retry waited for its slot (1 s, -20 % jitter, minus noise)

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from email.utils import format_datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import ClassVar

import httpcore
import pytest

from worker.webhooks.deadline import Deadline
from worker.webhooks.delivery import deliver, parse_retry_after

LOOPBACK = ["127.0.0.0/8"]
BODY = b'{"type":"crop-job.succeeded"}'


class _Receiver(BaseHTTPRequestHandler):
    received: ClassVar[list[tuple[str, dict[str, str], bytes]]] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        self.received.append((self.path, {k.lower(): v for k, v in self.headers.items()}, body))
        path = self.path
        if path == "/slow":
            time.sleep(1.5)
        status, headers = {
            "/ok": (204, {}),
            "/created": (201, {}),
            "/slow": (200, {}),
            "/redirect": (302, {"Location": "/ok"}),
            "/gone": (410, {}),
            "/throttle": (429, {"Retry-After": "7"}),
            "/unavailable": (503, {"Retry-After": "soon"}),
            "/error": (500, {"Retry-After": "9"}),  # ignored: only throttling statuses carry a hint
        }.get(path, (404, {}))
        self.send_response(status)
        for k, v in headers.items():
            self.send_header(k, v)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def server_url() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Receiver)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@pytest.fixture
def base_url(server_url: str) -> str:
    _Receiver.received = []
    return server_url


def test_2xx_is_delivered_with_exact_body_and_headers(base_url: str) -> None:
    out = deliver(f"{base_url}/ok", BODY, {"webhook-id": "r1"}, 5, LOOPBACK)
    assert out.delivered and out.status_code == 204 and out.error is None
    path, headers, body = _Receiver.received[0]
    assert (path, body) == ("/ok", BODY)
    assert headers["webhook-id"] == "r1" and headers["content-type"] == "application/json"
    assert deliver(f"{base_url}/created", BODY, {}, 5, LOOPBACK).delivered


def test_redirect_is_a_failure_and_not_followed(base_url: str) -> None:
    out = deliver(f"{base_url}/redirect", BODY, {}, 5, LOOPBACK)
    assert not out.delivered and not out.final and out.status_code == 302
    assert [r[0] for r in _Receiver.received] == ["/redirect"]


def test_410_ends_delivery(base_url: str) -> None:
    out = deliver(f"{base_url}/gone", BODY, {}, 5, LOOPBACK)
    assert out.gone and out.final and not out.delivered and out.status_code == 410


def test_429_carries_retry_after(base_url: str) -> None:
    out = deliver(f"{base_url}/throttle", BODY, {}, 5, LOOPBACK)
    assert (out.delivered, out.status_code, out.retry_after_seconds, out.final) == (False, 429, 7.0, False)


def test_unreadable_retry_after_is_ignored(base_url: str) -> None:
    out = deliver(f"{base_url}/unavailable", BODY, {}, 5, LOOPBACK)
    assert out.status_code == 503 and out.retry_after_seconds is None


def test_500_is_retryable_and_ignores_retry_after(base_url: str) -> None:
    out = deliver(f"{base_url}/error", BODY, {}, 5, LOOPBACK)
    assert (out.delivered, out.final, out.status_code, out.retry_after_seconds) == (False, False, 500, None)
    assert out.error == "HTTP 500"


def test_timeout_is_a_retryable_failure(base_url: str) -> None:
    started = time.monotonic()
    out = deliver(f"{base_url}/slow", BODY, {}, 0.3, LOOPBACK)
    assert time.monotonic() - started < 1.4
    assert not out.delivered and not out.final and out.status_code is None
    assert out.error is not None and out.error.startswith("timeout")


def test_connection_refused_is_a_retryable_failure() -> None:
    import socket

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    out = deliver(f"http://127.0.0.1:{port}/", BODY, {}, 2, LOOPBACK)
    assert not out.delivered and not out.final and out.error


def test_unresolvable_host_is_retried_not_dropped() -> None:
    out = deliver("http://no-such-host.invalid/hook", BODY, {}, 2, [])
    assert not out.delivered and not out.refused and not out.final
    assert out.error is not None and "resolv" in out.error


def test_loopback_is_refused_without_allow_list(base_url: str) -> None:
    out = deliver(f"{base_url}/ok", BODY, {}, 5, [])
    assert out.refused and out.final and not out.delivered
    assert _Receiver.received == []


@pytest.mark.parametrize("url", ["ftp://127.0.0.1/x", "http://", "not a url", "http://[::1/"])
def test_bad_urls_are_refused(url: str) -> None:
    out = deliver(url, BODY, {}, 2, LOOPBACK)
    assert out.refused and not out.delivered


def test_bad_allow_list_is_refused_not_raised(base_url: str) -> None:
    out = deliver(f"{base_url}/ok", BODY, {}, 2, ["nonsense"])
    assert out.refused and out.error is not None and "webhook_allowed_cidrs" in out.error


@pytest.mark.parametrize(
    ("value", "expected"),
    [(None, None), ("", None), ("120", 120.0), (" 0 ", 0.0), ("-5", None), ("soon", None)],
)
def test_parse_retry_after_seconds(value: str | None, expected: float | None) -> None:
    assert parse_retry_after(value) == expected


def test_parse_retry_after_http_date() -> None:
    now = datetime(2026, 11, 25, 16, 0, 0, tzinfo=UTC)
    later = format_datetime(datetime(2026, 11, 25, 16, 1, 30, tzinfo=UTC), usegmt=True)
    assert parse_retry_after(later, now) == 90.0
    past = format_datetime(datetime(2026, 11, 25, 15, 0, 0, tzinfo=UTC), usegmt=True)
    assert parse_retry_after(past, now) == 0.0


@pytest.fixture
def drip_url() -> Iterator[str]:
    """A receiver that reads the request, then sends a never-ending header block one byte every 0.1 s
    (for 3 s at most): every single read is quick, the whole answer never comes."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(4)

    def serve() -> None:
        with contextlib.suppress(OSError):
            conn, _ = listener.accept()
            with conn:
                conn.recv(65536)
                for byte in (b"HTTP/1.1 200 OK\r\nX-Drip: " + b"a" * 29)[:30]:
                    time.sleep(0.1)
                    conn.sendall(bytes([byte]))

    threading.Thread(target=serve, daemon=True).start()
    yield f"http://127.0.0.1:{listener.getsockname()[1]}/drip"
    listener.close()


def test_a_dripping_receiver_is_cut_off_at_the_attempt_deadline(drip_url: str) -> None:
    started = time.monotonic()
    out = deliver(drip_url, BODY, {}, 0.6, LOOPBACK)
    took = time.monotonic() - started
    assert not out.delivered and not out.final and out.status_code is None
    assert out.error is not None and out.error.startswith("timeout") and "over 0.6 s" in out.error
    assert 0.5 <= took < 1.5  # per-read timeouts alone would have waited for all 3 s of drip


def test_deadline_budget_caps_each_operation_and_refuses_after_it() -> None:
    now = [100.0]
    deadline = Deadline(5, clock=lambda: now[0])
    assert deadline.budget(None, httpcore.ReadTimeout) == 5
    assert deadline.budget(2, httpcore.ReadTimeout) == 2
    now[0] = 104.5
    assert deadline.budget(2, httpcore.ReadTimeout) == pytest.approx(0.5)
    now[0] = 105.0
    with pytest.raises(httpcore.WriteTimeout, match="over 5 s"):
        deadline.budget(2, httpcore.WriteTimeout)

"""Signed callbacks delivered by real workers to a real local HTTP receiver that verifies them."""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from standardwebhooks import Webhook

from tests.conftest import Stack
from tests.integration.helpers import jpeg, submit, wait_done

pytestmark = pytest.mark.integration


class Receiver:
    """Answers the queued status codes in order (then 200) and keeps every request it got."""

    def __init__(self, statuses: list[int]) -> None:
        self.statuses = list(statuses)
        self.requests: list[tuple[dict[str, str], bytes]] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                outer.requests.append(({k.lower(): v for k, v in self.headers.items()}, body))
                self.send_response(outer.statuses.pop(0) if outer.statuses else 200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hooks/cropq?token=abc"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()


@pytest.fixture(scope="module")
def stack(make_stack: Any) -> Stack:
    s: Stack = make_stack(workers=1, webhook_retry_schedule="[1, 1, 1]")
    return s


def _secret(stack: Stack, project: str) -> str:
    with stack.http() as c:
        return str(c.get(f"/v1/projects/{project}").json()["WebhookSecret"])


def _wait_callback(stack: Stack, project: str, rid: str, status: str, timeout: float = 30) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    with stack.http() as c:
        while time.monotonic() < deadline:
            job: dict[str, Any] = c.get(f"/v1/projects/{project}/crop-jobs/{rid}").json()
            if job.get("Callback", {}).get("Status") == status:
                return job
            time.sleep(0.2)
    raise AssertionError(f"callback never reached {status}: {job.get('Callback')}")


def test_callback_is_signed_retried_and_recorded(stack: Stack) -> None:
    project, bucket = stack.project()
    secret = _secret(stack, project)
    assert secret.startswith("whsec_")
    receiver = Receiver([500, 503])
    try:
        uri = stack.put(bucket, "a.jpg", jpeg(600, 400))
        with stack.http() as c:
            rid = submit(c, project, {"SourceURI": uri, "CallbackURL": receiver.url, "UserData": "ctx-7"})
            assert c.get(f"/v1/projects/{project}/crop-jobs/{rid}").json()["Callback"]["Status"] in (
                "Pending",
                "Retrying",
                "Delivered",
            )
            assert wait_done(c, project, rid)["Status"] == "Succeeded"
        job = _wait_callback(stack, project, rid, "Delivered")
    finally:
        receiver.close()
    assert job["Callback"]["Attempts"] == 3 and job["Callback"]["LastStatusCode"] == 200
    assert len(receiver.requests) == 3
    ids = {h["webhook-id"] for h, _ in receiver.requests}
    assert ids == {rid}  # one id across retries
    for headers, body in receiver.requests:
        # Any Standard Webhooks library verifies it with the project's secret.
        payload = Webhook(secret).verify(body, headers)
        assert payload["type"] == "crop-job.succeeded"
        assert payload["data"]["RequestId"] == rid and payload["data"]["UserData"] == "ctx-7"
        assert len(payload["data"]["Croppings"]) == 1
    tampered = receiver.requests[0][1].replace(b"ctx-7", b"ctx-8")
    with pytest.raises(Exception, match=r"(?i)signature"):
        Webhook(secret).verify(tampered, receiver.requests[0][0])


def test_failed_job_is_called_back_and_410_stops_delivery(stack: Stack) -> None:
    project, bucket = stack.project()
    secret = _secret(stack, project)
    receiver = Receiver([410])
    try:
        with stack.http() as c:
            rid = submit(
                c, project, {"SourceURI": f"oss://{bucket}/missing.jpg", "CallbackURL": receiver.url}
            )
            assert wait_done(c, project, rid)["Code"] == "ResourceNotFound"
        job = _wait_callback(stack, project, rid, "Failed")
        time.sleep(2.5)  # longer than the whole retry schedule: nothing more may arrive
    finally:
        receiver.close()
    assert len(receiver.requests) == 1 and job["Callback"]["LastStatusCode"] == 410
    event = json.loads(receiver.requests[0][1])
    assert event["type"] == "crop-job.failed" and event["data"]["Code"] == "ResourceNotFound"
    Webhook(secret).verify(receiver.requests[0][1], receiver.requests[0][0])

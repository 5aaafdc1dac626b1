"""One trace from the HTTP request through the queue into the worker: the API and a worker run with
CROPQ_TRACING=otlp and export to a tiny OTLP/HTTP receiver on loopback."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)

from tests.integration.helpers import jpeg, wait_done

TRACE_ID = "0af7651916cd43dd8448eb211c80319c"
CALLER_SPAN_ID = "b7ad6b7169203331"


@dataclass(frozen=True)
class ReceivedSpan:
    service: str
    name: str
    trace_id: str
    span_id: str
    parent_id: str


class OtlpReceiver:
    """Accepts OTLP/HTTP protobuf exports on /v1/traces and keeps every span."""

    def __init__(self) -> None:
        self.spans: list[ReceivedSpan] = []
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                request = ExportTraceServiceRequest.FromString(body)
                receiver._keep(request)
                answer = ExportTraceServiceResponse().SerializeToString()
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.endpoint = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def _keep(self, request: ExportTraceServiceRequest) -> None:
        for resource_spans in request.resource_spans:
            attributes = {a.key: a.value.string_value for a in resource_spans.resource.attributes}
            for scope_spans in resource_spans.scope_spans:
                with self._lock:
                    self.spans.extend(
                        ReceivedSpan(
                            attributes.get("service.name", ""),
                            s.name,
                            s.trace_id.hex(),
                            s.span_id.hex(),
                            s.parent_span_id.hex(),
                        )
                        for s in scope_spans.spans
                    )

    def trace(self, trace_id: str) -> list[ReceivedSpan]:
        with self._lock:
            return [s for s in self.spans if s.trace_id == trace_id]

    def close(self) -> None:
        self.server.shutdown()


@pytest.fixture
def receiver() -> Iterator[OtlpReceiver]:
    r = OtlpReceiver()
    yield r
    r.close()


def test_a_trace_links_the_http_span_to_the_worker_s_spans(
    make_stack: Any, receiver: OtlpReceiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", receiver.endpoint)
    monkeypatch.setenv("OTEL_BSP_SCHEDULE_DELAY", "100")  # spans leave each process within 0.1 s
    stack = make_stack(workers=1, tracing="otlp")
    project, bucket = stack.project()
    uri = stack.put(bucket, "cat.jpg", jpeg(600, 400))
    headers = {"traceparent": f"00-{TRACE_ID}-{CALLER_SPAN_ID}-01", "X-Request-Id": "caller-7f3a"}
    with stack.http() as c:
        answer = c.post(
            f"/v1/projects/{project}/crop-jobs",
            json={"SourceURI": uri, "AspectRatios": ["1:1"]},
            headers=headers,
        )
        assert answer.status_code == 202, answer.text
        rid = answer.json()["RequestId"]
        assert rid != "caller-7f3a" and answer.headers["x-request-id"] == "caller-7f3a"
        assert wait_done(c, project, rid)["Status"] == "Succeeded"

    worker_steps = {"run/cropq.crop", "fetch", "engine", "decode", "detect", "score", "store"}
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        spans = receiver.trace(TRACE_ID)
        if worker_steps <= {s.name for s in spans if s.service == "cropq-worker"}:
            break
        time.sleep(0.2)
    by_id = {s.span_id: s for s in spans}
    (http,) = [s for s in spans if s.service == "cropq-api" and s.parent_id == CALLER_SPAN_ID]
    assert http.name == "POST /v1/projects/{ProjectName}/crop-jobs"
    assert worker_steps <= {s.name for s in spans if s.service == "cropq-worker"}, sorted(
        (s.service, s.name) for s in receiver.spans
    )
    # Every worker step's parent chain crosses the queue and reaches the HTTP request's span.
    for step in (s for s in spans if s.service == "cropq-worker"):
        chain = [step]
        while chain[-1].parent_id in by_id:
            chain.append(by_id[chain[-1].parent_id])
        assert http in chain, [(s.service, s.name) for s in chain]
    # The engine's own stages (worker/engine/stages.py) hang under its span.
    (engine,) = [s for s in spans if s.service == "cropq-worker" and s.name == "engine"]
    for name in ("decode", "detect", "score"):
        (engine_stage,) = [s for s in spans if s.name == name]
        assert engine_stage.parent_id == engine.span_id, name
    # The request's log lines carry our RequestId, the caller's id and the trace.
    lines = [json.loads(line) for line in stack.api.log_path.read_text().splitlines() if line.startswith("{")]
    (logged,) = [e for e in lines if e.get("event") == "job_queued" and e.get("request_id") == rid]
    assert (logged["client_request_id"], logged["trace_id"]) == ("caller-7f3a", TRACE_ID)

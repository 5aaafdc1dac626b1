"""Tracing with the SDK's in-memory exporter: the API's request span (and an incoming traceparent), the crop
run's spans with fake collaborators, the caller's X-Request-Id, and tracing off without the otel extra."""

from __future__ import annotations

import contextlib
import subprocess
import sys
import textwrap
from collections.abc import Iterator, MutableMapping
from typing import Any

import pytest
import structlog
from fastapi import FastAPI
from fastapi.testclient import TestClient
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from structlog.testing import LogCapture

from api.request_context import MAX_CLIENT_REQUEST_ID_LENGTH, install_request_context
from api.tracing import install_tracing
from tests.unit.crop_task.fakes import MSG, RESULT, RID, Calls, FakeStore, make_deps, make_job
from worker import tracing
from worker.contracts import CropTaskMessage, JobStatus
from worker.crop_job import RunPolicy, run_crop_job
from worker.engine.stages import stage
from worker.engine.types import CropResult
from worker.settings import Settings

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT_ID = "00f067aa0ba902b7"


@pytest.fixture
def exporter() -> Iterator[InMemorySpanExporter]:
    spans = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(spans))
    tracing.start_tracing(Settings(tracing="console"), "cropq-test", provider)
    yield spans
    tracing.stop_tracing()


@contextlib.contextmanager
def capture_lines() -> Iterator[list[MutableMapping[str, Any]]]:
    """The log lines as written: with what the request bound in structlog's context vars."""
    capture = LogCapture()
    structlog.configure(processors=[structlog.contextvars.merge_contextvars, capture])
    yield capture.entries


def _app(settings: Settings) -> FastAPI:
    app = FastAPI()
    install_request_context(app)

    @app.get("/v1/ping")
    def ping() -> dict[str, str | None]:
        return {"trace": tracing.current_trace_id()}

    install_tracing(app, settings)
    return app


def _server_span(spans: tuple[ReadableSpan, ...]) -> ReadableSpan:
    (server,) = [s for s in spans if s.parent is None or s.parent.is_remote]
    return server


def test_a_request_gets_a_server_span_and_its_logs_carry_the_trace(exporter: InMemorySpanExporter) -> None:
    with TestClient(_app(Settings(tracing="console"))) as client, capture_lines() as logs:
        answer = client.get("/v1/ping")
    assert answer.status_code == 200
    (server,) = exporter.get_finished_spans()  # one span per request, no send/receive spans
    assert server.name == "GET /v1/ping" and server.parent is None
    trace_id = format(server.context.trace_id, "032x")
    assert answer.json()["trace"] == trace_id
    (line,) = [e for e in logs if e["event"] == "http_request"]
    assert line["trace_id"] == trace_id and line["request_id"] == answer.headers["x-acs-request-id"]


def test_an_incoming_traceparent_is_continued(exporter: InMemorySpanExporter) -> None:
    with TestClient(_app(Settings(tracing="console"))) as client:
        client.get("/v1/ping", headers={"traceparent": f"00-{TRACE_ID}-{PARENT_ID}-01"})
    server = _server_span(exporter.get_finished_spans())
    assert format(server.context.trace_id, "032x") == TRACE_ID
    assert server.parent is not None and format(server.parent.span_id, "016x") == PARENT_ID


def test_probes_are_not_traced(exporter: InMemorySpanExporter) -> None:
    app = _app(Settings(tracing="console"))
    app.get("/healthz")(lambda: {})
    with TestClient(app) as client:
        assert client.get("/healthz").status_code == 200
    assert exporter.get_finished_spans() == ()


def test_a_caller_s_request_id_is_logged_and_echoed_beside_ours() -> None:
    with TestClient(_app(Settings())) as client, capture_lines() as logs:
        answer = client.get("/v1/ping", headers={"X-Request-Id": "client-42.a:b/c+d=e@f"})
    ours = answer.headers["x-acs-request-id"]
    assert answer.headers["x-request-id"] == "client-42.a:b/c+d=e@f" != ours
    (line,) = [e for e in logs if e["event"] == "http_request"]
    assert (line["request_id"], line["client_request_id"]) == (ours, "client-42.a:b/c+d=e@f")
    assert answer.json() == {"trace": None}  # tracing off


@pytest.mark.parametrize(
    "hostile",
    [
        "x" * (MAX_CLIENT_REQUEST_ID_LENGTH + 1),
        "two words",
        "<script>alert(1)</script>",
        '"quoted"',
        "-leading-dash",
        "tab\there",
        "caf%C3%A9",
        "",
    ],
)
def test_a_hostile_request_id_is_ignored_and_replaced_by_ours(hostile: str) -> None:
    with TestClient(_app(Settings())) as client, capture_lines() as logs:
        answer = client.get("/v1/ping", headers={"X-Request-Id": hostile})
    assert answer.status_code == 200
    assert answer.headers["x-request-id"] == answer.headers["x-acs-request-id"]
    assert all("client_request_id" not in e for e in logs)


def test_non_ascii_request_id_bytes_are_ignored() -> None:
    with TestClient(_app(Settings())) as client:
        answer = client.get("/v1/ping", headers=[(b"x-request-id", "caf\u00e9".encode("latin-1"))])
    assert answer.status_code == 200
    assert answer.headers["x-request-id"] == answer.headers["x-acs-request-id"]


def _staged_engine(data: bytes, msg: CropTaskMessage) -> CropResult:
    # As the engine reports its stages: scoring comes in two pieces (analysis, then per ratio).
    with stage("decode"):
        pass
    with stage("detect"), stage("detect.face"):
        pass
    with stage("score"):
        pass
    with stage("score"):
        pass
    return RESULT


def test_a_crop_run_has_a_span_per_step_under_the_task_s_span(exporter: InMemorySpanExporter) -> None:
    store, calls = FakeStore(make_job()), Calls()
    tracer = tracing.worker_tracer()
    assert isinstance(tracer, tracing.OtelTracer)
    deps = make_deps(store, calls, engine=_staged_engine, tracer=tracer)
    provider_tracer = tracing._provider.get_tracer("test")  # type: ignore[union-attr]
    with provider_tracer.start_as_current_span("run/cropq.crop") as task_span:
        run_crop_job(MSG, deps, RunPolicy(3, 60, 45))
    assert store.job.Status is JobStatus.SUCCEEDED and calls.callbacks == [RID]
    spans = {s.name: s for s in exporter.get_finished_spans()}
    assert sorted(spans) == sorted(
        ["run/cropq.crop", "fetch", "engine", "decode", "detect", "detect.face", "score", "store", "callback"]
    )
    trace_id = task_span.get_span_context().trace_id
    assert {s.context.trace_id for s in spans.values()} == {trace_id}

    def parent(name: str) -> str:
        span_parent = spans[name].parent
        assert span_parent is not None
        (found,) = [n for n, s in spans.items() if s.context.span_id == span_parent.span_id]
        return found

    for step in ("fetch", "engine", "store", "callback"):
        assert parent(step) == "run/cropq.crop"
    for engine_stage in ("decode", "detect", "score"):
        assert parent(engine_stage) == "engine"
    assert parent("detect.face") == "detect"  # a finer stage nests under its prefix
    # Stage spans keep the engine's own times, in order, inside the engine's span.
    starts = [spans[n].start_time or 0 for n in ("engine", "decode", "detect", "score")]
    assert starts[0] > 0 and starts == sorted(starts)
    assert 0 < (spans["score"].end_time or 0) <= (spans["engine"].end_time or 0)


def test_a_failed_step_s_span_records_the_error(exporter: InMemorySpanExporter) -> None:
    store, calls = FakeStore(make_job()), Calls()

    def broken(msg: CropTaskMessage) -> bytes:
        raise ValueError("boom")

    run_crop_job(
        MSG, make_deps(store, calls, fetch=broken, tracer=tracing.worker_tracer()), RunPolicy(3, 60, 45)
    )
    fetch = next(s for s in exporter.get_finished_spans() if s.name == "fetch")
    assert not fetch.status.is_ok and fetch.events[0].name == "exception"
    assert store.job.Code == "InternalError"


BLOCK_OTEL = textwrap.dedent(
    """
    import importlib.abc, sys

    EXTRA = ("opentelemetry.sdk", "opentelemetry.instrumentation", "opentelemetry.exporter")

    class NoOtel(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.startswith(EXTRA):
                raise ImportError(f"blocked: {name}")
            return None

    sys.meta_path.insert(0, NoOtel())
    """
)


def test_tracing_off_works_without_the_otel_extra() -> None:
    # The extra's packages are unimportable (opentelemetry-api itself comes with FastAPI).
    code = BLOCK_OTEL + textwrap.dedent(
        """
        from fastapi.testclient import TestClient
        from api.main import create_app
        from worker import tracing
        from worker.settings import Settings
        import worker.celery_app, worker.crop_job

        app = create_app(Settings(tracing="off"))
        print(tracing.worker_tracer() is tracing.NO_TRACING, tracing.current_trace_id())
        try:
            tracing.start_tracing(Settings(tracing="otlp"), "x")
        except tracing.TracingUnavailable as e:
            print(str(e).split(":")[0])
        """
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    lines = out.stdout.strip().splitlines()[-2:]
    assert lines == [
        "True None",
        "CROPQ_TRACING=otlp needs the otel extra (pip install 'cropq[otel]'), or set CROPQ_TRACING=off",
    ]

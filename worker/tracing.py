"""OpenTelemetry tracing, optional (the ``otel`` extra), chosen by ``CROPQ_TRACING``.

``off`` (the default) imports nothing from opentelemetry, so an install without the extra works. ``otlp``
exports spans in batches over OTLP/HTTP to the collector the standard ``OTEL_EXPORTER_OTLP_*`` variables name;
``console`` prints them. Either way the Celery instrumentation is installed: it writes the trace context into
every task message's headers when a task is sent (from the API's producer app, a retry, a callback) and
continues it when the task runs, so one trace follows a job from the HTTP request into the worker.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Protocol

import structlog

from worker.engine.stages import reporting_stages
from worker.settings import Settings

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.trace import Span
    from opentelemetry.trace import Tracer as OtelApiTracer

log = structlog.get_logger("cropq.tracing")

INSTRUMENTATION_NAME = "cropq"

_provider: TracerProvider | None = None
"""This process's provider once tracing is on."""


class Tracer(Protocol):
    """Spans around a crop run's steps (worker/crop_job.py): fetch, engine (its stages below it), render,
    store, callback."""

    def span(self, name: str) -> AbstractContextManager[None]: ...
    def engine_stages(self) -> AbstractContextManager[None]: ...


class _NoTracer:
    @contextlib.contextmanager
    def span(self, name: str) -> Iterator[None]:
        yield

    def engine_stages(self) -> AbstractContextManager[None]:
        return self.span("")


NO_TRACING: Tracer = _NoTracer()
"""Tracing off: no span, nothing imported."""


class TracingUnavailable(RuntimeError):
    """Tracing is asked for but the ``otel`` extra is not installed."""


def start_tracing(
    settings: Settings, service_name: str, provider: TracerProvider | None = None
) -> TracerProvider | None:
    """Turn tracing on for this process as ``settings`` say (once; later calls return the same provider).
    Returns None when tracing is off. ``provider`` replaces the exporting one (tests pass their own)."""
    global _provider
    if settings.tracing == "off":
        return None
    if _provider is not None:
        return _provider
    try:
        from opentelemetry import trace
        from opentelemetry.instrumentation.celery import CeleryInstrumentor
        from opentelemetry.sdk.resources import SERVICE_NAME, Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter, SpanExporter
    except ImportError as e:
        raise TracingUnavailable(
            f"CROPQ_TRACING={settings.tracing} needs the otel extra (pip install 'cropq[otel]'), "
            f"or set CROPQ_TRACING=off: {e}"
        ) from e
    if provider is None:
        exporter: SpanExporter
        if settings.tracing == "otlp":
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

            exporter = OTLPSpanExporter()  # endpoint, headers and timeout from OTEL_EXPORTER_OTLP_*
        else:
            exporter = ConsoleSpanExporter()
        provider = TracerProvider(resource=Resource.create({SERVICE_NAME: service_name}))
        provider.add_span_processor(BatchSpanProcessor(exporter))
        trace.set_tracer_provider(provider)
    CeleryInstrumentor().instrument(  # type: ignore[no-untyped-call]
        tracer_provider=provider
    )
    _provider = provider
    log.info("tracing_started", exporter=settings.tracing, service=service_name)
    return provider


def stop_tracing() -> None:
    """Export what is buffered and stop (a process that exits must not lose its last spans)."""
    global _provider
    if _provider is None:
        return
    from opentelemetry.instrumentation.celery import CeleryInstrumentor

    CeleryInstrumentor().uninstrument()  # type: ignore[no-untyped-call]
    _provider.shutdown()
    _provider = None


class OtelTracer:
    """The crop run's spans (worker/crop_job.py's ``Tracer``) on an OpenTelemetry tracer."""

    def __init__(self, tracer: OtelApiTracer) -> None:
        self._tracer = tracer

    @contextlib.contextmanager
    def span(self, name: str) -> Iterator[None]:
        with self._tracer.start_as_current_span(name):
            yield

    @contextlib.contextmanager
    def engine_stages(self) -> Iterator[None]:
        """Spans for the stages the engine reports (worker/engine/stages.py), children of the current span,
        with the engine's own start and end times. A stage reported in several pieces (scoring happens both
        in the analysis and per ratio) becomes one span from its first start to its last end; a dotted stage
        (``detect.face``) becomes a child of its prefix's span (``detect``) when that was reported too."""
        from opentelemetry import trace

        reported: dict[str, tuple[int, int]] = {}

        def record(name: str, start: int, end: int) -> None:
            first, _ = reported.get(name, (start, end))
            reported[name] = (min(first, start), end)

        try:
            with reporting_stages(record):
                yield
        finally:
            made: dict[str, Span] = {}
            for name in sorted(reported, key=lambda n: n.count(".")):  # parents before their children
                start, end = reported[name]
                parent = made.get(name.rpartition(".")[0])
                context = trace.set_span_in_context(parent) if parent is not None else None
                made[name] = self._tracer.start_span(name, context=context, start_time=start)
                made[name].end(end_time=end)


def worker_tracer() -> Tracer:
    """The crop run's tracer in this process: spans when tracing is on, nothing otherwise."""
    if _provider is None:
        return NO_TRACING
    return OtelTracer(_provider.get_tracer(INSTRUMENTATION_NAME))


def current_trace_id() -> str | None:
    """The current trace's id (32 hex digits) when tracing is on and a span is recording, for log lines."""
    if _provider is None:
        return None
    from opentelemetry import trace

    ctx = trace.get_current_span().get_span_context()
    return format(ctx.trace_id, "032x") if ctx.is_valid else None

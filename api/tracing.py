"""The API's traces: the FastAPI instrumentation (one server span per request, continuing an incoming W3C
``traceparent``) and, through worker/tracing.py, the Celery instrumentation that carries the trace context
in the headers of every task the API sends. Nothing is imported from opentelemetry when tracing is off."""

from __future__ import annotations

from typing import TYPE_CHECKING

from fastapi import FastAPI

from worker.settings import Settings
from worker.tracing import start_tracing

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider

UNTRACED_URLS = "/healthz,/readyz,/metrics"
"""Probes and scrapes: frequent, uninteresting, and they would drown the traces that matter."""


def install_tracing(app: FastAPI, settings: Settings, provider: TracerProvider | None = None) -> None:
    """Trace ``app``'s requests when ``CROPQ_TRACING`` is on (``provider``: tests pass their own)."""
    provider = start_tracing(settings, "cropq-api", provider)
    if provider is None:
        return
    from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor

    # One span per request: the ASGI send and receive events would add a span per body chunk.
    FastAPIInstrumentor.instrument_app(
        app, tracer_provider=provider, excluded_urls=UNTRACED_URLS, exclude_spans=["receive", "send"]
    )

"""Every request's context: our RequestId, the caller's ``X-Request-Id``, the trace, the request's log line.

The RequestId is always ours (a fresh upper-case UUID): it names the job a submit creates, so it must be
unique and unguessable, never chosen by a caller. A caller's ``X-Request-Id`` is honoured beside it: bound on
every log line of the request as ``client_request_id`` and echoed in the answer's ``X-Request-Id``. One that
is too long or carries odd characters is ignored (never an error): the answer then echoes our RequestId.
"""

from __future__ import annotations

import re
import time
from collections.abc import Awaitable, Callable

import structlog
from fastapi import FastAPI, Request, Response

from api.errors import new_request_id
from api.metrics import HTTP_SECONDS
from worker.tracing import current_trace_id

log = structlog.get_logger("cropq.api")

CLIENT_REQUEST_ID_HEADER = "x-request-id"
MAX_CLIENT_REQUEST_ID_LENGTH = 128
_CLIENT_REQUEST_ID_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:/+=@-]*")
"""Letters, digits and the punctuation of UUIDs, ULIDs, base64 and trace ids: nothing a log reader or a header
could misread (no spaces, quotes, control characters or non-ASCII)."""


def client_request_id(value: str | None) -> str | None:
    """The caller's request id when it is safe to log and echo, else None."""
    if not value or len(value) > MAX_CLIENT_REQUEST_ID_LENGTH:
        return None
    return value if _CLIENT_REQUEST_ID_RE.fullmatch(value) else None


def install_request_context(app: FastAPI) -> None:
    @app.middleware("http")
    async def request_context(
        request: Request, call_next: Callable[[Request], Awaitable[Response]]
    ) -> Response:
        rid = new_request_id()
        request.state.request_id = rid
        theirs = client_request_id(request.headers.get(CLIENT_REQUEST_ID_HEADER))
        structlog.contextvars.clear_contextvars()
        structlog.contextvars.bind_contextvars(request_id=rid)
        if theirs is not None:
            structlog.contextvars.bind_contextvars(client_request_id=theirs)
        trace_id = current_trace_id()  # the HTTP span's, when tracing is on
        if trace_id is not None:
            structlog.contextvars.bind_contextvars(trace_id=trace_id)
        t0 = time.perf_counter()
        response = await call_next(request)
        elapsed = time.perf_counter() - t0
        route = getattr(request.scope.get("route"), "path", "unmatched")
        HTTP_SECONDS.labels(request.method, route, str(response.status_code)).observe(elapsed)
        response.headers.setdefault("x-acs-request-id", rid)
        response.headers[CLIENT_REQUEST_ID_HEADER] = theirs or rid
        log.info(
            "http_request",
            method=request.method,
            route=route,
            status=response.status_code,
            ms=round(elapsed * 1000, 1),
        )
        return response

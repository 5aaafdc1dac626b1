"""IMM-style errors: every non-2xx answer is ``{RequestId, HostId, Code, Message, Recommend}``.

The official SDK maps 4xx to ClientException, 5xx to ServerException, and any status with a positive
``x-acs-retry-after`` header to ThrottlingException; FastAPI's own 404/405/422/500 answers are replaced
here so the SDK never meets a body it cannot parse.
"""

from __future__ import annotations

import uuid
from typing import Any

import redis
import structlog
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

log = structlog.get_logger("cropq.api")

JSON_MEDIA_TYPE = "application/json;charset=utf-8"


class ImmError(Exception):
    """An error answered to the client with the IMM body."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        *,
        recommend: str = "",
        headers: dict[str, str] | None = None,
        max_message_length: int | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.recommend = recommend
        self.headers = headers or {}
        # A longer cap for messages that must quote a whole server-side string (v2's string to sign).
        self.max_message_length = max_message_length


def invalid_argument(message: str) -> ImmError:
    return ImmError(400, "InvalidArgument", message)


def not_found(resource: str, message: str | None = None) -> ImmError:
    return ImmError(404, "ResourceNotFound", message or f"The specified resource {resource} is not found.")


def service_unavailable(message: str) -> ImmError:
    return ImmError(503, "ServiceUnavailable", message)


def request_id_of(request: Request) -> str:
    """The RequestId of this HTTP request (set by the middleware; generated here if missing)."""
    rid = getattr(request.state, "request_id", None)
    if rid is None:
        rid = new_request_id()
        request.state.request_id = rid
    return str(rid)


def new_request_id() -> str:
    """IMM-style request id: upper-case UUID."""
    return str(uuid.uuid4()).upper()


MAX_MESSAGE_LENGTH = 512


def _printable(text: str, limit: int = MAX_MESSAGE_LENGTH) -> str:
    """A message that always encodes (lone surrogates from non-UTF-8 input are escaped) and stays short
    (it may quote what the client sent)."""
    if len(text) > limit:
        text = text[: limit - 3] + "..."
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def error_response(request: Request, err: ImmError) -> JSONResponse:
    rid = request_id_of(request)
    body: dict[str, Any] = {
        "RequestId": rid,
        "HostId": request.headers.get("host", "")[:255],
        "Code": err.code,
        "Message": _printable(err.message, err.max_message_length or MAX_MESSAGE_LENGTH),
        "Recommend": err.recommend,
    }
    headers = {"x-acs-request-id": rid, **err.headers}
    return JSONResponse(body, status_code=err.status, headers=headers, media_type=JSON_MEDIA_TYPE)


def _validation_message(exc: RequestValidationError) -> str:
    parts = []
    for e in exc.errors()[:3]:
        loc = ".".join(str(p) for p in e.get("loc", ()) if p not in ("body", "query", "path"))
        parts.append(f"{loc or 'request'}: {e.get('msg', 'invalid')}")
    return "; ".join(parts) or "invalid request"


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ImmError)
    async def _imm(request: Request, exc: ImmError) -> JSONResponse:
        if exc.status >= 500:
            log.warning("request_failed", code=exc.code, status=exc.status, message=exc.message)
        return error_response(request, exc)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        return error_response(request, invalid_argument(_validation_message(exc)))

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        if exc.status_code == 404:
            err = ImmError(404, "InvalidAction.NotFound", "The specified path or action is not found.")
        elif exc.status_code == 405:
            err = ImmError(405, "MethodNotAllowed", f"Method {request.method} is not allowed here.")
        else:
            err = ImmError(
                exc.status_code,
                "InvalidArgument" if exc.status_code < 500 else "InternalError",
                str(exc.detail),
            )
        return error_response(request, err)

    @app.exception_handler(redis.RedisError)
    async def _redis_down(request: Request, exc: redis.RedisError) -> JSONResponse:
        # Nothing was accepted: the client may safely retry (with its IdempotencyKey).
        log.warning("redis_unavailable", error=type(exc).__name__)
        return error_response(
            request, ImmError(503, "ServiceUnavailable", "The job store is unavailable; try again shortly.")
        )

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unexpected_error", error=type(exc).__name__)
        return error_response(request, ImmError(500, "InternalError", "An internal error occurred."))

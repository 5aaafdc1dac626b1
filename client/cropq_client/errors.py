"""The client's exceptions: every error answer of the API becomes an :class:`ApiError` subclass chosen by
its HTTP status, carrying the IMM body's ``Code``, ``Message`` and ``RequestId``; a server that cannot be
reached is a :class:`ConnectionFailed`. Catch :class:`CropqError` for all of them."""

from __future__ import annotations

from typing import Any

import httpx


class CropqError(Exception):
    """Base of every error this package raises."""


class ConnectionFailed(CropqError):
    """The API could not be reached, or did not answer in time (nothing is known about the request)."""


class WaitTimeout(CropqError):
    """``wait``/``wait_batch`` gave up before the job or batch ended; ``last`` is the last state read."""

    def __init__(self, message: str, last: Any) -> None:
        super().__init__(message)
        self.last = last


class ApiError(CropqError):
    """An error answer: ``status`` (HTTP), and the IMM body's ``code``, ``message`` and ``request_id``."""

    def __init__(self, status: int, code: str, message: str, request_id: str | None = None) -> None:
        super().__init__(f"{status} {code}: {message}" + (f" (RequestId {request_id})" if request_id else ""))
        self.status = status
        self.code = code
        self.message = message
        self.request_id = request_id


class InvalidArgument(ApiError):
    """400: the request was refused as written."""


class AccessDenied(ApiError):
    """401 or 403: the key is unknown, wrong, or may not act on this project."""


class NotFound(ApiError):
    """404: no such project, job or batch (another project's answers the same)."""


class Conflict(ApiError):
    """409: the resource is in a state that forbids this (e.g. cancelling a finished job)."""


class Throttled(ApiError):
    """429: the key's rate limit; ``retry_after`` is the server's advice in seconds, when it gives one."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        request_id: str | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(status, code, message, request_id)
        self.retry_after = retry_after


class ServerError(ApiError):
    """5xx: the service failed or is unavailable for now; the request may be retried."""


_BY_STATUS: dict[int, type[ApiError]] = {
    400: InvalidArgument,
    401: AccessDenied,
    403: AccessDenied,
    404: NotFound,
    409: Conflict,
}


def _retry_after(response: httpx.Response) -> float | None:
    for name in ("Retry-After", "x-acs-retry-after"):
        value = response.headers.get(name)
        if value:
            try:
                seconds = float(value)
            except ValueError:
                continue
            # IMM's header counts milliseconds; HTTP's counts seconds.
            return seconds / 1000 if name != "Retry-After" else seconds
    return None


def error_from_response(response: httpx.Response) -> ApiError:
    """The exception for an error answer (any body: a proxy's HTML page still gives a clear error)."""
    try:
        body = response.json()
    except ValueError:
        body = None
    if not isinstance(body, dict):
        body = {}
    code = str(body.get("Code") or response.reason_phrase or "Error")
    message = str(body.get("Message") or response.text[:200].strip() or f"HTTP {response.status_code}")
    rid = body.get("RequestId")
    request_id = str(rid) if rid else None
    status = response.status_code
    if status == 429:
        return Throttled(status, code, message, request_id, _retry_after(response))
    if status >= 500:
        return ServerError(status, code, message, request_id)
    return _BY_STATUS.get(status, ApiError)(status, code, message, request_id)


__all__ = [
    "AccessDenied",
    "ApiError",
    "Conflict",
    "ConnectionFailed",
    "CropqError",
    "InvalidArgument",
    "NotFound",
    "ServerError",
    "Throttled",
    "WaitTimeout",
    "error_from_response",
]

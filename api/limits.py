"""A request-body cap enforced before anything parses or authenticates the body (a pure ASGI middleware).

A declared ``Content-Length`` above the cap is refused at once, without reading a byte of the body; a body
without one (chunked) is counted as it streams in and refused as soon as it passes the cap. Either way the
client gets 413 with the IMM error body, and the connection is closed (the rest of the body is never read).
"""

from __future__ import annotations

import json

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.errors import JSON_MEDIA_TYPE, ImmError, new_request_id

TOO_LARGE_CODE = "RequestEntityTooLarge"


class BodyTooLarge(ImmError):
    """Raised from ``receive`` once the body passes the cap; it stops whatever was reading it."""

    def __init__(self, max_bytes: int) -> None:
        super().__init__(413, TOO_LARGE_CODE, f"The request body is larger than {max_bytes} bytes.")


def declared_length(scope: Scope) -> int | None:
    """The ``Content-Length`` header as an int; None when absent or unreadable (the server refuses those)."""
    for name, value in scope.get("headers", ()):
        if name.lower() == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


def is_upload(scope: Scope) -> bool:
    """A multipart POST to a crop-jobs collection: the one request that may carry an image."""
    if scope.get("method") != "POST" or not str(scope.get("path", "")).endswith("/crop-jobs"):
        return False
    for name, value in scope.get("headers", ()):
        if name.lower() == b"content-type":
            return bytes(value).split(b";", 1)[0].strip().lower() == b"multipart/form-data"
    return False


class BodyLimitMiddleware:
    def __init__(self, app: ASGIApp, max_bytes: int, upload_max_bytes: int | None = None) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.upload_max_bytes = upload_max_bytes or max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.upload_max_bytes if is_upload(scope) else self.max_bytes
        declared = declared_length(scope)
        if declared is not None and declared > limit:
            await self._refuse(scope, send, limit)
            return

        received = 0
        exceeded = False
        started = False

        async def capped_receive() -> Message:
            nonlocal received, exceeded
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    exceeded = True
                    raise BodyTooLarge(limit)
            return message

        async def guarded_send(message: Message) -> None:
            nonlocal started
            # Once the cap is hit, whatever the inner layers answer (a parse error, say) is replaced by 413.
            if exceeded and not started:
                return
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, capped_receive, guarded_send)
        except Exception:
            if not exceeded or started:
                raise
        if exceeded and not started:
            await self._refuse(scope, send, limit)

    async def _refuse(self, scope: Scope, send: Send, limit: int) -> None:
        # Reuse the RequestId the request-context middleware gave this request, when it got that far.
        state = scope.get("state") or {}
        rid = str(state.get("request_id") or new_request_id())
        host = next((v.decode("latin-1") for k, v in scope.get("headers", ()) if k.lower() == b"host"), "")
        err = BodyTooLarge(limit)
        body = json.dumps(
            {"RequestId": rid, "HostId": host, "Code": err.code, "Message": err.message, "Recommend": ""}
        ).encode()
        await send(
            {
                "type": "http.response.start",
                "status": err.status,
                "headers": [
                    (b"content-type", JSON_MEDIA_TYPE.encode()),
                    (b"content-length", str(len(body)).encode()),
                    (b"x-acs-request-id", rid.encode()),
                    # The unread rest of the body makes the connection unusable for another request.
                    (b"connection", b"close"),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})

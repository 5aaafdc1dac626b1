"""The OpenAPI document as the service really behaves: its auth schemes and its IMM error bodies.

FastAPI would advertise its own 422 validation body, which this API never sends (validation failures are
400 ``InvalidArgument``); every authenticated operation is given the real schemes and error answers here.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from api.schemas import ErrorBody

_ERRORS: dict[int, str] = {
    400: "Invalid argument (`InvalidArgument`), or an incomplete or malformed signature.",
    403: "The key may not do this (`Forbidden`), a disabled key, or a signature that does not match.",
    404: "No such project, job or access key (`ResourceNotFound`, `InvalidAccessKeyId.NotFound`).",
    413: "The request body is larger than `CROPQ_MAX_BODY_BYTES` (`RequestEntityTooLarge`).",
    429: "Too many requests for this access key (`Throttling`); `x-acs-retry-after` gives the wait in ms.",
    503: "The job store or queue is unavailable, or (RPC face) the job still runs (`ServiceUnavailable`).",
}

SECURITY_SCHEMES: dict[str, Any] = {
    "Bearer": {
        "type": "http",
        "scheme": "bearer",
        "bearerFormat": "<AccessKeyId>:<AccessKeySecret>",
        "description": "`Authorization: Bearer <AccessKeyId>:<AccessKeySecret>` (curl, scripts).",
    },
    "ACS3": {
        "type": "apiKey",
        "in": "header",
        "name": "Authorization",
        "description": "The IMM SDK's signature: `Authorization: ACS3-HMAC-SHA256 Credential=<AccessKeyId>,"
        "SignedHeaders=<names>,Signature=<hex>` over the method, path, query, signed headers and the body's "
        "SHA-256 (`x-acs-content-sha256`), with `x-acs-date` and `x-acs-signature-nonce`.",
    },
}
_SECURITY: list[dict[str, list[str]]] = [{"Bearer": []}, {"ACS3": []}]
_UNAUTHENTICATED_TAGS = {"operations"}


def error_responses() -> dict[int | str, dict[str, Any]]:
    """The error answers of an authenticated route, for ``responses=`` (all with the IMM body)."""
    return {status: {"model": ErrorBody, "description": text} for status, text in _ERRORS.items()}


def install_openapi(app: FastAPI) -> None:
    """Replace ``app.openapi`` with the corrected document (built once, then cached like FastAPI's)."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = _corrected(
                get_openapi(
                    title=app.title,
                    version=app.version,
                    summary=app.summary,
                    description=app.description,
                    routes=app.routes,
                )
            )
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def _corrected(doc: dict[str, Any]) -> dict[str, Any]:
    components = doc.setdefault("components", {})
    schemas = components.setdefault("schemas", {})
    for name in ("HTTPValidationError", "ValidationError"):
        schemas.pop(name, None)
    components["securitySchemes"] = SECURITY_SCHEMES
    schemas.setdefault("ErrorBody", ErrorBody.model_json_schema(ref_template="#/components/schemas/{model}"))
    for item in doc.get("paths", {}).values():
        for op in item.values():
            if not isinstance(op, dict) or "responses" not in op:
                continue
            responses: dict[str, Any] = op["responses"]
            responses.pop("422", None)
            if set(op.get("tags", ())) & _UNAUTHENTICATED_TAGS:
                # No authentication, no parameters: only the body cap applies (and readiness may fail).
                responses.setdefault("413", _error(_ERRORS[413]))
                if op.get("operationId") == "metrics":
                    responses["200"] = {
                        "description": "Prometheus text exposition format.",
                        "content": {"text/plain": {"schema": {"type": "string"}}},
                    }
                if op.get("operationId") == "readyz":
                    responses.setdefault(
                        "503", {"description": "Redis or S3 is unreachable (Checks says which)."}
                    )
                continue
            op["security"] = _SECURITY
            for status, text in _ERRORS.items():
                responses.setdefault(str(status), _error(text))
            responses.setdefault("default", _error("Any other error (e.g. 405, 500), with the IMM body."))
    return doc


def _error(description: str) -> dict[str, Any]:
    return {
        "description": description,
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorBody"}}},
    }

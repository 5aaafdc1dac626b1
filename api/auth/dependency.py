"""The one authentication layer for both faces (IMM RPC and the native API), used as a FastAPI dependency.

Order: STS refused → scheme picked → signature parsed (``IncompleteSignature``) → key looked up
(``InvalidAccessKeyId.*``) → signature and clock verified → nonce claimed → rate limit.
"""

from __future__ import annotations

import hmac
from datetime import datetime

import structlog
from fastapi import Request
from redis.asyncio import Redis

from api.auth import acs3, v2
from api.auth.canonical import form_decode, wire_bytes, wire_str
from api.auth.keystore import AccessKey, AccessKeyStore, KeyStoreConfigError
from api.auth.nonce import claim_nonce
from api.auth.principal import Principal
from api.auth.ratelimit import charge_rate_limit
from api.errors import ImmError
from worker.settings import Settings

log = structlog.get_logger("cropq.auth")

FORM_MEDIA_TYPE = "application/x-www-form-urlencoded"


def _forbidden_sts() -> ImmError:
    return ImmError(403, "Forbidden", "STS security tokens are not supported; sign with an AccessKey pair.")


async def _lookup(keystore: AccessKeyStore, key_id: str) -> AccessKey:
    """Step 3: the key must exist and be enabled."""
    try:
        key = await keystore.get(key_id)
    except KeyStoreConfigError as exc:
        log.error("access_key_unreadable", error=str(exc))
        raise ImmError(500, "InternalError", "The server cannot read its access keys.") from None
    if key is None:
        raise ImmError(404, "InvalidAccessKeyId.NotFound", "Specified access key is not found.")
    if not key.enabled:
        raise ImmError(403, "InvalidAccessKeyId.Inactive", "Specified access key is disabled.")
    return key


def form_pairs(request: Request, body: bytes) -> list[tuple[str, str]]:
    """The pairs of a form-encoded body (none for any other content type), decoded with form rules."""
    content_type = request.headers.get("content-type", "")
    if content_type.split(";", 1)[0].strip().lower() != FORM_MEDIA_TYPE:
        return []
    return form_decode(wire_str(body))


async def _bearer(keystore: AccessKeyStore, credentials: str) -> AccessKey:
    key_id, sep, secret = credentials.strip().partition(":")
    if not sep or not key_id or not secret:
        raise acs3.incomplete("Bearer credentials must be <AccessKeyId>:<AccessKeySecret>.")
    key = await _lookup(keystore, key_id)
    if not hmac.compare_digest(wire_bytes(secret), key.secret.encode("utf-8")):
        raise acs3.signature_mismatch("The AccessKeySecret does not match the AccessKeyId.")
    return key


async def authenticate(request: Request) -> Principal:
    """Authenticate ``request`` (Bearer, ACS3-HMAC-SHA256 or v2) and return who it acts for."""
    state = request.app.state
    redis: Redis = state.redis
    settings: Settings = state.settings
    keystore: AccessKeyStore = state.keystore
    # Tests may pin the clock; production uses the system UTC clock.
    clock: acs3.Clock = getattr(state, "auth_clock", acs3.utc_now)

    headers = [(wire_str(k).lower(), wire_str(v)) for k, v in request.headers.raw]
    if acs3.header_values(headers, "x-acs-security-token"):
        raise _forbidden_sts()
    method = request.method.upper()
    raw_query = wire_str(request.scope.get("query_string", b""))
    authz = acs3.header_values(headers, "authorization")

    nonce: str | None = None
    signed_at: datetime | None = None
    if authz:
        scheme, _, rest = authz[0].strip().partition(" ")
        if scheme.lower() == "bearer" and len(authz) == 1:
            key = await _bearer(keystore, rest)
        else:
            parsed = acs3.parse_acs3(method, request.scope.get("raw_path") or b"/", raw_query, headers)
            key = await _lookup(keystore, parsed.access_key_id)
            signed_at = acs3.verify_acs3(parsed, await request.body(), key.secret, clock=clock)
            nonce = parsed.nonce
    else:
        pairs = form_decode(raw_query) + form_pairs(request, await request.body())
        if any(name == "SecurityToken" for name, _ in pairs):
            raise _forbidden_sts()
        if not v2.is_v2(pairs):
            raise acs3.incomplete(
                "The request is not signed: use the IMM SDK signature or Authorization: Bearer <id>:<secret>."
            )
        parsed_v2 = v2.parse_v2(method, pairs)
        key = await _lookup(keystore, parsed_v2.access_key_id)
        signed_at = v2.verify_v2(parsed_v2, key.secret, clock=clock)
        nonce = parsed_v2.nonce

    if nonce is not None and signed_at is not None:
        ttl = acs3.nonce_ttl_seconds(signed_at, clock())
        await claim_nonce(redis, key.access_key_id, nonce, ttl)

    # Only a verified id reaches the logs, so a forger cannot put words in another key's mouth.
    request.state.access_key_id = key.access_key_id
    structlog.contextvars.bind_contextvars(access_key_id=key.access_key_id)
    await charge_rate_limit(redis, key.access_key_id, 1, settings.rate_limit_per_minute)
    return Principal(access_key_id=key.access_key_id, projects=frozenset(key.projects))

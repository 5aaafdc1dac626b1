"""The one authentication layer for both faces (IMM RPC and the native API), used as a FastAPI dependency.

Order: STS refused → duplicate parameters refused → scheme picked → signature parsed and bound to what it
authorises (``IncompleteSignature``) → failed-authentication throttle → key looked up
(``InvalidAccessKeyId.*``) → signature and clock verified → nonce claimed → rate limit. Every 4xx before
the rate limit, except a request with no credentials at all, counts as a failed authentication of the
client address (and of the claimed key id).

What each scheme binds: ACS3 signs the method, path, query, body hash and the listed headers, and an
unsigned ``content-type`` is refused (it decides whether the body's pairs become parameters). v2 signs only
the method and the parameters, so it is accepted only on the RPC face (path ``/``) with an empty or
form-encoded body, whose pairs are signed with the query.
"""

from __future__ import annotations

import hmac
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime

import structlog
from fastapi import Request
from redis.asyncio import Redis

from api.auth import acs3, v2
from api.auth.canonical import form_decode, wire_bytes, wire_str
from api.auth.failures import check_auth_failures, record_auth_failure
from api.auth.keystore import AccessKey, AccessKeyStore, KeyStoreConfigError
from api.auth.nonce import claim_nonce
from api.auth.principal import Principal
from api.auth.ratelimit import charge_rate_limit
from api.errors import ImmError, invalid_argument
from worker.settings import Settings

log = structlog.get_logger("cropq.auth")

FORM_MEDIA_TYPE = "application/x-www-form-urlencoded"
RPC_PATH = b"/"


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


def is_form(request: Request) -> bool:
    content_type = request.headers.get("content-type", "")
    return content_type.split(";", 1)[0].strip().lower() == FORM_MEDIA_TYPE


MAX_PARAMETERS = 64
"""Query or form pairs one request may carry (DetectImageCropping has about 15): counted with one C scan
before anything is decoded, so a megabyte of ``a&a&a...`` costs no event-loop time before authentication."""


def _decode_pairs(raw: bytes, where: str) -> list[tuple[str, str]]:
    if raw.count(b"&") >= MAX_PARAMETERS:
        raise invalid_argument(f"The {where} carries more than {MAX_PARAMETERS} parameters.")
    return form_decode(wire_str(raw))


def form_pairs(request: Request, body: bytes) -> list[tuple[str, str]]:
    """The pairs of a form-encoded body (none for any other content type), decoded with form rules."""
    return _decode_pairs(body, "form body") if is_form(request) else []


def query_pairs(request: Request) -> list[tuple[str, str]]:
    """The pairs of the query string, decoded with form rules."""
    return _decode_pairs(request.scope.get("query_string", b""), "query string")


def refuse_duplicates(pairs: Sequence[tuple[str, str]]) -> None:
    """A parameter given twice (query, or query plus form body) could be read two ways: refused."""
    seen: set[str] = set()
    for name, _ in pairs:
        if name in seen:
            raise ImmError(400, "InvalidArgument", f"The parameter {name!r} appears more than once.")
        seen.add(name)


class _NoCredentials(ImmError):
    """No credentials at all: answered at once, and not a failed attempt at anyone's secret."""


@dataclass(frozen=True)
class _Claim:
    """A parsed credential: who it claims to be and how to check it once the key is known."""

    key_id: str
    verify: Callable[[AccessKey], datetime | None]  # raises ImmError; the signing time, if signed
    nonce: str | None = None


def _bearer_claim(credentials: str) -> _Claim:
    key_id, sep, secret = credentials.strip().partition(":")
    if not sep or not key_id or not secret:
        raise acs3.incomplete("Bearer credentials must be <AccessKeyId>:<AccessKeySecret>.")

    def verify(key: AccessKey) -> None:
        if not hmac.compare_digest(wire_bytes(secret), key.secret.encode("utf-8")):
            raise acs3.signature_mismatch("The AccessKeySecret does not match the AccessKeyId.")

    return _Claim(key_id, verify)


async def _parse(request: Request, headers: list[tuple[str, str]], clock: acs3.Clock) -> _Claim:
    """Everything that needs no key: the scheme, its parameters, and what the signature must cover."""
    method = request.method.upper()
    raw_path: bytes = request.scope.get("raw_path") or b"/"
    raw_query = wire_str(request.scope.get("query_string", b""))
    body = await request.body()
    query = query_pairs(request)
    refuse_duplicates(query)
    pairs = query + form_pairs(request, body)
    refuse_duplicates(pairs)

    authz = acs3.header_values(headers, "authorization")
    if authz:
        scheme, _, rest = authz[0].strip().partition(" ")
        if scheme.lower() == "bearer" and len(authz) == 1:
            return _bearer_claim(rest)
        parsed = acs3.parse_acs3(method, raw_path, raw_query, headers)
        if acs3.header_values(headers, "content-type") and "content-type" not in parsed.signed_headers:
            raise acs3.incomplete("The content-type header must be signed (list it in SignedHeaders).")
        return _Claim(
            parsed.access_key_id,
            lambda key: acs3.verify_acs3(parsed, body, key.secret, clock=clock),
            parsed.nonce,
        )

    if any(name == "SecurityToken" for name, _ in pairs):
        raise _forbidden_sts()
    if not v2.is_v2(pairs):
        raise _NoCredentials(
            400,
            "IncompleteSignature",
            "The request is not signed: use the IMM SDK signature or Authorization: Bearer <id>:<secret>.",
        )
    # v2 signs neither the path nor a non-form body: anywhere else it could be replayed with new meaning.
    if raw_path != RPC_PATH:
        raise acs3.incomplete(
            "The v2 (query) signature is accepted only on the IMM RPC endpoint /; sign this request with "
            "ACS3-HMAC-SHA256 or use Authorization: Bearer <id>:<secret>."
        )
    if body and not is_form(request):
        raise acs3.incomplete(
            f"A v2-signed request carries an empty body or a {FORM_MEDIA_TYPE} body (whose pairs are signed)."
        )
    parsed_v2 = v2.parse_v2(method, pairs)
    return _Claim(
        parsed_v2.access_key_id, lambda key: v2.verify_v2(parsed_v2, key.secret, clock=clock), parsed_v2.nonce
    )


def _client_address(request: Request) -> str:
    return request.client.host if request.client else "unknown"


async def authenticate(request: Request) -> Principal:
    """Authenticate ``request`` (Bearer, ACS3-HMAC-SHA256 or v2) and return who it acts for."""
    state = request.app.state
    redis: Redis = state.redis
    settings: Settings = state.settings
    keystore: AccessKeyStore = state.keystore
    # Tests may pin the clock; production uses the system UTC clock.
    clock: acs3.Clock = getattr(state, "auth_clock", acs3.utc_now)
    address = _client_address(request)
    failures_limit = settings.auth_failures_per_minute

    headers = [(wire_str(k).lower(), wire_str(v)) for k, v in request.headers.raw]
    claim: _Claim | None = None
    try:
        if acs3.header_values(headers, "x-acs-security-token"):
            raise _forbidden_sts()
        claim = await _parse(request, headers, clock)
        await check_auth_failures(redis, address, claim.key_id, failures_limit)
        key = await _lookup(keystore, claim.key_id)
        signed_at = claim.verify(key)
        if claim.nonce is not None and signed_at is not None:
            ttl = acs3.nonce_ttl_seconds(signed_at, clock())
            await claim_nonce(redis, key.access_key_id, claim.nonce, ttl)
    except ImmError as err:
        if 400 <= err.status < 500 and err.code != "Throttling" and not isinstance(err, _NoCredentials):
            await record_auth_failure(redis, address, claim.key_id if claim else None, failures_limit)
        raise

    # Only a verified id reaches the logs, so a forger cannot put words in another key's mouth.
    request.state.access_key_id = key.access_key_id
    structlog.contextvars.bind_contextvars(access_key_id=key.access_key_id)
    await charge_rate_limit(redis, key.access_key_id, 1, settings.rate_limit_per_minute)
    return Principal(access_key_id=key.access_key_id, projects=frozenset(key.projects))

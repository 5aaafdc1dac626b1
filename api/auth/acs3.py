"""ACS3-HMAC-SHA256 request signatures, verified on raw request parts exactly as imm-wire.md §2 says.

The flow is split so the caller (``dependency.py``) can interleave the Redis work in spec order:
:func:`parse_acs3` (steps 1–2) → key lookup (step 3) → :func:`verify_acs3` (steps 4–10) → nonce (step 11).
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from api.auth.canonical import canonical_query, form_decode, wire_bytes, wire_str
from api.errors import ImmError

ALGORITHM = "ACS3-HMAC-SHA256"
TIME_WINDOW = timedelta(minutes=15)
TIMESTAMP_FORMAT = "%Y-%m-%dT%H:%M:%SZ"
_TIMESTAMP_RE = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z")
# Printable ASCII only: the nonce becomes part of a Redis key.
_NONCE_RE = re.compile(r"[\x21-\x7e]{1,128}")
_HEADER_NAME_RE = re.compile(r"[a-z0-9!#$%&'*+.^_`|~-]+")

REQUIRED_SIGNED_HEADERS = (
    "host",
    "x-acs-action",
    "x-acs-version",
    "x-acs-date",
    "x-acs-signature-nonce",
    "x-acs-content-sha256",
)

Clock = Callable[[], datetime]
Headers = Sequence[tuple[str, str]]


def utc_now() -> datetime:
    return datetime.now(UTC)


def incomplete(message: str) -> ImmError:
    return ImmError(400, "IncompleteSignature", message)


def signature_mismatch(message: str = "") -> ImmError:
    return ImmError(
        400, "SignatureDoesNotMatch", message or "The request signature does not conform to Aliyun standards."
    )


def check_timestamp(value: str, now: datetime, *, field: str) -> datetime:
    """Parse ``YYYY-MM-DDTHH:MM:SSZ`` (UTC) and require it within ±15 min of ``now`` (step 10)."""
    if not _TIMESTAMP_RE.fullmatch(value):
        raise ImmError(400, "InvalidTimeStamp.Format", f"{field} must look like 2026-01-31T12:00:00Z (UTC).")
    try:
        when = datetime.strptime(value, TIMESTAMP_FORMAT).replace(tzinfo=UTC)
    except ValueError:
        raise ImmError(400, "InvalidTimeStamp.Format", f"{field} is not a valid UTC time.") from None
    if abs(now - when) > TIME_WINDOW:
        raise ImmError(
            400,
            "InvalidTimeStamp.Expired",
            f"{field} is more than 15 minutes away from the server time; check the client clock.",
        )
    return when


def check_nonce_syntax(nonce: str, *, field: str) -> None:
    if not _NONCE_RE.fullmatch(nonce):
        raise incomplete(f"{field} must be 1-128 printable ASCII characters.")


def header_values(headers: Headers, name: str) -> list[str]:
    """Every value of header ``name`` (case-insensitive), in arrival order."""
    return [v for k, v in headers if k.lower() == name]


@dataclass(frozen=True)
class Acs3Request:
    """A request whose ``Authorization`` parsed and whose signed headers are all present (steps 1–2)."""

    access_key_id: str
    signed_headers: tuple[str, ...]
    signature: str
    method: str
    raw_path: bytes
    raw_query: str
    headers: tuple[tuple[str, str], ...]
    date: str
    nonce: str
    action: str
    version: str
    content_sha256: str


def parse_authorization(value: str) -> tuple[str, tuple[str, ...], str]:
    """Step 1: ``ACS3-HMAC-SHA256 Credential=..,SignedHeaders=..,Signature=..`` → (key id, headers, sig)."""
    algorithm, _, rest = value.strip().partition(" ")
    if algorithm != ALGORITHM:
        raise incomplete(f"Unsupported signature algorithm; only {ALGORITHM} (or v2) is accepted.")
    parts: dict[str, str] = {}
    for item in rest.split(","):
        name, sep, val = item.strip().partition("=")
        if not sep or name not in ("Credential", "SignedHeaders", "Signature") or name in parts:
            raise incomplete("Authorization must hold Credential, SignedHeaders and Signature once each.")
        parts[name] = val.strip()
    if len(parts) != 3 or not all(parts.values()):
        raise incomplete("Authorization must hold Credential, SignedHeaders and Signature once each.")
    signed = tuple(parts["SignedHeaders"].split(";"))
    return parts["Credential"], signed, parts["Signature"]


def parse_acs3(method: str, raw_path: bytes, raw_query: str, headers: Headers) -> Acs3Request:
    """Steps 1–2. Raises ``IncompleteSignature`` for anything garbled, unsupported or not signed."""
    authz = header_values(headers, "authorization")
    if len(authz) != 1:
        raise incomplete("Exactly one Authorization header is required.")
    key_id, signed, signature = parse_authorization(authz[0])

    # Order is taken as given (step 6 says "in that order"); case and duplicates would make it ambiguous.
    if len(set(signed)) != len(signed) or not all(_HEADER_NAME_RE.fullmatch(h) for h in signed):
        raise incomplete("SignedHeaders must list unique lower-case header names separated by ';'.")
    if "authorization" in signed:
        raise incomplete("The Authorization header cannot sign itself.")
    missing = [h for h in REQUIRED_SIGNED_HEADERS if h not in signed]
    if missing:
        raise incomplete(f"These headers must be signed: {', '.join(missing)}.")
    for name in signed:
        if not header_values(headers, name):
            raise incomplete(f"Signed header {name} is not in the request.")
    single: dict[str, str] = {}
    for name in REQUIRED_SIGNED_HEADERS:
        values = header_values(headers, name)
        if len(values) != 1:
            raise incomplete(f"Header {name} must appear exactly once.")
        single[name] = values[0].strip()
    check_nonce_syntax(single["x-acs-signature-nonce"], field="x-acs-signature-nonce")

    return Acs3Request(
        access_key_id=key_id,
        signed_headers=signed,
        signature=signature,
        method=method,
        raw_path=raw_path,
        raw_query=raw_query,
        headers=tuple((k.lower(), v) for k, v in headers),
        date=single["x-acs-date"],
        nonce=single["x-acs-signature-nonce"],
        action=single["x-acs-action"],
        version=single["x-acs-version"],
        content_sha256=single["x-acs-content-sha256"],
    )


def canonical_headers(headers: Headers, signed_headers: Sequence[str]) -> str:
    """Step 6: ``name:value\\n`` per signed header, in the listed order.

    A repeated header contributes its trimmed values sorted and joined by ``,``.
    """
    lines = []
    for name in signed_headers:
        values = sorted(v.strip() for v in header_values(headers, name))
        lines.append(f"{name}:{','.join(values)}\n")
    return "".join(lines)


def canonical_request(
    method: str,
    raw_path: bytes,
    raw_query: str,
    headers: Headers,
    signed_headers: Sequence[str],
    payload_hash: str,
) -> str:
    """Step 7: the six ``\\n``-joined parts (canonical headers already end in ``\\n``)."""
    return "\n".join(
        [
            method,
            wire_str(raw_path),
            canonical_query(form_decode(raw_query)),
            canonical_headers(headers, signed_headers),
            ";".join(signed_headers),
            payload_hash,
        ]
    )


def string_to_sign(canonical: str) -> str:
    """Step 8."""
    return f"{ALGORITHM}\n{hashlib.sha256(wire_bytes(canonical)).hexdigest()}"


def sign(secret: str, to_sign: str) -> str:
    """Step 9: lower-case hex HMAC-SHA256 keyed with the UTF-8 secret."""
    return hmac.new(secret.encode("utf-8"), wire_bytes(to_sign), hashlib.sha256).hexdigest()


def verify_acs3(parsed: Acs3Request, body: bytes, secret: str, *, clock: Clock = utc_now) -> datetime:
    """Steps 4–10 for a request whose key (step 3) was found; returns the parsed ``x-acs-date``.

    The time window is checked only once the signature holds, so a forged request learns nothing from it.
    """
    payload_hash = hashlib.sha256(body).hexdigest()
    if not hmac.compare_digest(payload_hash.encode(), wire_bytes(parsed.content_sha256.lower())):
        raise signature_mismatch("x-acs-content-sha256 does not match the request body.")
    canonical = canonical_request(
        parsed.method, parsed.raw_path, parsed.raw_query, parsed.headers, parsed.signed_headers, payload_hash
    )
    expected = sign(secret, string_to_sign(canonical))
    if not hmac.compare_digest(expected.encode(), wire_bytes(parsed.signature.lower())):
        raise signature_mismatch()
    return check_timestamp(parsed.date, clock(), field="x-acs-date")


def nonce_ttl_seconds(signed_at: datetime, now: datetime) -> int:
    """How long a nonce must be remembered: until its timestamp leaves the window, and never under 900 s.

    A request dated up to 15 min in the future stays acceptable for up to 30 min, so a flat 900 s would let
    it be replayed after its nonce expired.
    """
    remaining = (signed_at + TIME_WINDOW - now).total_seconds()
    return max(int(TIME_WINDOW.total_seconds()), int(remaining) + 1)

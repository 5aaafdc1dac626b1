"""The legacy RPC signature (SDK ``signature_algorithm='v2'``): HMAC-SHA1 over the sorted parameters.

Every query and form-body pair except ``Signature`` is signed; the string to sign is
``METHOD&%2F&pct(canonical_query)`` and the key is ``secret + "&"`` (imm-wire.md §2, legacy).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from api.auth.acs3 import Clock, check_nonce_syntax, check_timestamp, incomplete, utc_now
from api.auth.canonical import canonical_query, percent_encode, wire_bytes
from api.errors import ImmError

SIGNATURE_METHOD = "HMAC-SHA1"
SIGNATURE_VERSION = "1.0"
MISMATCH_MESSAGE = "Specified signature is not matched with our calculation. server string to sign is:"
# The quoted string to sign grows with the parameters; past this the message is cut (the client then sees
# a plain mismatch) so an error never echoes a large body back several times over.
MAX_QUOTED_MESSAGE = 16_384
# Parameters that steer verification: a second copy would make the request mean two things.
# The first six are required.
_SINGLE = (
    "AccessKeyId",
    "Signature",
    "SignatureNonce",
    "Timestamp",
    "SignatureMethod",
    "SignatureVersion",
    "Action",
    "Version",
)

Pairs = Sequence[tuple[str, str]]


@dataclass(frozen=True)
class V2Request:
    access_key_id: str
    signature: str
    nonce: str
    timestamp: str
    action: str | None
    version: str | None
    method: str
    pairs: tuple[tuple[str, str], ...]


def is_v2(pairs: Pairs) -> bool:
    """Does the request try the v2 scheme (carries ``Signature`` or ``AccessKeyId``)?"""
    return any(name in ("Signature", "AccessKeyId") for name, _ in pairs)


def parse_v2(method: str, pairs: Pairs) -> V2Request:
    """Check the v2 parameters are all there once; ``IncompleteSignature`` otherwise."""
    found: dict[str, str] = {}
    for name, value in pairs:
        if name in _SINGLE:
            if name in found:
                raise incomplete(f"Parameter {name} must appear once.")
            found[name] = value
    for name in _SINGLE[:6]:
        if not found.get(name):
            raise incomplete(f"The v2 signature needs the parameter {name}.")
    if found["SignatureMethod"] != SIGNATURE_METHOD or found["SignatureVersion"] != SIGNATURE_VERSION:
        raise incomplete(
            f"Only SignatureMethod={SIGNATURE_METHOD} with SignatureVersion={SIGNATURE_VERSION} is supported."
        )
    check_nonce_syntax(found["SignatureNonce"], field="SignatureNonce")
    return V2Request(
        access_key_id=found["AccessKeyId"],
        signature=found["Signature"],
        nonce=found["SignatureNonce"],
        timestamp=found["Timestamp"],
        action=found.get("Action"),
        version=found.get("Version"),
        method=method,
        pairs=tuple(pairs),
    )


def string_to_sign(method: str, pairs: Pairs) -> str:
    signed = [(name, value) for name, value in pairs if name != "Signature"]
    return f"{method}&%2F&{percent_encode(canonical_query(signed))}"


def sign(secret: str, to_sign: str) -> str:
    digest = hmac.new((secret + "&").encode("utf-8"), wire_bytes(to_sign), hashlib.sha1).digest()
    return base64.b64encode(digest).decode("ascii")


def verify_v2(parsed: V2Request, secret: str, *, clock: Clock = utc_now) -> datetime:
    """Signature first, then the ±15 min window on ``Timestamp``; returns the parsed timestamp."""
    to_sign = string_to_sign(parsed.method, parsed.pairs)
    expected = sign(secret, to_sign)
    if not hmac.compare_digest(expected.encode(), wire_bytes(parsed.signature)):
        # Alibaba's wording: legacy clients split it at ':' and compare the rest with their own string to
        # sign, to tell a wrong secret from a mangled request. It is public data (no secret, no signature).
        raise ImmError(
            400, "SignatureDoesNotMatch", MISMATCH_MESSAGE + to_sign, max_message_length=MAX_QUOTED_MESSAGE
        )
    return check_timestamp(parsed.timestamp, clock(), field="Timestamp")

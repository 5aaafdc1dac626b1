"""Standard Webhooks signatures (``webhook-id``, ``webhook-timestamp``, ``webhook-signature``).

The ``standardwebhooks`` package does the HMAC so receivers can verify with any official library.
"""

from __future__ import annotations

import base64
import secrets
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime

from standardwebhooks import Webhook
from standardwebhooks.webhooks import WebhookVerificationError

__all__ = ["WebhookVerificationError", "new_secret", "sign_headers", "verify"]

SECRET_BYTES = 32  # the spec allows 24–64


def new_secret() -> str:
    """A fresh project secret: ``whsec_`` + base64 of 32 random bytes."""
    return "whsec_" + base64.b64encode(secrets.token_bytes(SECRET_BYTES)).decode("ascii")


def sign_headers(
    secrets: str | Sequence[str], msg_id: str, timestamp: datetime, body: bytes
) -> dict[str, str]:
    """The three signature headers for ``body``, exactly the bytes that will be sent.

    With several secrets (the current one and, during a rotation's grace period, the previous one) the
    ``webhook-signature`` header carries one space-separated ``v1,<sig>`` per secret, as Standard
    Webhooks allows: a receiver holding any of them verifies."""
    if timestamp.tzinfo is None:
        raise ValueError("timestamp must be timezone-aware")
    keys = [secrets] if isinstance(secrets, str) else list(secrets)
    if not keys:
        raise ValueError("at least one secret is needed to sign")
    # Webhook.sign() relabels the tzinfo as UTC instead of converting, so convert first.
    ts = timestamp.astimezone(UTC)
    data = body.decode("utf-8")
    signature = " ".join(Webhook(key).sign(msg_id=msg_id, timestamp=ts, data=data) for key in keys)
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(int(ts.timestamp())),
        "webhook-signature": signature,
    }


def verify(secret: str, headers: Mapping[str, str], body: bytes) -> None:
    """Check a received callback (headers in any case, ±5 min clock window); raise
    ``WebhookVerificationError`` when it was not signed with ``secret``."""
    try:
        Webhook(secret).verify(body, dict(headers), json_parse=False)
    except WebhookVerificationError:
        raise
    except Exception as exc:  # malformed headers or body make the library raise other errors
        raise WebhookVerificationError(f"malformed webhook: {type(exc).__name__}") from exc

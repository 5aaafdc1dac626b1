from __future__ import annotations

import base64
import hashlib
import hmac
from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st

from worker.webhooks.signing import WebhookVerificationError, new_secret, sign_headers, verify

SECRET = "whsec_" + base64.b64encode(b"k" * 32).decode()
BODY = b'{"type":"crop-job.succeeded","timestamp":"2026-11-25T16:00:00.000Z","data":{}}'


def test_new_secret_is_whsec_base64_of_32_random_bytes() -> None:
    a, b = new_secret(), new_secret()
    assert a.startswith("whsec_") and a != b
    assert len(base64.b64decode(a.removeprefix("whsec_"), validate=True)) == 32


def test_signature_is_hmac_sha256_over_id_timestamp_body() -> None:
    ts = datetime(2026, 11, 25, 16, 0, 0, tzinfo=UTC)
    headers = sign_headers(SECRET, "req-1", ts, BODY)
    expected = hmac.new(b"k" * 32, b"req-1.%d." % int(ts.timestamp()) + BODY, hashlib.sha256).digest()
    assert headers == {
        "webhook-id": "req-1",
        "webhook-timestamp": str(int(ts.timestamp())),
        "webhook-signature": "v1," + base64.b64encode(expected).decode(),
    }


def test_non_utc_timestamp_is_converted_not_relabelled() -> None:
    utc = datetime.now(UTC).replace(microsecond=0)
    local = utc.astimezone(timezone(timedelta(hours=5)))
    assert sign_headers(SECRET, "id", local, BODY) == sign_headers(SECRET, "id", utc, BODY)
    verify(SECRET, sign_headers(SECRET, "id", local, BODY), BODY)


def test_naive_timestamp_is_refused() -> None:
    with pytest.raises(ValueError):
        sign_headers(SECRET, "id", datetime(2026, 1, 1), BODY)


def test_verify_accepts_any_header_case() -> None:
    headers = sign_headers(SECRET, "id", datetime.now(UTC), BODY)
    verify(SECRET, {k.title(): v for k, v in headers.items()}, BODY)


@pytest.mark.parametrize(
    ("secret", "change_headers", "body"),
    [
        ("whsec_" + base64.b64encode(b"x" * 32).decode(), {}, BODY),  # wrong secret
        (SECRET, {}, BODY + b" "),  # tampered body
        (SECRET, {"webhook-id": "other"}, BODY),  # id is signed too
        (SECRET, {"webhook-timestamp": "1000000000"}, BODY),  # far outside the 5 min window
        (SECRET, {"webhook-signature": "garbage"}, BODY),  # malformed signature header
        (SECRET, {"webhook-signature": ""}, BODY),  # missing
    ],
)
def test_verify_rejects(secret: str, change_headers: dict[str, str], body: bytes) -> None:
    headers = sign_headers(SECRET, "id", datetime.now(UTC), BODY) | change_headers
    with pytest.raises(WebhookVerificationError):
        verify(secret, headers, body)


@given(msg_id=st.text(min_size=1, max_size=40), text=st.text(max_size=300))
def test_sign_then_verify_roundtrip(msg_id: str, text: str) -> None:
    body = text.encode()
    verify(SECRET, sign_headers(SECRET, msg_id, datetime.now(UTC), body), body)


OLD = "whsec_" + base64.b64encode(b"o" * 32).decode()


def test_several_secrets_give_one_signature_each_and_either_verifies() -> None:
    headers = sign_headers([SECRET, OLD], "id", datetime.now(UTC), BODY)
    entries = headers["webhook-signature"].split(" ")
    assert len(entries) == 2 and all(e.startswith("v1,") for e in entries)
    verify(SECRET, headers, BODY)  # a receiver that already holds the new secret
    verify(OLD, headers, BODY)  # one still on the previous secret
    with pytest.raises(WebhookVerificationError):
        verify("whsec_" + base64.b64encode(b"x" * 32).decode(), headers, BODY)


def test_one_secret_in_a_list_signs_like_the_secret_itself() -> None:
    ts = datetime(2026, 11, 25, 16, 0, 0, tzinfo=UTC)
    assert sign_headers([SECRET], "id", ts, BODY) == sign_headers(SECRET, "id", ts, BODY)


def test_no_secret_is_refused() -> None:
    with pytest.raises(ValueError):
        sign_headers([], "id", datetime.now(UTC), BODY)

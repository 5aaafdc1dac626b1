"""ACS3-HMAC-SHA256 verification (imm-wire.md §2): the spec's byte-exact vector, fresh SDK requests, and
every way a request can be wrong."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest

from api.auth import acs3
from api.errors import ImmError
from tests.unit.auth.spec_vector import (
    EMPTY_SHA,
    VECTOR_DATE,
    VECTOR_QUERY,
    VECTOR_SIGNATURE,
    VECTOR_SIGNED,
    vector_headers,
)

SECRET = "secretXYZ"
VECTOR_CANONICAL = "\n".join(
    [
        "POST",
        "/",
        "AspectRatios=%5B%221%3A1%22%2C%2216%3A9%22%5D&InclusionHints=%5B%22dog%22%5D&ProjectName=proj-1"
        "&SourceURI=oss%3A%2F%2Fbucket%2Fa%20dir%2Fimg%2B1.jpg",
        "accept:application/json",
        "host:127.0.0.1:8000",
        "user-agent:AlibabaCloud (Linux; x86_64) Python/3.11.7 Core/0.4.3 TeaDSL/2",
        "x-acs-action:DetectImageCropping",
        f"x-acs-content-sha256:{EMPTY_SHA}",
        "x-acs-credentials-provider:static_ak",
        "x-acs-date:2026-11-25T16:23:52Z",
        "x-acs-signature-nonce:a997b4e0cae60ecdb8d1040740aba26e",
        "x-acs-version:2020-09-30",
        "",
        VECTOR_SIGNED,
        EMPTY_SHA,
    ]
)


def pinned(at: datetime) -> Callable[[], datetime]:
    return lambda: at


def check(
    headers: list[tuple[str, str]],
    *,
    query: str = VECTOR_QUERY,
    body: bytes = b"",
    method: str = "POST",
    path: bytes = b"/",
    secret: str = SECRET,
    now: datetime = VECTOR_DATE,
) -> datetime:
    parsed = acs3.parse_acs3(method, path, query, headers)
    return acs3.verify_acs3(parsed, body, secret, clock=pinned(now))


def code_of(fn: Callable[[], object]) -> str:
    with pytest.raises(ImmError) as info:
        fn()
    return info.value.code


def replace(headers: list[tuple[str, str]], name: str, value: str) -> list[tuple[str, str]]:
    return [(k, value if k.lower() == name else v) for k, v in headers]


def resign(
    headers: list[tuple[str, str]],
    *,
    query: str = VECTOR_QUERY,
    body: bytes = b"",
    signed: str = VECTOR_SIGNED,
    secret: str = SECRET,
) -> list[tuple[str, str]]:
    """Sign with our own signer (proven by the vector test) to build valid requests with odd contents."""
    names = signed.split(";")
    canonical = acs3.canonical_request("POST", b"/", query, headers, names, hashlib.sha256(body).hexdigest())
    sig = acs3.sign(secret, acs3.string_to_sign(canonical))
    auth = f"ACS3-HMAC-SHA256 Credential=AKIDtest123,SignedHeaders={signed},Signature={sig}"
    return replace(headers, "authorization", auth)


# --- the spec's test vector, byte for byte ------------------------------------------------------------


def test_vector_canonical_request_is_byte_exact() -> None:
    parsed = acs3.parse_acs3("POST", b"/", VECTOR_QUERY, vector_headers())
    canonical = acs3.canonical_request(
        parsed.method, parsed.raw_path, parsed.raw_query, parsed.headers, parsed.signed_headers, EMPTY_SHA
    )
    assert canonical == VECTOR_CANONICAL
    assert len(canonical.split("\n")) == 15
    assert hashlib.sha256(canonical.encode()).hexdigest() == (
        "ead04e42b3dfb9f8786e75ab047232ac71c029f544d0ff8124fb995f013b9bfc"
    )
    assert acs3.sign(SECRET, acs3.string_to_sign(canonical)) == VECTOR_SIGNATURE


def test_vector_verifies_with_clock_pinned_to_x_acs_date() -> None:
    parsed = acs3.parse_acs3("POST", b"/", VECTOR_QUERY, vector_headers())
    assert parsed.access_key_id == "AKIDtest123"
    assert parsed.nonce == "a997b4e0cae60ecdb8d1040740aba26e"
    assert (parsed.action, parsed.version) == ("DetectImageCropping", "2020-09-30")
    assert acs3.verify_acs3(parsed, b"", SECRET, clock=pinned(VECTOR_DATE)) == VECTOR_DATE


def test_upper_case_hex_in_signature_and_body_hash_is_accepted() -> None:
    headers = vector_headers(
        f"ACS3-HMAC-SHA256 Credential=AKIDtest123,SignedHeaders={VECTOR_SIGNED},"
        f"Signature={VECTOR_SIGNATURE.upper()}"
    )
    check(headers)
    # An upper-case body hash is fine too, as long as it is what was signed.
    check(resign(replace(vector_headers(), "x-acs-content-sha256", EMPTY_SHA.upper())))


# --- fresh requests from the official SDK ---------------------------------------------------------------


def test_fresh_sdk_request_verifies(sdk_request: Callable[..., object]) -> None:
    wire = sdk_request(
        project_name="proj 1",
        source_uri="oss://bucket/a dir/狗+~*'.jpg",
        aspect_ratios='["1:1", "16:9"]',
        inclusion_hints=["狗 dog"],
        credential_config=None,
    )
    parsed = acs3.parse_acs3(wire.method, wire.raw_path, wire.raw_query, wire.headers)  # type: ignore[attr-defined]
    signed_at = datetime.strptime(parsed.date, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
    acs3.verify_acs3(parsed, wire.body, SECRET, clock=pinned(signed_at))  # type: ignore[attr-defined]
    with pytest.raises(ImmError) as info:
        acs3.verify_acs3(parsed, wire.body, "another-secret", clock=pinned(signed_at))  # type: ignore[attr-defined]
    assert info.value.code == "SignatureDoesNotMatch"


# --- tampering -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "query",
    [
        VECTOR_QUERY.replace("proj-1", "proj-2"),
        VECTOR_QUERY + "&Extra=1",
        VECTOR_QUERY.replace("InclusionHints=%5B%22dog%22%5D&", ""),
        VECTOR_QUERY.replace("a+dir", "a%2Bdir"),  # '+' is a space, '%2B' a plus: different values
    ],
)
def test_tampered_query(query: str) -> None:
    assert code_of(lambda: check(vector_headers(), query=query)) == "SignatureDoesNotMatch"


def test_query_encoding_variants_of_the_same_values_still_verify() -> None:
    # The canonical form depends on the decoded values, not on how the client spelled them.
    check(vector_headers(), query=VECTOR_QUERY.replace("a+dir", "a%20dir").replace("proj-1", "proj%2D1"))


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("host", "evil.example:8000"),
        ("x-acs-action", "DeleteProject"),
        ("x-acs-version", "2020-09-31"),
        ("accept", "text/html"),
        ("x-acs-signature-nonce", "b997b4e0cae60ecdb8d1040740aba26e"),
        ("x-acs-date", "2026-11-25T16:23:53Z"),
    ],
)
def test_tampered_signed_header(name: str, value: str) -> None:
    assert code_of(lambda: check(replace(vector_headers(), name, value))) == "SignatureDoesNotMatch"


def test_unsigned_headers_may_change() -> None:
    headers = [*replace(vector_headers(), "accept-encoding", "gzip"), ("x-forwarded-for", "10.0.0.1")]
    check(headers)


def test_tampered_method_and_path() -> None:
    assert code_of(lambda: check(vector_headers(), method="GET")) == "SignatureDoesNotMatch"
    assert code_of(lambda: check(vector_headers(), path=b"/x")) == "SignatureDoesNotMatch"


def test_body_not_matching_content_sha256() -> None:
    assert code_of(lambda: check(vector_headers(), body=b"ProjectName=x")) == "SignatureDoesNotMatch"


def test_body_with_updated_hash_but_old_signature() -> None:
    body = b"ProjectName=x"
    headers = replace(vector_headers(), "x-acs-content-sha256", hashlib.sha256(body).hexdigest())
    assert code_of(lambda: check(headers, body=body)) == "SignatureDoesNotMatch"


def test_signed_body_verifies() -> None:
    body = b"ProjectName=x"
    body_hash = hashlib.sha256(body).hexdigest()
    headers = resign(replace(vector_headers(), "x-acs-content-sha256", body_hash), body=body)
    check(headers, body=body)


def test_wrong_secret() -> None:
    assert code_of(lambda: check(vector_headers(), secret="secretXYz")) == "SignatureDoesNotMatch"


# --- incomplete / garbled ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "authorization",
    [
        f"ACS3-HMAC-SM3 Credential=AKIDtest123,SignedHeaders={VECTOR_SIGNED},Signature={VECTOR_SIGNATURE}",
        f"ACS3-RSA-SHA256 Credential=AKIDtest123,SignedHeaders={VECTOR_SIGNED},Signature={VECTOR_SIGNATURE}",
        f"acs3-hmac-sha256 Credential=AKIDtest123,SignedHeaders={VECTOR_SIGNED},Signature={VECTOR_SIGNATURE}",
        f"ACS3-HMAC-SHA256 SignedHeaders={VECTOR_SIGNED},Signature={VECTOR_SIGNATURE}",
        f"ACS3-HMAC-SHA256 Credential=AKIDtest123,Signature={VECTOR_SIGNATURE}",
        f"ACS3-HMAC-SHA256 Credential=AKIDtest123,SignedHeaders={VECTOR_SIGNED}",
        f"ACS3-HMAC-SHA256 Credential=,SignedHeaders={VECTOR_SIGNED},Signature={VECTOR_SIGNATURE}",
        f"ACS3-HMAC-SHA256 Credential=A,Credential=B,SignedHeaders={VECTOR_SIGNED},Signature=ab",
        f"ACS3-HMAC-SHA256 Credential=A,SignedHeaders={VECTOR_SIGNED},Signature={VECTOR_SIGNATURE},Scope=x",
        "ACS3-HMAC-SHA256",
        "ACS3-HMAC-SHA256 garbage",
        "garbage",
        "",
    ],
)
def test_garbled_or_unsupported_authorization(authorization: str) -> None:
    headers = [(k, authorization if k == "Authorization" else v) for k, v in vector_headers()]
    assert code_of(lambda: check(headers)) == "IncompleteSignature"


def test_missing_authorization() -> None:
    headers = [(k, v) for k, v in vector_headers() if k != "Authorization"]
    assert code_of(lambda: check(headers)) == "IncompleteSignature"


def test_two_authorization_headers() -> None:
    headers = vector_headers()
    assert code_of(lambda: check([*headers, ("authorization", headers[10][1])])) == "IncompleteSignature"


@pytest.mark.parametrize("dropped", list(acs3.REQUIRED_SIGNED_HEADERS))
def test_required_header_not_signed(dropped: str) -> None:
    signed = ";".join(h for h in VECTOR_SIGNED.split(";") if h != dropped)
    headers = resign(vector_headers(), signed=signed)
    assert code_of(lambda: check(headers)) == "IncompleteSignature"


def test_signed_header_absent_from_request() -> None:
    headers = [(k, v) for k, v in vector_headers() if k != "user-agent"]
    assert code_of(lambda: check(headers)) == "IncompleteSignature"


@pytest.mark.parametrize(
    "signed", [VECTOR_SIGNED.replace("host", "Host"), VECTOR_SIGNED + ";accept", VECTOR_SIGNED + ";"]
)
def test_signed_headers_list_must_be_unique_lower_case_names(signed: str) -> None:
    headers = vector_headers(
        f"ACS3-HMAC-SHA256 Credential=AKIDtest123,SignedHeaders={signed},Signature={VECTOR_SIGNATURE}"
    )
    assert code_of(lambda: check(headers)) == "IncompleteSignature"


def test_required_header_repeated() -> None:
    headers = [*vector_headers(), ("x-acs-signature-nonce", "another")]
    assert code_of(lambda: check(headers)) == "IncompleteSignature"


def test_repeated_signed_header_values_are_sorted_and_joined() -> None:
    headers = [("accept", " b "), ("x", "1"), ("Accept", "a")]
    assert acs3.canonical_headers(headers, ["accept", "x"]) == "accept:a,b\nx:1\n"


# --- time window, checked only after the signature -------------------------------------------------------


@pytest.mark.parametrize("skew", [timedelta(0), timedelta(minutes=15), -timedelta(minutes=15)])
def test_within_window(skew: timedelta) -> None:
    check(vector_headers(), now=VECTOR_DATE + skew)


@pytest.mark.parametrize("skew", [timedelta(minutes=15, seconds=1), -timedelta(minutes=15, seconds=1)])
def test_outside_window(skew: timedelta) -> None:
    assert code_of(lambda: check(vector_headers(), now=VECTOR_DATE + skew)) == "InvalidTimeStamp.Expired"


def test_signature_is_checked_before_time() -> None:
    late = VECTOR_DATE + timedelta(hours=2)
    assert code_of(lambda: check(vector_headers(), secret="wrong", now=late)) == "SignatureDoesNotMatch"


@pytest.mark.parametrize(
    "date",
    [
        "2026-11-25 16:23:52Z",
        "2026-11-25T16:23:52",
        "2026-11-25T16:23:52+00:00",
        "2026-13-25T16:23:52Z",
        "2026-11-25T16:23:52.000Z",
        "Wed, 25 Nov 2026 16:23:52 GMT",
        "x",
    ],
)
def test_bad_date_format_with_valid_signature(date: str) -> None:
    headers = resign(replace(vector_headers(), "x-acs-date", date))
    assert code_of(lambda: check(headers)) == "InvalidTimeStamp.Format"


def test_nonce_ttl_covers_the_whole_validity() -> None:
    now = VECTOR_DATE
    assert acs3.nonce_ttl_seconds(now, now) == 901
    assert acs3.nonce_ttl_seconds(now + timedelta(minutes=15), now) == 1801
    assert acs3.nonce_ttl_seconds(now - timedelta(minutes=15), now) == 900

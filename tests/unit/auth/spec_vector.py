"""The captured SDK request of imm-wire.md §2 (secret ``secretXYZ``), shared by the auth tests."""

from __future__ import annotations

from datetime import UTC, datetime

EMPTY_SHA = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
VECTOR_SIGNED = (
    "accept;host;user-agent;x-acs-action;x-acs-content-sha256;x-acs-credentials-provider;x-acs-date;"
    "x-acs-signature-nonce;x-acs-version"
)
VECTOR_SIGNATURE = "4713c3004a0803a11533fcfafe3828c08e6f68b272c89158f1c13c0dc9926c55"
VECTOR_QUERY = (
    "AspectRatios=%5B%221%3A1%22%2C%2216%3A9%22%5D&InclusionHints=%5B%22dog%22%5D&ProjectName=proj-1"
    "&SourceURI=oss%3A%2F%2Fbucket%2Fa+dir%2Fimg%2B1.jpg"
)
VECTOR_DATE = datetime(2026, 11, 25, 16, 23, 52, tzinfo=UTC)


def vector_headers(authorization: str | None = None) -> list[tuple[str, str]]:
    """The captured request's headers, in wire order and case, unsigned ones included."""
    auth = authorization or (
        f"ACS3-HMAC-SHA256 Credential=AKIDtest123,SignedHeaders={VECTOR_SIGNED},Signature={VECTOR_SIGNATURE}"
    )
    return [
        ("Accept-Encoding", "identity"),
        ("host", "127.0.0.1:8000"),
        ("x-acs-version", "2020-09-30"),
        ("x-acs-action", "DetectImageCropping"),
        ("user-agent", "AlibabaCloud (Linux; x86_64) Python/3.11.7 Core/0.4.3 TeaDSL/2"),
        ("x-acs-date", "2026-11-25T16:23:52Z"),
        ("x-acs-signature-nonce", "a997b4e0cae60ecdb8d1040740aba26e"),
        ("accept", "application/json"),
        ("x-acs-content-sha256", EMPTY_SHA),
        ("x-acs-credentials-provider", "static_ak"),
        ("Authorization", auth),
        ("Content-Length", "0"),
    ]

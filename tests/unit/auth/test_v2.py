"""The legacy v2 RPC signature, checked against the official SDK's own signer (``Utils.get_rpcsignature``)
and against whole requests the SDK builds with ``signature_algorithm='v2'``."""

from __future__ import annotations

import string
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest
from alibabacloud_tea_openapi.utils import Utils as SdkUtils
from hypothesis import given, settings
from hypothesis import strategies as st

from api.auth import v2
from api.auth.canonical import form_decode
from api.errors import ImmError

SECRET = "secretXYZ"
NOW = datetime(2026, 11, 25, 16, 23, 52, tzinfo=UTC)


def base_params(**extra: str) -> dict[str, str]:
    return {
        "Action": "DetectImageCropping",
        "Format": "json",
        "Version": "2020-09-30",
        "Timestamp": "2026-11-25T16:23:52Z",
        "SignatureNonce": "a997b4e0cae60ecdb8d1040740aba26e",
        "ProjectName": "proj-1",
        "SourceURI": "oss://bucket/a dir/img+1.jpg",
        "AspectRatios": '["1:1", "16:9"]',
        "SignatureMethod": "HMAC-SHA1",
        "SignatureVersion": "1.0",
        "AccessKeyId": "AKIDtest123",
        **extra,
    }


def signed_pairs(params: dict[str, str], method: str = "POST", secret: str = SECRET) -> list[tuple[str, str]]:
    """Parameters plus the Signature the official SDK computes for them."""
    return [*params.items(), ("Signature", SdkUtils.get_rpcsignature(params, method, secret))]


def verify(
    pairs: list[tuple[str, str]], *, method: str = "POST", secret: str = SECRET, now: datetime = NOW
) -> datetime:
    return v2.verify_v2(v2.parse_v2(method, pairs), secret, clock=lambda: now)


def code_of(fn: Callable[[], object]) -> str:
    with pytest.raises(ImmError) as info:
        fn()
    return info.value.code


# Parameter names are drawn from RFC 3986 unreserved characters (every real API name, e.g. "Tag.1.Key"):
# the spec sorts by *encoded* name, the SDK by raw name, and the two orders agree only for such names.
NAMES = st.text(alphabet=string.ascii_letters + string.digits + "-_.~", min_size=1).filter(
    lambda k: k != "Signature"
)


@given(
    st.dictionaries(NAMES, st.text(), max_size=8),
    st.sampled_from(["GET", "POST"]),
    st.text(min_size=1, max_size=40),
)
@settings(max_examples=300)
def test_signature_equals_the_sdk_signer(params: dict[str, str], method: str, secret: str) -> None:
    ours = v2.sign(secret, v2.string_to_sign(method, list(params.items())))
    assert ours == SdkUtils.get_rpcsignature(params, method, secret)


def test_sdk_signed_parameters_verify() -> None:
    parsed = v2.parse_v2("POST", signed_pairs(base_params()))
    assert (parsed.action, parsed.version, parsed.access_key_id) == (
        "DetectImageCropping",
        "2020-09-30",
        "AKIDtest123",
    )
    assert v2.verify_v2(parsed, SECRET, clock=lambda: NOW) == NOW


def test_whole_sdk_v2_request_verifies(sdk_request: Callable[..., object]) -> None:
    wire = sdk_request(
        signature_algorithm="v2",
        project_name="proj 1",
        source_uri="oss://bucket/a dir/狗+~*'.jpg",
        aspect_ratios='["1:1", "16:9"]',
        inclusion_hints=["狗 dog"],
    )
    assert not any(k.lower() == "authorization" for k, _ in wire.headers)  # type: ignore[attr-defined]
    pairs = form_decode(wire.raw_query)  # type: ignore[attr-defined]
    assert v2.is_v2(pairs)
    parsed = v2.parse_v2(wire.method, pairs)  # type: ignore[attr-defined]
    assert parsed.action == "DetectImageCropping"
    assert dict(pairs)["InclusionHints"] == '["狗 dog"]'
    signed_at = datetime.strptime(parsed.timestamp, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
    assert v2.verify_v2(parsed, SECRET, clock=lambda: signed_at) == signed_at
    with pytest.raises(ImmError) as info:
        v2.verify_v2(parsed, "wrong", clock=lambda: signed_at)
    assert info.value.code == "SignatureDoesNotMatch"


def test_form_body_pairs_are_signed_with_the_query() -> None:
    query = base_params()
    body = {"ProjectName": "from-body"}
    query.pop("ProjectName")
    signature = SdkUtils.get_rpcsignature({**query, **body}, "POST", SECRET)
    pairs = [*query.items(), ("Signature", signature), *body.items()]
    verify(pairs)
    assert code_of(lambda: verify([*query.items(), ("Signature", signature)])) == "SignatureDoesNotMatch"


def test_method_is_signed() -> None:
    pairs = signed_pairs(base_params(), method="GET")
    verify(pairs, method="GET")
    assert code_of(lambda: verify(pairs, method="POST")) == "SignatureDoesNotMatch"


@pytest.mark.parametrize(
    "tamper",
    [
        lambda p: [(k, "proj-2" if k == "ProjectName" else v) for k, v in p],
        lambda p: [*p, ("Extra", "1")],
        lambda p: [(k, v) for k, v in p if k != "AspectRatios"],
        lambda p: [(k, "2026-11-25T16:23:53Z" if k == "Timestamp" else v) for k, v in p],
        lambda p: [(k, "other-nonce" if k == "SignatureNonce" else v) for k, v in p],
    ],
)
def test_tampered_parameters(tamper: Callable[[list[tuple[str, str]]], list[tuple[str, str]]]) -> None:
    assert code_of(lambda: verify(tamper(signed_pairs(base_params())))) == "SignatureDoesNotMatch"


def test_wrong_secret() -> None:
    assert code_of(lambda: verify(signed_pairs(base_params()), secret="secretXYz")) == "SignatureDoesNotMatch"


@pytest.mark.parametrize(
    "name", ["AccessKeyId", "Signature", "SignatureNonce", "Timestamp", "SignatureMethod", "SignatureVersion"]
)
def test_missing_parameter(name: str) -> None:
    pairs = [(k, v) for k, v in signed_pairs(base_params()) if k != name]
    assert code_of(lambda: verify(pairs)) == "IncompleteSignature"


@pytest.mark.parametrize(("name", "value"), [("SignatureMethod", "HMAC-SHA256"), ("SignatureVersion", "2.0")])
def test_unsupported_method(name: str, value: str) -> None:
    pairs = signed_pairs(base_params(**{name: value}))
    assert code_of(lambda: verify(pairs)) == "IncompleteSignature"


def test_repeated_control_parameter() -> None:
    pairs = signed_pairs(base_params())
    assert code_of(lambda: verify([*pairs, ("Signature", "x")])) == "IncompleteSignature"
    assert code_of(lambda: verify([*pairs, ("Action", "Other")])) == "IncompleteSignature"


@pytest.mark.parametrize("skew", [timedelta(minutes=15), -timedelta(minutes=15)])
def test_within_window(skew: timedelta) -> None:
    verify(signed_pairs(base_params()), now=NOW + skew)


@pytest.mark.parametrize("skew", [timedelta(minutes=15, seconds=1), -timedelta(minutes=16)])
def test_outside_window(skew: timedelta) -> None:
    assert code_of(lambda: verify(signed_pairs(base_params()), now=NOW + skew)) == "InvalidTimeStamp.Expired"


def test_bad_timestamp_after_valid_signature() -> None:
    pairs = signed_pairs(base_params(Timestamp="2026-11-25T16:23:52.123Z"))
    assert code_of(lambda: verify(pairs)) == "InvalidTimeStamp.Format"


def test_signature_before_time() -> None:
    late = NOW + timedelta(days=1)
    pairs = signed_pairs(base_params())
    assert code_of(lambda: verify(pairs, secret="x", now=late)) == "SignatureDoesNotMatch"


def test_is_v2() -> None:
    assert v2.is_v2([("AccessKeyId", "a")])
    assert v2.is_v2([("Signature", "a")])
    assert not v2.is_v2([("ProjectName", "p")])

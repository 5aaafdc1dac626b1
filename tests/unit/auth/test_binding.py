"""What a signature authorises: v2 only on ``/`` with an empty or form body, signed content-type for ACS3,
no repeated parameters, Alibaba's mismatch message, and throttled failures (on the auth dependency)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from urllib.parse import urlencode

import httpx
import pytest
from alibabacloud_tea_openapi.utils import Utils as SdkUtils
from fastapi.testclient import TestClient
from redis.asyncio import Redis

from api.auth.dependency import MAX_PARAMETERS
from api.auth.v2 import MISMATCH_MESSAGE
from tests.security.signatures_support import signed_acs3_headers
from tests.unit.auth.test_dependency import BOOT_ID, BOOT_SECRET, make_app


def v2_params(method: str, nonce: str, secret: str = BOOT_SECRET, **extra: str) -> dict[str, str]:
    params = {
        "Action": "DetectImageCropping",
        "Version": "2020-09-30",
        "Format": "json",
        "Timestamp": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "SignatureNonce": nonce,
        "SignatureMethod": "HMAC-SHA1",
        "SignatureVersion": "1.0",
        "AccessKeyId": BOOT_ID,
        **extra,
    }
    params["Signature"] = SdkUtils.get_rpcsignature(params, method, secret)
    return params


def acs3_headers(
    method: str, path: str, query: str, body: bytes, extra: dict[str, str], signed_extra: tuple[str, ...] = ()
) -> dict[str, str]:
    return signed_acs3_headers(
        "127.0.0.1:8000", method, path, query, body, BOOT_ID, BOOT_SECRET, extra, signed_extra
    )


@pytest.fixture
def client(aredis: Redis, redis_url: str) -> Iterator[TestClient]:
    with TestClient(make_app(redis_url), base_url="http://127.0.0.1:8000") as c:
        yield c


def code(resp: httpx.Response) -> tuple[int, str]:
    return resp.status_code, resp.json()["Code"]


def test_v2_query_works_on_the_rpc_face_only(client: TestClient) -> None:
    ok = client.post("/?" + urlencode(v2_params("POST", "n-ok")))
    assert ok.status_code == 200, ok.text
    moved = client.post("/v1/echo?" + urlencode(v2_params("POST", "n-moved")), json={"SourceURI": "x"})
    assert code(moved) == (400, "IncompleteSignature")
    assert "accepted only on the IMM RPC endpoint" in moved.json()["Message"]
    get_moved = client.get("/v1/echo?" + urlencode(v2_params("GET", "n-get")))
    assert code(get_moved) == (400, "IncompleteSignature")


def test_v2_with_a_json_body_on_the_rpc_face_is_refused(client: TestClient) -> None:
    resp = client.post("/?" + urlencode(v2_params("POST", "n-json")), json={"ProjectName": "other"})
    assert code(resp) == (400, "IncompleteSignature")
    raw = client.post("/?" + urlencode(v2_params("POST", "n-raw")), content=b"ProjectName=other")
    assert code(raw) == (400, "IncompleteSignature")  # a body without the form content type


def test_v2_form_body_pairs_are_signed(client: TestClient) -> None:
    params = v2_params("POST", "n-form", ProjectName="demo")
    ok = client.post("/", data=params)
    assert ok.status_code == 200, ok.text
    forged = v2_params("POST", "n-form2", ProjectName="demo")
    forged["ProjectName"] = "other"
    resp = client.post("/", data=forged)
    assert code(resp) == (400, "SignatureDoesNotMatch")


def test_v2_mismatch_names_the_server_string_to_sign(client: TestClient) -> None:
    params = v2_params("POST", "n-bad", secret="wrong-secret-0000")
    resp = client.post("/?" + urlencode(params))
    assert code(resp) == (400, "SignatureDoesNotMatch")
    message = resp.json()["Message"]
    assert message.startswith(MISMATCH_MESSAGE)
    # The legacy client compares what follows the one ':' with its own string to sign.
    assert message.count(":") == 1 and message.split(":")[1].startswith("POST&%2F&")
    assert BOOT_SECRET not in message and params["Signature"] not in message
    long = v2_params("POST", "n-long", secret="wrong-secret-0000", SourceURI="oss://b/" + "k" * 900)
    quoted = client.post("/?" + urlencode(long)).json()["Message"]
    assert len(quoted) > 1000 and quoted.endswith("%26Version%3D2020-09-30")  # whole, not cut at 512


@pytest.mark.parametrize(
    "query",
    ["ProjectName=a&ProjectName=b", "AccessKeyId=x&AccessKeyId=x", "a=1&b=2&a=1"],
)
def test_duplicate_query_keys_are_refused_for_every_scheme(client: TestClient, query: str) -> None:
    bearer = client.get("/v1/echo?" + query, headers={"Authorization": f"Bearer {BOOT_ID}:{BOOT_SECRET}"})
    assert code(bearer) == (400, "InvalidArgument")
    headers = acs3_headers("POST", "/", query, b"", {})
    assert code(client.post("/?" + query, headers=headers)) == (400, "InvalidArgument")


def test_duplicate_between_query_and_form_body_is_refused(client: TestClient) -> None:
    params = v2_params("POST", "n-dup", ProjectName="demo")
    resp = client.post("/?ProjectName=other", data=params)
    assert code(resp) == (400, "InvalidArgument")


def test_acs3_content_type_must_be_signed(client: TestClient) -> None:
    body = b"ProjectName=demo"
    form = {"content-type": "application/x-www-form-urlencoded"}
    unsigned = acs3_headers("POST", "/", "", body, form)
    assert code(client.post("/", headers=unsigned, content=body)) == (400, "IncompleteSignature")
    signed = acs3_headers("POST", "/", "", body, form, ("content-type",))
    ok = client.post("/", headers=signed, content=body)
    assert ok.status_code == 200, ok.text


def test_acs3_is_bound_to_path_and_body(client: TestClient) -> None:
    headers = acs3_headers("POST", "/", "", b"", {})
    moved = client.post("/v1/echo", headers=headers)
    assert code(moved) == (400, "SignatureDoesNotMatch")
    with_body = client.post("/", headers=headers, content=b'{"a": 1}')
    assert code(with_body) == (400, "SignatureDoesNotMatch")
    assert client.post("/", headers=headers).status_code == 200  # untouched, it passes


def test_failed_authentications_are_throttled(aredis: Redis, redis_url: str) -> None:
    from worker.settings import Settings

    limit = Settings().auth_failures_per_minute
    with TestClient(make_app(redis_url), base_url="http://127.0.0.1:8000") as c:
        bad = {"Authorization": f"Bearer {BOOT_ID}:wrong"}
        for _ in range(limit):
            assert code(c.get("/v1/echo", headers=bad)) == (400, "SignatureDoesNotMatch")
        over = c.get("/v1/echo", headers={"Authorization": f"Bearer {BOOT_ID}:{BOOT_SECRET}"})
        assert code(over) == (429, "Throttling")
        assert 0 < int(over.headers["x-acs-retry-after"]) <= 60_000


def test_requests_without_credentials_are_not_counted_as_failures(aredis: Redis, redis_url: str) -> None:
    from worker.settings import Settings

    limit = Settings().auth_failures_per_minute
    with TestClient(make_app(redis_url), base_url="http://127.0.0.1:8000") as c:
        for _ in range(limit + 5):
            assert code(c.get("/v1/echo")) == (400, "IncompleteSignature")
        ok = c.get("/v1/echo", headers={"Authorization": f"Bearer {BOOT_ID}:{BOOT_SECRET}"})
        assert ok.status_code == 200, ok.text


def test_a_flood_of_parameters_is_refused_before_it_is_decoded(client: TestClient) -> None:
    flood = "&".join(f"p{i}=1" for i in range(MAX_PARAMETERS + 1))
    form = client.post(
        "/?" + urlencode(v2_params("POST", "n-flood")),
        content=flood,
        headers={"content-type": "application/x-www-form-urlencoded"},
    )
    assert code(form) == (400, "InvalidArgument")
    assert "more than" in form.json()["Message"]
    assert code(client.get("/?" + flood)) == (400, "InvalidArgument")
    # Just under the cap is parsed as usual (and then fails for its own reasons, not the count).
    fewer = "&".join(f"p{i}=1" for i in range(MAX_PARAMETERS - 1))
    assert "more than" not in client.get("/?" + fewer).json()["Message"]

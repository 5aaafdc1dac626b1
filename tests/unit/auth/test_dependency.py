"""``authenticate`` as a FastAPI dependency, on a tiny app with the real error handlers and a real Redis.

The official SDK is driven end to end: its transport (``DaraCore.do_action``) is bridged into Starlette's
TestClient, so these tests assert the exception class, ``code`` and status the SDK itself raises.
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Annotated, Any
from urllib.parse import urlsplit

import pytest
from alibabacloud_imm20200930 import models as imm_models
from alibabacloud_imm20200930.client import Client as ImmClient
from alibabacloud_tea_openapi import exceptions as sdk_exc
from alibabacloud_tea_openapi import models as open_api_models
from darabonba.core import DaraCore
from darabonba.response import DaraResponse
from fastapi import Depends, FastAPI, Request
from fastapi.testclient import TestClient
from pydantic import SecretStr
from redis.asyncio import Redis

from api.auth.dependency import authenticate
from api.auth.keystore import AccessKeyStore
from api.auth.principal import Principal
from api.errors import install_error_handlers
from tests.unit.auth.spec_vector import VECTOR_DATE, VECTOR_QUERY, vector_headers
from worker.settings import AccessKeySpec, Settings

BOOT_ID, BOOT_SECRET = "BOOTKEY001", "boot-secret-0123456789"


VECTOR_HEADERS = vector_headers()  # the spec's captured request; byte-exact checks in test_acs3.py


def make_app(redis_url: str, *, rate_limit: int = 0, clock: Callable[[], datetime] | None = None) -> FastAPI:
    settings = Settings(
        secret_key=SecretStr("test-secret-key-0123456789abcdef0123"),
        rate_limit_per_minute=rate_limit,
        access_keys=[
            AccessKeySpec(AccessKeyId=BOOT_ID, AccessKeySecret=SecretStr(BOOT_SECRET), Projects=["demo"]),
            # The spec's test vector uses a 9-character secret, below the settings minimum.
            AccessKeySpec.model_construct(
                AccessKeyId="AKIDtest123", AccessKeySecret=SecretStr("secretXYZ"), Projects=["proj-1"]
            ),
        ],
    )

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.redis = Redis.from_url(redis_url, decode_responses=True)
        app.state.settings = settings
        app.state.keystore = AccessKeyStore(app.state.redis, settings)
        if clock is not None:
            app.state.auth_clock = clock
        yield
        await app.state.redis.aclose()

    app = FastAPI(lifespan=lifespan)
    install_error_handlers(app)

    @app.api_route("/", methods=["GET", "POST"])
    @app.api_route("/v1/echo", methods=["GET", "POST"])
    async def echo(request: Request, who: Annotated[Principal, Depends(authenticate)]) -> dict[str, Any]:
        body = await request.body()  # the dependency already read it; Starlette must hand it out again
        return {
            "RequestId": who.access_key_id,  # lets an SDK test see who it was authenticated as
            "AccessKeyId": who.access_key_id,
            "Projects": sorted(who.projects),
            "Logged": request.state.access_key_id,
            "BodyLength": len(body),
        }

    return app


@pytest.fixture
def client(aredis: Redis, redis_url: str) -> Iterator[TestClient]:
    with TestClient(make_app(redis_url), base_url="http://127.0.0.1:8000") as c:
        yield c


@contextlib.contextmanager
def sdk_through(client: TestClient) -> Iterator[None]:
    """Route the SDK's HTTP calls into ``client`` (the request goes out exactly as the SDK built it)."""

    def do_action(request: Any, runtime: Any = None) -> DaraResponse:
        url = urlsplit(DaraCore.compose_url(request))
        resp = client.request(
            request.method,
            url.path + ("?" + url.query if url.query else ""),
            headers={str(k): str(v) for k, v in request.headers.items()},
            content=request.body,
        )
        out = DaraResponse()
        out.status_code = resp.status_code
        out.status_message = resp.reason_phrase
        out.headers = {k.lower(): v for k, v in resp.headers.items()}
        out.body = io.BytesIO(resp.content)
        return out

    original = DaraCore.__dict__["do_action"]
    DaraCore.do_action = staticmethod(do_action)  # type: ignore[method-assign]
    try:
        yield
    finally:
        DaraCore.do_action = original  # type: ignore[method-assign]


def sdk_call(
    client: TestClient, key_id: str, secret: str, *, algorithm: str | None = None, token: str | None = None
) -> Any:
    config = open_api_models.Config(
        access_key_id=key_id,
        access_key_secret=secret,
        security_token=token,
        endpoint="127.0.0.1:8000",
        protocol="http",
        signature_algorithm=algorithm,
    )
    request = imm_models.DetectImageCroppingRequest(
        project_name="demo",
        source_uri="oss://b/a dir/狗.jpg",
        aspect_ratios='["1:1"]',
        inclusion_hints=["dog"],
    )
    with sdk_through(client):
        return ImmClient(config).detect_image_cropping(request)


def sdk_error(fn: Callable[[], Any]) -> Any:
    with pytest.raises(sdk_exc.AlibabaCloudException) as info:
        fn()
    return info.value


@pytest.mark.parametrize("algorithm", [None, "v2"])
def test_official_sdk_gets_in_with_either_signature(client: TestClient, algorithm: str | None) -> None:
    resp = sdk_call(client, BOOT_ID, BOOT_SECRET, algorithm=algorithm)
    assert resp.status_code == 200
    assert resp.body.request_id == BOOT_ID


@pytest.mark.parametrize("algorithm", [None, "v2"])
def test_official_sdk_wrong_secret(client: TestClient, algorithm: str | None) -> None:
    err = sdk_error(lambda: sdk_call(client, BOOT_ID, "not-the-secret", algorithm=algorithm))
    assert isinstance(err, sdk_exc.ClientException)
    assert (err.status_code, err.code) == (400, "SignatureDoesNotMatch")


@pytest.mark.parametrize("algorithm", [None, "v2"])
def test_official_sdk_unknown_key(client: TestClient, algorithm: str | None) -> None:
    err = sdk_error(lambda: sdk_call(client, "LTAInope", "whatever", algorithm=algorithm))
    assert isinstance(err, sdk_exc.ClientException)
    assert (err.status_code, err.code) == (404, "InvalidAccessKeyId.NotFound")


@pytest.mark.parametrize("algorithm", [None, "v2"])
def test_official_sdk_sts_token_refused(client: TestClient, algorithm: str | None) -> None:
    err = sdk_error(lambda: sdk_call(client, BOOT_ID, BOOT_SECRET, algorithm=algorithm, token="sts-token"))
    assert (err.status_code, err.code) == (403, "Forbidden")


def test_official_sdk_disabled_key(client: TestClient, arun: Callable[[Any], Any], aredis: Redis) -> None:
    store = AccessKeyStore(aredis, Settings(secret_key=SecretStr("test-secret-key-0123456789abcdef0123")))
    key, secret = arun(store.create(["demo"]))
    assert sdk_call(client, key.access_key_id, secret).body.request_id == key.access_key_id
    arun(store.disable(key.access_key_id))
    err = sdk_error(lambda: sdk_call(client, key.access_key_id, secret))
    assert (err.status_code, err.code) == (403, "InvalidAccessKeyId.Inactive")


def test_official_sdk_throttled(aredis: Redis, redis_url: str) -> None:
    with TestClient(make_app(redis_url, rate_limit=2), base_url="http://127.0.0.1:8000") as c:
        sdk_call(c, BOOT_ID, BOOT_SECRET)
        sdk_call(c, BOOT_ID, BOOT_SECRET, algorithm="v2")
        err = sdk_error(lambda: sdk_call(c, BOOT_ID, BOOT_SECRET))
    assert isinstance(err, sdk_exc.ThrottlingException)
    assert (err.status_code, err.code) == (429, "Throttling")
    assert 0 < err.retry_after <= 60_000


def test_spec_vector_passes_once_then_is_a_replay(aredis: Redis, redis_url: str) -> None:
    with TestClient(make_app(redis_url, clock=lambda: VECTOR_DATE), base_url="http://127.0.0.1:8000") as c:
        headers = VECTOR_HEADERS
        first = c.post("/?" + VECTOR_QUERY, headers=headers)
        assert first.status_code == 200, first.text
        assert first.json() == {
            "RequestId": "AKIDtest123",
            "AccessKeyId": "AKIDtest123",
            "Projects": ["proj-1"],
            "Logged": "AKIDtest123",
            "BodyLength": 0,
        }
        again = c.post("/?" + VECTOR_QUERY, headers=headers)
        assert (again.status_code, again.json()["Code"]) == (400, "SignatureNonceUsed")


def test_spec_vector_expired_on_the_real_clock(client: TestClient) -> None:
    if abs(datetime.now(UTC) - VECTOR_DATE).total_seconds() < 1000:
        pytest.skip("the machine clock is at the vector's date")
    resp = client.post("/?" + VECTOR_QUERY, headers=VECTOR_HEADERS)
    assert (resp.status_code, resp.json()["Code"]) == (400, "InvalidTimeStamp.Expired")


def test_bearer(client: TestClient) -> None:
    ok = client.post("/v1/echo", headers={"Authorization": f"Bearer {BOOT_ID}:{BOOT_SECRET}"}, content=b"{}")
    assert ok.status_code == 200
    assert ok.json() == {
        "RequestId": BOOT_ID,
        "AccessKeyId": BOOT_ID,
        "Projects": ["demo"],
        "Logged": BOOT_ID,
        "BodyLength": 2,
    }
    bad = client.get("/v1/echo", headers={"Authorization": f"Bearer {BOOT_ID}:wrong"})
    assert (bad.status_code, bad.json()["Code"]) == (400, "SignatureDoesNotMatch")
    unknown = client.get("/v1/echo", headers={"Authorization": "Bearer LTAInope:x"})
    assert (unknown.status_code, unknown.json()["Code"]) == (404, "InvalidAccessKeyId.NotFound")
    for garbled in (f"Bearer {BOOT_ID}", "Bearer :x", "Bearer", "Basic abc"):
        resp = client.get("/v1/echo", headers={"Authorization": garbled})
        assert (resp.status_code, resp.json()["Code"]) == (400, "IncompleteSignature"), garbled


def test_no_credentials(client: TestClient) -> None:
    resp = client.get("/v1/echo")
    assert (resp.status_code, resp.json()["Code"]) == (400, "IncompleteSignature")
    assert resp.json()["RequestId"]


def test_sts_header_refused_before_anything(client: TestClient) -> None:
    resp = client.get(
        "/v1/echo", headers={"Authorization": f"Bearer {BOOT_ID}:{BOOT_SECRET}", "x-acs-security-token": "t"}
    )
    assert (resp.status_code, resp.json()["Code"]) == (403, "Forbidden")


def test_v2_parameters_in_a_form_body(client: TestClient) -> None:
    from alibabacloud_tea_openapi.utils import Utils as SdkUtils

    params = {
        "Action": "DetectImageCropping",
        "Version": "2020-09-30",
        "Format": "json",
        "Timestamp": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "SignatureNonce": "form-nonce-1",
        "SignatureMethod": "HMAC-SHA1",
        "SignatureVersion": "1.0",
        "AccessKeyId": BOOT_ID,
        "ProjectName": "demo a+b",
    }
    params["Signature"] = SdkUtils.get_rpcsignature(params, "POST", BOOT_SECRET)
    resp = client.post("/", data=params)
    assert resp.status_code == 200, resp.text
    assert resp.json()["BodyLength"] > 0

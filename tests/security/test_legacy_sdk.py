"""The legacy official client (aliyun-python-sdk-core, v2 signatures) against a real stack: the right
secret crops; a wrong one is reported as ``InvalidAccessKeySecret``, not an IndexError.

The client tells a wrong secret from a mangled request by comparing the server's string to sign (after
the one ``:`` of the message) with its own. Only requests that sign themselves keep their string to sign:
``RpcRequest`` and its product subclasses (``aliyun-python-sdk-imm``'s request classes). ``CommonRequest``
signs through an inner request and compares an empty string, so it reports ``SignatureDoesNotMatch`` (with
the server's string to sign in the message) however right the server is.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from aliyunsdkcore.acs_exception.exceptions import ClientException, ServerException
from aliyunsdkcore.client import AcsClient
from aliyunsdkcore.request import AcsRequest, CommonRequest, RpcRequest

from tests.conftest import Stack
from tests.integration.helpers import jpeg
from tests.security.signatures_support import new_key

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def stack(make_stack: Any) -> Stack:
    s: Stack = make_stack(workers=1)
    return s


@pytest.fixture(scope="module")
def world(stack: Stack) -> dict[str, str]:
    project, bucket = stack.project()
    key_id, secret = new_key(stack, project)
    return {
        "project": project,
        "uri": stack.put(bucket, "legacy.jpg", jpeg(800, 500, patch=(650, 120))),
        "key_id": key_id,
        "secret": secret,
    }


def detect(
    stack: Stack, key_id: str, secret: str, project: str, uri: str, *, common: bool = True
) -> dict[str, Any]:
    client = AcsClient(key_id, secret, "cn-hangzhou", timeout=15, connect_timeout=5)
    request: AcsRequest
    if common:
        request = CommonRequest(
            domain=stack.url.removeprefix("http://"), version="2020-09-30", action_name="DetectImageCropping"
        )
    else:  # what a product SDK's generated request class is
        request = RpcRequest("imm", "2020-09-30", "DetectImageCropping")
        request.set_endpoint(stack.url.removeprefix("http://"))
    request.set_protocol_type("http")
    request.set_method("POST")
    request.add_query_param("ProjectName", project)
    request.add_query_param("SourceURI", uri)
    request.add_query_param("AspectRatios", json.dumps(["1:1", "16:9"]))
    body: dict[str, Any] = json.loads(client.do_action_with_exception(request))
    return body


@pytest.mark.parametrize("common", [True, False], ids=["CommonRequest", "RpcRequest"])
def test_right_secret_crops(stack: Stack, world: dict[str, str], common: bool) -> None:
    body = detect(stack, world["key_id"], world["secret"], world["project"], world["uri"], common=common)
    assert [c["AspectRatio"] for c in body["Croppings"]] == ["1:1", "16:9"]
    for c in body["Croppings"]:
        b = c["Boundary"]
        assert b["Left"] >= 0 and b["Left"] + b["Width"] <= 800 and b["Top"] + b["Height"] <= 500
    assert body["RequestId"]


def test_wrong_secret_is_reported_as_invalid_access_key_secret(stack: Stack, world: dict[str, str]) -> None:
    with pytest.raises((ServerException, ClientException)) as info:
        detect(stack, world["key_id"], "not-the-secret-at-all", world["project"], world["uri"], common=False)
    err = info.value
    assert isinstance(err, ServerException)  # the legacy client's class for every error answer
    assert (err.get_http_status(), err.get_error_code()) == (400, "InvalidAccessKeySecret")


def test_wrong_secret_with_common_request_is_a_clean_mismatch(stack: Stack, world: dict[str, str]) -> None:
    with pytest.raises((ServerException, ClientException)) as info:
        detect(stack, world["key_id"], "not-the-secret-at-all", world["project"], world["uri"])
    err = info.value  # an IndexError (the old failure) would not be caught here and would fail the test
    assert isinstance(err, ServerException)
    assert (err.get_http_status(), err.get_error_code()) == (400, "SignatureDoesNotMatch")
    assert "server string to sign is:POST&%2F&AccessKeyId%3D" in err.get_error_msg()

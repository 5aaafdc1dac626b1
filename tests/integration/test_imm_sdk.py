"""The official IMM SDK (alibabacloud-imm20200930), unchanged, pointed at a running cropq."""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

import cv2
import pytest
from alibabacloud_imm20200930 import models as imm_models
from alibabacloud_imm20200930.client import Client
from alibabacloud_tea_openapi import models as open_api_models
from alibabacloud_tea_openapi.exceptions import ClientException, ServerException, ThrottlingException

from tests.conftest import ADMIN_KEY, Stack
from tests.integration.helpers import jpeg

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def stack(make_stack: Any) -> Stack:
    s: Stack = make_stack(workers=2)
    return s


@pytest.fixture(scope="module")
def photos(stack: Stack) -> dict[str, Any]:
    project, bucket = stack.project()
    other_project, other_bucket = stack.project()
    from skimage import data

    face = cv2.imencode(".jpg", cv2.cvtColor(data.astronaut(), cv2.COLOR_RGB2BGR))[1].tobytes()
    cat = cv2.imencode(".jpg", cv2.cvtColor(data.chelsea(), cv2.COLOR_RGB2BGR))[1].tobytes()
    return {
        "project": project,
        "bucket": bucket,
        "plain": stack.put(bucket, "dir with space/img+1.jpg", jpeg(1600, 1000, patch=(1300, 300))),
        "face": stack.put(bucket, "astronaut.jpg", face),
        "cat": stack.put(bucket, "chelsea.jpg", cat),
        "other": stack.put(other_bucket, "x.jpg", jpeg(400, 300)),
        "other_project": other_project,
    }


def sdk(stack: Stack, key_id: str | None = None, secret: str | None = None, **config: Any) -> Client:
    endpoint = stack.url.removeprefix("http://")
    return Client(
        open_api_models.Config(
            access_key_id=key_id or ADMIN_KEY["AccessKeyId"],
            access_key_secret=secret or ADMIN_KEY["AccessKeySecret"],
            endpoint=endpoint,
            protocol="http",
            **config,
        )
    )


def call(client: Client, **kw: Any) -> Any:
    return client.detect_image_cropping(imm_models.DetectImageCroppingRequest(**kw)).body


def _check(crop: Any, width: int, height: int) -> None:
    b = crop.boundary
    w, h = (int(p) for p in crop.aspect_ratio.split(":"))
    assert b.left >= 0 and b.top >= 0 and b.left + b.width <= width and b.top + b.height <= height
    assert abs(b.width * h / w - b.height) <= 1 + h / w
    assert [(p.x, p.y) for p in b.polygon] == [
        (b.left, b.top),
        (b.left + b.width, b.top),
        (b.left + b.width, b.top + b.height),
        (b.left, b.top + b.height),
    ]
    assert 0 <= crop.confidence <= 1


def test_two_ratios(stack: Stack, photos: dict[str, Any]) -> None:
    body = call(
        sdk(stack),
        project_name=photos["project"],
        source_uri=photos["plain"],
        aspect_ratios='["1:1", "16:9"]',
    )
    assert body.request_id
    assert [c.aspect_ratio for c in body.croppings] == ["1:1", "16:9"]
    for c in body.croppings:
        _check(c, 1600, 1000)
    assert body.croppings[0].boundary.left + body.croppings[0].boundary.width >= 1300  # keeps the patch


def test_auto_and_the_v2_signature(stack: Stack, photos: dict[str, Any]) -> None:
    for client in (sdk(stack), sdk(stack, signature_algorithm="v2")):
        body = call(client, project_name=photos["project"], source_uri=photos["plain"])
        (crop,) = body.croppings
        _check(crop, 1600, 1000)


def test_hint_is_matched(stack: Stack, photos: dict[str, Any]) -> None:
    body = call(
        sdk(stack),
        project_name=photos["project"],
        source_uri=photos["face"],
        aspect_ratios='["9:16"]',
        inclusion_hints=["face"],
    )
    assert body.matched_inclusion_hints == ["face"]
    (crop,) = body.croppings
    _check(crop, 512, 512)
    # The astronaut's face (about x 180-290, y 60-190) is inside the narrow crop.
    b = crop.boundary
    assert b.left <= 180 and b.left + b.width >= 290
    unknown = call(
        sdk(stack),
        project_name=photos["project"],
        source_uri=photos["face"],
        aspect_ratios='["1:1"]',
        inclusion_hints=["unicorn"],
    )
    assert unknown.matched_inclusion_hints == [] and len(unknown.croppings) == 1


def test_object_class_hint_in_chinese(stack: Stack, photos: dict[str, Any]) -> None:
    # The worker's object detector finds the whole cat; only a crop as wide as the photo holds all of it.
    body = call(
        sdk(stack),
        project_name=photos["project"],
        source_uri=photos["cat"],
        aspect_ratios='["3:2"]',
        inclusion_hints=["猫"],
    )
    assert body.matched_inclusion_hints == ["猫"]
    (crop,) = body.croppings
    _check(crop, 451, 300)


@pytest.mark.parametrize(
    "ratios",
    [
        '["1:1","4:3","3:4","16:9","9:16","2:1"]',
        "[]",
        '["4.1:3"]',
        '["1:3"]',
        '["3:1"]',
        '["0:1"]',
        '["20:19"]',
        "1:1",
    ],
)
def test_invalid_aspect_ratios(stack: Stack, photos: dict[str, Any], ratios: str) -> None:
    with pytest.raises(ClientException) as e:
        call(sdk(stack), project_name=photos["project"], source_uri=photos["plain"], aspect_ratios=ratios)
    assert e.value.code == "InvalidArgument" and e.value.status_code == 400


def test_other_invalid_inputs(stack: Stack, photos: dict[str, Any]) -> None:
    cases: list[tuple[dict[str, Any], int, str]] = [
        ({"source_uri": photos["plain"], "inclusion_hints": ["a", "b"]}, 400, "InvalidArgument"),
        ({"source_uri": "http://x/y.jpg"}, 400, "InvalidArgument"),
        ({"source_uri": None}, 400, "InvalidArgument"),
        ({"source_uri": photos["other"]}, 400, "InvalidArgument"),  # a bucket of another project
        ({"source_uri": f"oss://{photos['bucket']}/nope.jpg"}, 404, "ResourceNotFound"),
    ]
    for kw, status, code in cases:
        with pytest.raises(ClientException) as e:
            call(sdk(stack), project_name=photos["project"], **kw)
        assert (e.value.status_code, e.value.code) == (status, code), kw
    with pytest.raises(ClientException) as e:
        call(sdk(stack), project_name="no-such-project", source_uri=photos["plain"])
    assert (e.value.status_code, e.value.code) == (404, "ResourceNotFound")
    assert "project" in e.value.message


def test_wrong_secret_and_unknown_key(stack: Stack, photos: dict[str, Any]) -> None:
    with pytest.raises(ClientException) as e:
        call(
            sdk(stack, secret="wrong-secret-wrong-secret"),
            project_name=photos["project"],
            source_uri=photos["plain"],
        )
    assert (e.value.status_code, e.value.code) == (400, "SignatureDoesNotMatch")
    with pytest.raises(ClientException) as e:
        call(
            sdk(stack, key_id="LTAInosuchkey000000", secret="x" * 20),
            project_name=photos["project"],
            source_uri=photos["plain"],
        )
    assert (e.value.status_code, e.value.code) == (404, "InvalidAccessKeyId.NotFound")


def test_replayed_nonce_is_refused(
    stack: Stack, photos: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    from alibabacloud_tea_openapi.utils import Utils

    monkeypatch.setattr(Utils, "get_nonce", staticmethod(lambda: "f" * 32))
    client = sdk(stack)
    call(client, project_name=photos["project"], source_uri=photos["plain"], aspect_ratios='["1:1"]')
    with pytest.raises(ClientException) as e:
        call(client, project_name=photos["project"], source_uri=photos["plain"], aspect_ratios='["1:1"]')
    assert (e.value.status_code, e.value.code) == (400, "SignatureNonceUsed")


def test_project_scoped_key_from_the_cli(stack: Stack, photos: dict[str, Any]) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "cropq_cli.main", "keys", "create", "--project", photos["project"], "--json"],
        env=stack.env,
        capture_output=True,
        text=True,
        check=True,
    )
    key = json.loads(out.stdout)
    assert key["Projects"] == [photos["project"]]
    scoped = sdk(stack, key["AccessKeyId"], key["AccessKeySecret"])
    assert call(scoped, project_name=photos["project"], source_uri=photos["plain"]).croppings
    with pytest.raises(ClientException) as e:
        call(scoped, project_name=photos["other_project"], source_uri=photos["other"])
    assert e.value.status_code == 403 and e.value.code == "Forbidden"
    subprocess.run(
        [sys.executable, "-m", "cropq_cli.main", "keys", "disable", key["AccessKeyId"]],
        env=stack.env,
        check=True,
        capture_output=True,
    )
    with pytest.raises(ClientException) as e:
        call(scoped, project_name=photos["project"], source_uri=photos["plain"])
    assert (e.value.status_code, e.value.code) == (403, "InvalidAccessKeyId.Inactive")


def test_undecodable_image(stack: Stack, photos: dict[str, Any]) -> None:
    uri = stack.put(photos["bucket"], "bad.jpg", b"GIF89a not really")
    with pytest.raises(ClientException) as e:
        call(sdk(stack), project_name=photos["project"], source_uri=uri)
    assert (e.value.status_code, e.value.code) == (400, "InvalidArgument")


def test_throttling(make_stack: Any) -> None:
    import httpx

    stack: Stack = make_stack(workers=1, rate_limit_per_minute="3")
    # A fresh key, so that no other test's requests share its window.
    out = subprocess.run(
        [sys.executable, "-m", "cropq_cli.main", "keys", "create", "--project", "*", "--json"],
        env=stack.env,
        capture_output=True,
        text=True,
        check=True,
    )
    key = json.loads(out.stdout)
    bucket = "throttle-bucket"
    stack.s3.client().make_bucket(bucket)
    uri = stack.put(bucket, "a.jpg", jpeg(300, 200))
    # A token bucket of 3: the PUT and two crops spend it, the fourth request is refused (a unit takes 20 s
    # to come back, far longer than these requests take).
    r = httpx.put(
        f"{stack.url}/v1/projects/throttled",
        json={"Buckets": [bucket]},
        headers={"Authorization": f"Bearer {key['AccessKeyId']}:{key['AccessKeySecret']}"},
    )
    assert r.status_code == 201, r.text
    client = sdk(stack, key["AccessKeyId"], key["AccessKeySecret"])
    for _ in range(2):
        call(client, project_name="throttled", source_uri=uri, aspect_ratios='["1:1"]')
    with pytest.raises(ThrottlingException) as e:
        call(client, project_name="throttled", source_uri=uri, aspect_ratios='["1:1"]')
    assert e.value.code == "Throttling" and e.value.status_code == 429 and e.value.retry_after > 0


def test_slow_job_answers_service_unavailable_and_stays_pollable(make_stack: Any) -> None:
    stack: Stack = make_stack(workers=1, rpc_wait_seconds="0.2")
    project, bucket = stack.project()
    from tests.integration.helpers import png

    uri = stack.put(bucket, "big.png", png(2500, 2500))
    with pytest.raises(ServerException) as e:
        call(sdk(stack), project_name=project, source_uri=uri)
    assert (e.value.status_code, e.value.code) == (503, "ServiceUnavailable")
    rid = e.value.message.split("crop-jobs/")[-1].split(".")[0]
    with stack.http() as c:
        job = c.get(f"/v1/projects/{project}/crop-jobs/{rid}", params={"wait": 30}).json()
    assert job["Status"] == "Succeeded"


def test_unknown_action_and_version(stack: Stack) -> None:
    import httpx

    auth = {"Authorization": f"Bearer {ADMIN_KEY['AccessKeyId']}:{ADMIN_KEY['AccessKeySecret']}"}
    r = httpx.post(
        f"{stack.url}/", headers={**auth, "x-acs-action": "DetectImageFaces", "x-acs-version": "2020-09-30"}
    )
    assert r.status_code == 404 and r.json()["Code"] == "InvalidAction.NotFound"
    r = httpx.post(
        f"{stack.url}/",
        headers={**auth, "x-acs-action": "DetectImageCropping", "x-acs-version": "2017-01-01"},
    )
    assert r.status_code == 400 and r.json()["Code"] == "InvalidVersion"
    assert r.headers["content-type"].startswith("application/json")

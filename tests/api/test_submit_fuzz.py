"""Any submit body gets a 202 or an IMM error — never a 500 — and nothing is queued for a refused one.

Runs the real app in-process (TestClient) on the session's real Valkey; Celery messages go to Redis but no
worker consumes them here.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
import redis
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from api.main import create_app
from worker.settings import Settings

KEY = {"AccessKeyId": "LTAIfuzzadmin00001", "AccessKeySecret": "fuzz-secret-0123456789", "Projects": ["*"]}
AUTH = {"Authorization": f"Bearer {KEY['AccessKeyId']}:{KEY['AccessKeySecret']}"}
QUEUE = "fuzz-queue"


@pytest.fixture(scope="module")
def client(redis_url: str) -> Iterator[TestClient]:
    s = Settings(
        redis_url=redis_url,
        access_keys=json.dumps([KEY]),
        secret_key="test-secret-key-0123456789abcdef0123",
        queue_name=QUEUE,
        rate_limit_per_minute=0,
        log_level="WARNING",
    )
    with TestClient(create_app(s)) as c:
        assert c.put("/v1/projects/fuzz", json={"Buckets": ["photos"]}, headers=AUTH).status_code in (
            200,
            201,
        )
        yield c


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=6) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=10,
)
fields = st.sampled_from(
    [
        "SourceURI",
        "AspectRatios",
        "InclusionHints",
        "CredentialConfig",
        "CallbackURL",
        "UserData",
        "IdempotencyKey",
        "Other",
    ]
)
plausible = st.fixed_dictionaries(
    {},
    optional={
        "SourceURI": st.sampled_from(
            ["oss://photos/a.jpg", "s3://photos/x/y.png", "oss://other/a.jpg", "oss://p/", "photos/a.jpg", ""]
        ),
        "AspectRatios": st.lists(
            st.sampled_from(["1:1", "auto", "4.1:3", "1:3", "19:10", "0:0"]), max_size=6
        ),
        "InclusionHints": st.lists(st.sampled_from(["face", "", "猫", "x" * 70]), max_size=2),
        "CallbackURL": st.sampled_from(["https://example.com/h", "ftp://x", "not a url"]),
    },
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.one_of(st.dictionaries(fields, json_values, max_size=5), plausible, json_values))
def test_never_a_500(client: TestClient, redis_url: str, body: Any) -> None:
    r = redis.Redis.from_url(redis_url)
    before = r.llen(QUEUE)
    resp = client.post("/v1/projects/fuzz/crop-jobs", json=body, headers=AUTH)
    assert resp.status_code in (202, 400), resp.text
    payload = resp.json()
    if resp.status_code == 202:
        assert r.llen(QUEUE) == before + 1
        assert payload["Status"] == "Queued"
    else:
        assert payload["Code"] == "InvalidArgument" and payload["Message"], payload
        assert r.llen(QUEUE) == before


def test_malformed_json_and_wrong_content(client: TestClient) -> None:
    for content in (b"{", b"[]", b"null", b"\xff\xfe", b""):
        resp = client.post(
            "/v1/projects/fuzz/crop-jobs",
            content=content,
            headers={**AUTH, "content-type": "application/json"},
        )
        assert resp.status_code == 400 and resp.json()["Code"] == "InvalidArgument", resp.text


def test_redis_outage_is_a_503_not_a_crash() -> None:
    s = Settings(
        redis_url="redis://127.0.0.1:1/0",
        access_keys=json.dumps([KEY]),
        secret_key="test-secret-key-0123456789abcdef0123",
        log_level="WARNING",
    )
    with TestClient(create_app(s)) as c:
        resp = c.post("/v1/projects/fuzz/crop-jobs", json={"SourceURI": "oss://photos/a.jpg"}, headers=AUTH)
        assert resp.status_code == 503 and resp.json()["Code"] == "ServiceUnavailable", resp.text
        assert c.get("/readyz").status_code == 503
        assert c.get("/healthz").status_code == 200

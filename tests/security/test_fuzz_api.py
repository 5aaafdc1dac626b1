"""Fuzzing: schemathesis drives every operation of ``/openapi.json`` and hypothesis the RPC face's
parameters. No answer may be a 5xx, break the documented schema, or be an error without the IMM body.

The real app runs in-process on the session's real Valkey (its own database, so generated project names
cannot touch other tests' projects); Celery messages go to Redis, and no worker consumes them.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote_from_bytes

import pytest
import redis
import schemathesis
from fastapi import FastAPI
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import SecretStr
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from api.main import create_app
from worker import keys
from worker.contracts import utcnow_iso
from worker.projects import Project
from worker.sealing import WEBHOOK_SECRETS, SecretBox
from worker.settings import Settings
from worker.webhooks.signing import new_secret

pytestmark = pytest.mark.integration

KEY = {
    "AccessKeyId": "LTAIfuzzapiadmin01",
    "AccessKeySecret": "fuzz-api-secret-0123456789",
    "Projects": ["*"],
}
AUTH = {"Authorization": f"Bearer {KEY['AccessKeyId']}:{KEY['AccessKeySecret']}"}
SECRET_KEY = "fuzz-api-secret-key-0123456789abcdef"
PROJECT, BUCKET = "fuzz", "photos"
FUZZ_DB = 7
IMM_KEYS = {"RequestId", "HostId", "Code", "Message", "Recommend"}


def _own_db(redis_url: str) -> str:
    return redis_url.rsplit("/", 1)[0] + f"/{FUZZ_DB}"


def _app(redis_url: str) -> FastAPI:
    url = _own_db(redis_url)
    s = Settings(
        redis_url=url,
        access_keys=json.dumps([KEY]),
        secret_key=SECRET_KEY,
        queue_name="fuzz-api-queue",
        rate_limit_per_minute=0,
        s3_endpoint="127.0.0.1:1",  # no S3: /readyz answers its documented 503
        rpc_wait_seconds=0.05,  # no worker: the RPC face answers 503 "still running" at once
        log_level="WARNING",
    )
    r = redis.Redis.from_url(url)
    box = SecretBox(SecretStr(SECRET_KEY), WEBHOOK_SECRETS)
    project = Project(
        ProjectName=PROJECT,
        Buckets=[BUCKET],
        CreatedAt=utcnow_iso(),
        WebhookSecret=box.seal(PROJECT, new_secret()),
    )
    r.set(keys.project(PROJECT), project.model_dump_json())
    r.close()
    return create_app(s)


@pytest.fixture(scope="module")
def api_schema(redis_url: str) -> Any:
    # schemathesis runs the app's lifespan itself, on the one event loop its requests use.
    return schemathesis.openapi.from_asgi("/openapi.json", _app(redis_url))


def _operations() -> list[tuple[str, str]]:
    """Every operation the document lists (built without servers: the document needs none)."""
    doc = create_app(Settings(secret_key=SECRET_KEY, log_level="WARNING")).openapi()
    return [(method.upper(), path) for path, item in doc["paths"].items() for method in item]


def imm_error_body(ctx: Any, response: Any, case: Any) -> bool:
    """Every 4xx/5xx answer of an authenticated route carries IMM's body."""
    if response.status_code >= 400:
        body = json.loads(response.content)
        assert set(body) == IMM_KEYS, body
        assert body["Code"] and body["Message"], body
    return True


CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]


@pytest.mark.parametrize(("method", "path"), _operations(), ids=lambda v: str(v))
def test_openapi_operation(api_schema: Any, method: str, path: str) -> None:
    operation = api_schema[path][method]
    operations_route = path in (
        "/healthz",
        "/readyz",
        "/metrics",
        "/metrics/cluster",
    )  # unauthenticated, their own bodies
    extra = [] if operations_route else [imm_error_body]
    # Without S3, /readyz must answer its documented 503: the one 5xx expected here.
    checks = [c for c in CHECKS if c is not not_a_server_error] if path == "/readyz" else CHECKS

    @settings(max_examples=30, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
    @given(operation.as_strategy())
    def run(case: Any) -> None:
        case.call_and_validate(headers=AUTH, checks=checks, additional_checks=extra)

    run()


@pytest.fixture(scope="module")
def client(redis_url: str) -> Iterator[TestClient]:
    with TestClient(_app(redis_url)) as c:
        yield c


def _json_text(depth: int) -> st.SearchStrategy[str]:
    leaves = st.none() | st.booleans() | st.integers() | st.text(max_size=8)
    return st.recursive(
        leaves,
        lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner),
        max_leaves=depth,
    ).map(json.dumps)


# Any shape of string: random text (surrogates, NUL and other controls included), JSON of any structure,
# deep and long documents, huge numbers, near-valid values.
anything = st.one_of(
    st.text(st.characters(codec=None), max_size=40),
    st.text(st.characters(codec="utf-8"), max_size=40),
    _json_text(12),
    st.integers(1, 200_000).map(lambda n: "[" * n + "]" * n),
    st.integers(1, 6000).map(lambda n: json.dumps(["1" * n + ":1"])),
    st.integers(0, 400_000).map(lambda n: "x" * n),
    st.sampled_from(['["1:1"]', '["auto"]', '["face"]', "{}", '{"a": 1}', f"oss://{BUCKET}/a.jpg", PROJECT]),
)
rpc_params = st.fixed_dictionaries(
    {"Action": st.just("DetectImageCropping"), "Version": st.just("2020-09-30")},
    optional={
        "ProjectName": anything | st.just(PROJECT),
        "SourceURI": anything | st.just(f"oss://{BUCKET}/a.jpg"),
        "AspectRatios": anything,
        "InclusionHints": anything,
        "CredentialConfig": anything,
    },
)


@settings(max_examples=120, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
@given(rpc_params, st.booleans())
def test_rpc_parameters_of_any_shape(client: TestClient, params: dict[str, str], as_form: bool) -> None:
    # A lone surrogate goes on the wire as bytes that are not UTF-8, as a hostile client's would.
    encoded = "&".join(
        f"{k}={quote_from_bytes(v.encode('utf-8', 'surrogatepass'), safe='')}" for k, v in params.items()
    )
    if as_form or len(encoded) > 60_000:
        resp = client.post(
            "/",
            content=encoded.encode(),
            headers={**AUTH, "content-type": "application/x-www-form-urlencoded"},
        )
    else:
        resp = client.post(f"/?{encoded}", headers=AUTH)
    body = resp.json()
    if resp.status_code >= 400:
        assert set(body) == IMM_KEYS, resp.text
    # A valid job is accepted and, with no worker, still running when the wait ends: that is the one 5xx.
    assert resp.status_code < 500 or (resp.status_code == 503 and body["Code"] == "ServiceUnavailable"), (
        resp.text
    )

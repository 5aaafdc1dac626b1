"""Rate limits that mean something, against a real stack: a batch costs one unit per job, and failed
authentications are throttled per client address and per AccessKeyId (the owner of a key id under attack
keeps working from an address that has not failed on it)."""

from __future__ import annotations

import uuid
from typing import Any

import httpx
import pytest

from tests.conftest import Stack
from tests.integration.helpers import jpeg
from tests.security.signatures_support import acs3_headers, client_from, code, new_key, v2_query

pytestmark = pytest.mark.integration

FAILURES = 5  # CROPQ_AUTH_FAILURES_PER_MINUTE on this stack


@pytest.fixture(scope="module")
def stack(make_stack: Any) -> Stack:
    s: Stack = make_stack(workers=1, rate_limit_per_minute="50", auth_failures_per_minute=str(FAILURES))
    return s


@pytest.fixture(scope="module")
def world(stack: Stack) -> dict[str, str]:
    project, bucket = stack.project()
    return {"project": project, "uri": stack.put(bucket, "small.jpg", jpeg(160, 120))}


def bearer(key_id: str, secret: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key_id}:{secret}"}


def batch(n: int, uri: str) -> dict[str, Any]:
    return {"Jobs": [{"SourceURI": uri, "AspectRatios": ["1:1"]} for _ in range(n)]}


def test_a_batch_costs_one_unit_per_job(stack: Stack, world: dict[str, str]) -> None:
    key_id, secret = new_key(stack, world["project"])  # a fresh bucket of 50
    path = f"/v1/projects/{world['project']}/crop-jobs:batch"
    with client_from(stack, "127.0.0.41", headers=bearer(key_id, secret)) as c:
        refused = c.post(path, json=batch(60, world["uri"]))
        assert code(refused) == (429, "Throttling")
        assert int(refused.headers["x-acs-retry-after"]) > 0
        accepted = c.post(path, json=batch(40, world["uri"]))
        assert accepted.status_code == 202, accepted.text
        assert len(accepted.json()["Jobs"]) == 40
        # 1 (the refused batch's authentication) + 40 spent: a batch of 10 no longer fits.
        assert code(c.post(path, json=batch(10, world["uri"]))) == (429, "Throttling")


def test_failures_throttle_the_key_id_from_the_failing_address_only(
    stack: Stack, world: dict[str, str]
) -> None:
    key_id, secret = new_key(stack, world["project"])
    project_path = f"/v1/projects/{world['project']}"
    with client_from(stack, "127.0.0.42") as attacker:
        for _ in range(FAILURES):
            r = attacker.get(project_path, headers=bearer(key_id, "guess-" + uuid.uuid4().hex))
            assert code(r) == (400, "SignatureDoesNotMatch")
        right = attacker.get(project_path, headers=bearer(key_id, secret))
        assert code(right) == (429, "Throttling")  # even the right secret, from this address
        assert 0 < int(right.headers["x-acs-retry-after"]) <= 60_000
    with client_from(stack, "127.0.0.43") as owner:
        r = owner.get(project_path, headers=bearer(key_id, secret))
        assert r.status_code == 200, r.text  # the owner, elsewhere, is not locked out
        # but a guess from this address now gets no verification either, after one failure
        assert code(owner.get(project_path, headers=bearer(key_id, "wrong"))) == (
            400,
            "SignatureDoesNotMatch",
        )
        assert code(owner.get(project_path, headers=bearer(key_id, secret))) == (429, "Throttling")


def test_failures_of_every_kind_throttle_the_address(stack: Stack, world: dict[str, str]) -> None:
    key_id, secret = new_key(stack, world["project"])
    other_id, other_secret = new_key(stack, world["project"])
    q = f"ProjectName={world['project']}&SourceURI={world['uri']}"
    query = str(httpx.QueryParams(q))
    with client_from(stack, "127.0.0.44") as c:
        attempts = [
            c.get(f"/v1/projects/{world['project']}", headers=bearer("LTAInosuchkey0000000", "x" * 20)),
            c.post("/?" + v2_query("POST", key_id, "wrong-secret", ProjectName=world["project"])),
            c.post(f"/?{query}", headers=acs3_headers(stack, "POST", "/", query, b"", key_id, "wrong")),
            c.post("/?" + v2_query("POST", key_id, secret, Timestamp="2020-01-01T00:00:00Z")),
            c.get(f"/v1/projects/{world['project']}", headers={"Authorization": "Bearer garbled"}),
        ]
        assert [code(r) for r in attempts] == [
            (404, "InvalidAccessKeyId.NotFound"),
            (400, "SignatureDoesNotMatch"),
            (400, "SignatureDoesNotMatch"),
            (400, "InvalidTimeStamp.Expired"),
            (400, "IncompleteSignature"),
        ]
        # Another, untouched key from the same address: the address itself is over its budget.
        r = c.get(f"/v1/projects/{world['project']}", headers=bearer(other_id, other_secret))
        assert code(r) == (429, "Throttling")
    with client_from(stack, "127.0.0.45") as elsewhere:
        r = elsewhere.get(f"/v1/projects/{world['project']}", headers=bearer(other_id, other_secret))
        assert r.status_code == 200, r.text

"""A tenant's key cannot widen its access, can manage its own webhook secret, and cannot probe other
projects' jobs by timing: real requests against a real API process on real Valkey and SeaweedFS."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
import redis
from pydantic import SecretStr

from tests.conftest import ADMIN_KEY, Stack
from worker import keys
from worker.projects import Project, signing_secrets
from worker.sealing import WEBHOOK_SECRETS, SecretBox

pytestmark = pytest.mark.integration

TENANT_A = {
    "AccessKeyId": "LTAItenantA000001",
    "AccessKeySecret": "tenant-a-secret-000001",
    "Projects": ["ta"],
}
TENANT_B = {
    "AccessKeyId": "LTAItenantB000001",
    "AccessKeySecret": "tenant-b-secret-000001",
    "Projects": ["tb"],
}


def _auth(key: dict[str, Any]) -> dict[str, str]:
    return {"Authorization": f"Bearer {key['AccessKeyId']}:{key['AccessKeySecret']}"}


@pytest.fixture(scope="module")
def stack(make_stack: Any) -> Stack:
    # No worker: submitted jobs stay Queued, so a long-poll on them would wait its whole ?wait=.
    s: Stack = make_stack(workers=0, access_keys=json.dumps([ADMIN_KEY, TENANT_A, TENANT_B]))
    return s


@pytest.fixture(scope="module")
def projects(stack: Stack) -> dict[str, str]:
    """Project name -> its bucket, for the two tenants."""
    return {name: stack.project(name)[1] for name in ("ta", "tb")}


@pytest.fixture
def tenant_a(stack: Stack) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=stack.url, headers=_auth(TENANT_A), timeout=60) as c:
        yield c


@pytest.fixture
def store(stack: Stack) -> Iterator[redis.Redis]:
    r = redis.Redis.from_url(stack.redis_url, decode_responses=True)
    yield r
    r.close()


def _box(stack: Stack) -> SecretBox:
    return SecretBox(SecretStr(stack.env["CROPQ_SECRET_KEY"]), WEBHOOK_SECRETS)


def _stored(store: redis.Redis, name: str) -> Project:
    raw = store.get(keys.project(name))
    assert raw is not None
    return Project.model_validate_json(raw)


def test_a_project_key_cannot_add_another_tenants_bucket(
    stack: Stack, projects: dict[str, str], tenant_a: httpx.Client, store: redis.Redis
) -> None:
    r = tenant_a.put("/v1/projects/ta", json={"Buckets": [projects["ta"], projects["tb"]]})
    assert r.status_code == 403 and r.json()["Code"] == "Forbidden", r.text
    assert _stored(store, "ta").Buckets == [projects["ta"]]
    # Not even its own bucket list again, nor another tenant's project.
    assert tenant_a.put("/v1/projects/ta", json={"Buckets": [projects["ta"]]}).status_code == 403
    assert tenant_a.put("/v1/projects/tb", json={"Buckets": [projects["ta"]]}).status_code == 403
    assert _stored(store, "tb").Buckets == [projects["tb"]]
    # So B's images stay out of reach.
    r = tenant_a.post("/v1/projects/ta/crop-jobs", json={"SourceURI": f"oss://{projects['tb']}/x.jpg"})
    assert r.status_code == 400 and "does not belong" in r.json()["Message"], r.text


def test_a_project_key_cannot_create_a_project(stack: Stack, tenant_a: httpx.Client) -> None:
    r = tenant_a.put("/v1/projects/ta-new", json={"Buckets": []})
    assert r.status_code == 403 and r.json()["Code"] == "Forbidden", r.text
    with stack.http() as admin:
        assert admin.get("/v1/projects/ta-new").status_code == 404
        created = admin.put("/v1/projects/ta-new", json={"Buckets": []})
        assert created.status_code == 201, created.text


def test_a_project_key_reads_its_project_only(projects: dict[str, str], tenant_a: httpx.Client) -> None:
    own = tenant_a.get("/v1/projects/ta")
    assert own.status_code == 200, own.text
    assert own.json()["Buckets"] == [projects["ta"]] and own.json()["WebhookSecret"].startswith("whsec_")
    other = tenant_a.get("/v1/projects/tb")
    assert other.status_code == 403 and "WebhookSecret" not in other.text
    assert tenant_a.post("/v1/projects/tb/webhook-secret:rotate").status_code == 403


def test_rotation_keeps_the_old_secret_signing_for_the_grace_period(
    stack: Stack, projects: dict[str, str], tenant_a: httpx.Client, store: redis.Redis
) -> None:
    box = _box(stack)
    first = tenant_a.get("/v1/projects/ta").json()["WebhookSecret"]

    r = tenant_a.post("/v1/projects/ta/webhook-secret:rotate")
    assert r.status_code == 200, r.text
    second = r.json()["WebhookSecret"]
    assert second.startswith("whsec_") and second != first
    ends = datetime.fromisoformat(r.json()["PreviousWebhookSecretExpiresAt"].replace("Z", "+00:00"))
    assert abs(ends - (datetime.now(UTC) + timedelta(hours=24))) < timedelta(minutes=1)
    stored = _stored(store, "ta")
    assert first not in stored.model_dump_json() and second not in stored.model_dump_json()  # sealed
    assert signing_secrets(stored, box) == [second, first]
    assert stored.Buckets == [projects["ta"]]  # nothing else changed
    assert tenant_a.get("/v1/projects/ta").json()["WebhookSecret"] == second

    # A second rotation within the grace period replaces the previous secret: the first stops signing.
    third = tenant_a.post("/v1/projects/ta/webhook-secret:rotate").json()["WebhookSecret"]
    assert signing_secrets(_stored(store, "ta"), box) == [third, second]
    # After the grace period only the current secret signs.
    later = datetime.now(UTC) + timedelta(hours=24, minutes=1)
    assert signing_secrets(_stored(store, "ta"), box, now=later) == [third]


def test_cleartext_webhook_secrets_are_sealed_when_read(stack: Stack, store: redis.Redis) -> None:
    store.set(
        keys.project("legacy-clear"),
        json.dumps(
            {
                "ProjectName": "legacy-clear",
                "Buckets": [],
                "CreatedAt": "2026-01-01T00:00:00.000Z",
                "WebhookSecret": "whsec_bGVnYWN5LXNlY3JldA==",
            }
        ),
    )
    with stack.http() as admin:
        r = admin.get("/v1/projects/legacy-clear")
    assert r.status_code == 200 and r.json()["WebhookSecret"] == "whsec_bGVnYWN5LXNlY3JldA==", r.text
    stored = _stored(store, "legacy-clear")
    assert not stored.WebhookSecret.startswith("whsec_")
    assert signing_secrets(stored, _box(stack)) == ["whsec_bGVnYWN5LXNlY3JldA=="]


def test_long_poll_on_another_projects_job_answers_404_at_once(
    stack: Stack, projects: dict[str, str], tenant_a: httpx.Client
) -> None:
    with httpx.Client(base_url=stack.url, headers=_auth(TENANT_B), timeout=60) as tenant_b:
        r = tenant_b.post("/v1/projects/tb/crop-jobs", json={"SourceURI": f"oss://{projects['tb']}/x.jpg"})
        assert r.status_code == 202, r.text
        b_job = r.json()["RequestId"]

        t0 = time.monotonic()
        r = tenant_a.get(f"/v1/projects/ta/crop-jobs/{b_job}", params={"wait": 20})
        elapsed = time.monotonic() - t0
        assert r.status_code == 404 and r.json()["Code"] == "ResourceNotFound", r.text
        assert elapsed < 2.0, elapsed
        # An id that exists nowhere answers the same way, as fast.
        t0 = time.monotonic()
        r = tenant_a.get("/v1/projects/ta/crop-jobs/NOSUCHJOB", params={"wait": 20})
        assert r.status_code == 404 and time.monotonic() - t0 < 2.0
        # The project in the path must be one the key may see: refused at once too.
        t0 = time.monotonic()
        assert tenant_a.get(f"/v1/projects/tb/crop-jobs/{b_job}", params={"wait": 20}).status_code == 403
        assert time.monotonic() - t0 < 2.0

        # The owner's long-poll still waits for its (queued, never run) job.
        t0 = time.monotonic()
        r = tenant_b.get(f"/v1/projects/tb/crop-jobs/{b_job}", params={"wait": 1})
        assert r.status_code == 200 and r.json()["Status"] == "Queued", r.text
        assert time.monotonic() - t0 >= 0.9

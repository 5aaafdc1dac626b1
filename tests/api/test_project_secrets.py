"""Webhook secrets are sealed in Redis and opened for the project's owner (real app, real Valkey)."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
import redis
from fastapi.testclient import TestClient

from api.main import create_app
from worker import keys
from worker.settings import Settings

KEY = {"AccessKeyId": "LTAIsealadmin000001", "AccessKeySecret": "seal-secret-0123456789", "Projects": ["*"]}
AUTH = {"Authorization": f"Bearer {KEY['AccessKeyId']}:{KEY['AccessKeySecret']}"}


def _app(redis_url: str, secret_key: str) -> TestClient:
    s = Settings(
        redis_url=redis_url,
        access_keys=json.dumps([KEY]),
        secret_key=secret_key,
        rate_limit_per_minute=0,
        log_level="WARNING",
    )
    return TestClient(create_app(s))


@pytest.fixture
def r(redis_url: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    client.delete(keys.project("sealed"), keys.project("legacy"))
    yield client
    client.close()


def test_secret_is_sealed_at_rest_and_stable_for_the_owner(redis_url: str, r: redis.Redis) -> None:
    with _app(redis_url, "server-key-one-0123456789abcdef0123") as c:
        created = c.put("/v1/projects/sealed", json={"Buckets": ["photos"]}, headers=AUTH)
        assert created.status_code == 201
        secret = created.json()["WebhookSecret"]
        assert secret.startswith("whsec_")
        raw = r.get(keys.project("sealed"))
        assert raw is not None and secret not in raw and secret.removeprefix("whsec_") not in raw
        assert c.get("/v1/projects/sealed", headers=AUTH).json()["WebhookSecret"] == secret
        updated = c.put("/v1/projects/sealed", json={"Buckets": ["photos", "more"]}, headers=AUTH)
        assert updated.status_code == 200 and updated.json()["WebhookSecret"] == secret
    # An API started with another CROPQ_SECRET_KEY cannot open it, and says so without leaking anything.
    with _app(redis_url, "server-key-two-0123456789abcdef0123") as c:
        resp = c.get("/v1/projects/sealed", headers=AUTH)
        assert resp.status_code == 500 and resp.json()["Code"] == "InternalError"
        assert "whsec_" not in resp.text


def test_records_written_before_sealing_are_served_and_sealed_on_read(redis_url: str, r: redis.Redis) -> None:
    r.set(
        keys.project("legacy"),
        json.dumps(
            {
                "ProjectName": "legacy",
                "Buckets": ["b1"],
                "CreatedAt": "2026-01-01T00:00:00Z",
                "WebhookSecret": "whsec_b2xk",
            }
        ),
    )
    with _app(redis_url, "server-key-one-0123456789abcdef0123") as c:
        assert c.get("/v1/projects/legacy", headers=AUTH).json()["WebhookSecret"] == "whsec_b2xk"
        # Read once, the record is written back sealed (and still serves the same secret).
        raw = r.get(keys.project("legacy"))
        assert raw is not None and "whsec_b2xk" not in raw and "b2xk" not in raw
        assert json.loads(raw)["Buckets"] == ["b1"]
        assert c.get("/v1/projects/legacy", headers=AUTH).json()["WebhookSecret"] == "whsec_b2xk"

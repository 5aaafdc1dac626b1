"""A 202 is a promise: the job is fsynced (or replicated) first, or it is withdrawn and the answer is 503."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
import redis
import redis.asyncio as aioredis

from api.durability import confirm_accepted
from api.errors import ImmError
from cropq_cli.localstack import free_port, start_valkey
from tests.conftest import Stack
from tests.integration.helpers import jpeg, submit, wait_done
from worker.settings import Settings

pytestmark = pytest.mark.integration


def test_auto_waits_for_the_append_only_file_when_redis_keeps_one(tmp_path: Path) -> None:
    port = free_port()
    valkey = start_valkey(tmp_path / "aof", port, durable=True)
    try:

        async def accept() -> dict[str, Any]:
            r = aioredis.Redis(port=port)
            try:
                await confirm_accepted(r, Settings(accept_durability="auto"), 3)
                return await r.info("persistence")
            finally:
                await r.aclose()

        info = asyncio.run(accept())
        assert info["aof_enabled"] == 1
        # WAITAOF made Redis fsync the counter's write (and everything before it) before answering.
        assert info["aof_last_write_status"] == "ok"
        assert int(redis.Redis(port=port).hget("cropq:stats", "jobs:accepted") or 0) == 3
    finally:
        valkey.stop()


def test_fsync_demanded_of_a_redis_without_an_append_only_file_is_refused(redis_url: str) -> None:
    async def accept() -> None:
        r = aioredis.Redis.from_url(redis_url)
        try:
            await confirm_accepted(r, Settings(accept_durability="fsync"), 1)
        finally:
            await r.aclose()

    # The session's Valkey keeps nothing on disk: WAITAOF is an error, answered 503 (the job withdrawn).
    with pytest.raises(ImmError) as caught:
        asyncio.run(accept())
    assert caught.value.status == 503 and "appendonly" in caught.value.message.lower()


def test_a_job_that_cannot_reach_a_replica_is_withdrawn_and_answered_503(make_stack: Any) -> None:
    stack: Stack = make_stack(workers=1, accept_durability="replica", accept_durability_timeout_ms="300")
    project, bucket = stack.project()
    uri = stack.put(bucket, "a.jpg", jpeg(400, 300))
    r = redis.Redis.from_url(stack.redis_url)
    with stack.http() as c:
        resp = c.post(
            f"/v1/projects/{project}/crop-jobs", json={"SourceURI": uri}, headers={"Idempotency-Key": "k1"}
        )
        assert resp.status_code == 503, resp.text
        body = resp.json()
        assert body["Code"] == "ServiceUnavailable" and "nothing was accepted" in body["Message"]
        rid = body["RequestId"]
        assert r.get(f"cropq:job:{rid}") is None  # withdrawn: no record, so no worker runs it
        assert r.get(f"cropq:idem:{project}:k1") is None  # and the key may be used again
        batch = c.post(f"/v1/projects/{project}/crop-jobs:batch", json={"Jobs": [{"SourceURI": uri}] * 3})
        assert batch.status_code == 503
        assert not list(r.scan_iter(match=f"cropq:job:{batch.json()['RequestId']}-*"))


def test_memory_durability_accepts_at_once(make_stack: Any) -> None:
    stack: Stack = make_stack(workers=1, accept_durability="memory")
    project, bucket = stack.project()
    uri = stack.put(bucket, "a.jpg", jpeg(400, 300))
    with stack.http() as c:
        assert wait_done(c, project, submit(c, project, {"SourceURI": uri}))["Status"] == "Succeeded"

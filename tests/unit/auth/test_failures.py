"""The failed-authentication buckets against a real Redis, on a pinned clock."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from redis.asyncio import Redis

from api.auth.failures import check_auth_failures, record_auth_failure
from api.errors import ImmError

Run = Callable[[Any], Any]
T0 = 1_800_000_000_000


async def throttled(coro: Any) -> ImmError:
    with pytest.raises(ImmError) as info:
        await coro
    assert (info.value.status, info.value.code) == (429, "Throttling")
    return info.value


def test_address_is_throttled_after_limit_failures(aredis: Redis, arun: Run) -> None:
    async def scenario() -> None:
        for i in range(3):  # failures on three different key ids, from one address
            await check_auth_failures(aredis, "10.0.0.1", f"AK{i}", 3, now_ms=T0)
            await record_auth_failure(aredis, "10.0.0.1", f"AK{i}", 3, now_ms=T0)
        err = await throttled(check_auth_failures(aredis, "10.0.0.1", "AK-good", 3, now_ms=T0))
        assert err.headers == {"x-acs-retry-after": "20000"}  # one failure drains every 60 s / 3
        await throttled(record_auth_failure(aredis, "10.0.0.1", None, 3, now_ms=T0))  # garbled requests too
        await check_auth_failures(aredis, "10.0.0.2", "AK-good", 3, now_ms=T0)  # other addresses are fine
        await check_auth_failures(aredis, "10.0.0.1", "AK-good", 3, now_ms=T0 + 20_000)  # one drained

    arun(scenario())


def test_key_id_is_throttled_for_the_addresses_that_failed_on_it(aredis: Redis, arun: Run) -> None:
    async def scenario() -> None:
        for i in range(3):  # three addresses, one failure each, on one key id
            await record_auth_failure(aredis, f"10.0.1.{i}", "AKvictim", 3, now_ms=T0)
        # The key id is over its budget: addresses that failed on it are refused...
        await throttled(check_auth_failures(aredis, "10.0.1.0", "AKvictim", 3, now_ms=T0))
        # ...a fresh address (the owner's) still gets through, and gets one try if it fails...
        await check_auth_failures(aredis, "10.0.9.9", "AKvictim", 3, now_ms=T0)
        await record_auth_failure(aredis, "10.0.9.9", "AKvictim", 3, now_ms=T0)
        await throttled(check_auth_failures(aredis, "10.0.9.9", "AKvictim", 3, now_ms=T0))
        # ...and other key ids from the failing addresses are not affected by this key's budget.
        await check_auth_failures(aredis, "10.0.1.0", "AKother", 3, now_ms=T0)

    arun(scenario())


def test_zero_limit_is_off_and_odd_key_ids_are_hashed(aredis: Redis, arun: Run) -> None:
    async def scenario() -> None:
        for _ in range(10):
            await record_auth_failure(aredis, "10.0.0.1", "AK", 0, now_ms=T0)
            await check_auth_failures(aredis, "10.0.0.1", "AK", 0, now_ms=T0)
        # Only this module's keys: stacks of other tests share the server and keep writing theirs.
        assert await aredis.keys("cropq:authfail:*") == []
        await record_auth_failure(aredis, "10.0.0.1", "x" * 5000 + ":{}", 3, now_ms=T0)
        assert all(len(k) < 120 for k in await aredis.keys("cropq:authfail:*"))
        assert await aredis.keys("cropq:authfail:*")

    arun(scenario())

"""Nonce replay guard and the per-key token bucket against a real Redis."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from redis.asyncio import Redis

from api.auth.nonce import claim_nonce
from api.auth.ratelimit import charge_rate_limit
from api.errors import ImmError
from worker import keys

Run = Callable[[Any], Any]


def test_nonce_accepted_once_per_key(aredis: Redis, arun: Run) -> None:
    async def scenario() -> None:
        await claim_nonce(aredis, "AK1", "n-1")
        with pytest.raises(ImmError) as info:
            await claim_nonce(aredis, "AK1", "n-1")
        assert (info.value.status, info.value.code) == (400, "SignatureNonceUsed")
        await claim_nonce(aredis, "AK2", "n-1")  # another key's nonce space
        ttl = await aredis.ttl(keys.nonce("AK1", "n-1"))
        assert 895 <= ttl <= 900
        await claim_nonce(aredis, "AK1", "n-2", 1801)
        assert 1795 <= await aredis.ttl(keys.nonce("AK1", "n-2")) <= 1801

    arun(scenario())


T0 = 1_800_000_000_000  # a fixed "now" in ms; the bucket takes the clock from its caller in these tests


def clock(now: list[int]) -> Callable[[], int]:
    return lambda: now[0]


async def refused(aredis: Redis, key: str, units: int, limit: int, now: list[int]) -> ImmError:
    with pytest.raises(ImmError) as info:
        await charge_rate_limit(aredis, key, units, limit, clock_ms=clock(now))
    err = info.value
    assert (err.status, err.code) == (429, "Throttling")
    return err


def test_bucket_allows_the_limit_at_once_then_one_unit_per_interval(aredis: Redis, arun: Run) -> None:
    now = [T0]

    async def scenario() -> None:
        for _ in range(3):
            await charge_rate_limit(aredis, "AK1", 1, 3, clock_ms=clock(now))
        err = await refused(aredis, "AK1", 1, 3, now)
        assert err.headers == {"x-acs-retry-after": "20000"}  # one unit refills every 60 s / 3
        await charge_rate_limit(aredis, "AK2", 1, 3, clock_ms=clock(now))  # other keys unaffected
        now[0] += 19_999
        err = await refused(aredis, "AK1", 1, 3, now)
        assert err.headers == {"x-acs-retry-after": "1"}
        now[0] += 1
        await charge_rate_limit(aredis, "AK1", 1, 3, clock_ms=clock(now))  # exactly one unit back
        await refused(aredis, "AK1", 1, 3, now)

    arun(scenario())


def test_no_burst_of_twice_the_limit_across_a_minute_boundary(aredis: Redis, arun: Run) -> None:
    """A fixed window allowed `limit` at 0:59.9 and `limit` again at 1:00.0; the bucket does not."""
    now = [60_000 * 30_000_000 - 100]

    async def scenario() -> None:
        await charge_rate_limit(aredis, "AK", 10, 10, clock_ms=clock(now))
        now[0] += 200
        await refused(aredis, "AK", 1, 10, now)

    arun(scenario())


def test_units_cost_one_per_job_and_refusals_consume_nothing(aredis: Redis, arun: Run) -> None:
    now = [T0]

    async def scenario() -> None:
        err = await refused(aredis, "AK", 60, 50, now)  # a 60-job batch under 50/min can never pass
        assert "60" in err.message and "50" in err.message
        assert int(err.headers["x-acs-retry-after"]) > 0
        assert await aredis.exists(keys.rate_limit("AK")) == 0  # the refusal stored nothing
        await charge_rate_limit(aredis, "AK", 40, 50, clock_ms=clock(now))  # 40 jobs pass
        err = await refused(aredis, "AK", 11, 50, now)  # 40 + 11 > 50
        assert err.headers == {"x-acs-retry-after": "1200"}  # 1 unit short, 1.2 s per unit
        for _ in range(10):  # the refused 11 took nothing: exactly 10 remain
            await charge_rate_limit(aredis, "AK", 1, 50, clock_ms=clock(now))
        await refused(aredis, "AK", 1, 50, now)
        pttl = await aredis.pttl(keys.rate_limit("AK"))
        assert 0 < pttl <= 60_000  # the bucket expires once it is full again

    arun(scenario())


def test_zero_units_or_zero_limit_do_nothing(aredis: Redis, arun: Run) -> None:
    async def scenario() -> None:
        for _ in range(50):
            await charge_rate_limit(aredis, "AK1", 1, 0)
            await charge_rate_limit(aredis, "AK1", 0, 1)
            await charge_rate_limit(aredis, "AK1", -5, 1)
        assert await aredis.dbsize() == 0

    arun(scenario())


def test_redis_clock_is_used_by_default(aredis: Redis, arun: Run) -> None:
    async def scenario() -> None:
        await charge_rate_limit(aredis, "AK", 2, 2)
        with pytest.raises(ImmError) as info:
            await charge_rate_limit(aredis, "AK", 1, 2)
        assert 0 < int(info.value.headers["x-acs-retry-after"]) <= 30_000

    arun(scenario())

"""Nonce replay guard and per-key rate limit against a real Redis."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from redis.asyncio import Redis

from api.auth.nonce import claim_nonce
from api.auth.ratelimit import check_rate_limit
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


def test_rate_limit_counts_per_key_per_window(aredis: Redis, arun: Run) -> None:
    now = [60_000 * 1000 + 12_345]  # 12.345 s into a window

    async def scenario() -> None:
        for _ in range(3):
            await check_rate_limit(aredis, "AK1", 3, clock_ms=lambda: now[0])
        with pytest.raises(ImmError) as info:
            await check_rate_limit(aredis, "AK1", 3, clock_ms=lambda: now[0])
        err = info.value
        assert (err.status, err.code) == (429, "Throttling")
        assert err.headers == {"x-acs-retry-after": str(60_000 - 12_345)}
        await check_rate_limit(aredis, "AK2", 3, clock_ms=lambda: now[0])  # other keys unaffected
        pttl = await aredis.pttl(keys.rate_limit("AK1", 1000))
        assert 0 < pttl <= 60_000 - 12_345 + 5_000
        now[0] = 60_000 * 1001  # next window
        await check_rate_limit(aredis, "AK1", 3, clock_ms=lambda: now[0])

    arun(scenario())


def test_rate_limit_zero_is_off(aredis: Redis, arun: Run) -> None:
    async def scenario() -> None:
        for _ in range(50):
            await check_rate_limit(aredis, "AK1", 0)
        assert await aredis.dbsize() == 0

    arun(scenario())


def test_retry_after_is_always_a_positive_integer(aredis: Redis, arun: Run) -> None:
    async def scenario() -> None:
        at_boundary = 60_000 * 5000
        await check_rate_limit(aredis, "AK", 1, clock_ms=lambda: at_boundary)
        with pytest.raises(ImmError) as info:
            await check_rate_limit(aredis, "AK", 1, clock_ms=lambda: at_boundary)
        assert info.value.headers["x-acs-retry-after"] == "60000"

    arun(scenario())

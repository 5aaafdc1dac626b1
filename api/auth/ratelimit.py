"""Per-access-key rate limit: a fixed one-minute window counted in Redis.

One atomic script does INCR and, on the window's first hit, PEXPIRE, so a crash between the two can never
leave a counter without expiry. Over the limit answers 429 ``Throttling`` with ``x-acs-retry-after`` (ms),
which is what makes the official SDK raise ``ThrottlingException``.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from redis.asyncio import Redis

from api.errors import ImmError
from worker import keys

WINDOW_MS = 60_000

_HIT = """
local n = redis.call('INCR', KEYS[1])
if n == 1 then redis.call('PEXPIRE', KEYS[1], ARGV[1]) end
return n
"""


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


async def check_rate_limit(
    redis: Redis, access_key_id: str, limit_per_minute: int, *, clock_ms: Callable[[], int] = _now_ms
) -> None:
    """Count this request against ``access_key_id``; ``limit_per_minute`` 0 turns the limit off."""
    if limit_per_minute <= 0:
        return
    now = clock_ms()
    window = now // WINDOW_MS
    retry_after = (window + 1) * WINDOW_MS - now  # 1..60000 ms until the window resets
    # The key outlives its window a little so clock skew between API nodes cannot reset it early.
    count = int(await redis.eval(_HIT, 1, keys.rate_limit(access_key_id, window), retry_after + 5_000))
    if count > limit_per_minute:
        raise ImmError(
            429,
            "Throttling",
            f"Request was denied due to request throttling: at most {limit_per_minute} requests per minute "
            "per access key.",
            headers={"x-acs-retry-after": str(retry_after)},
        )

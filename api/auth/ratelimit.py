"""Per-access-key rate limits: a token bucket (GCRA) kept in Redis, shared by every API process.

Why GCRA rather than the ``limits`` package or a sliding-window log: one Redis key per access key holding a
single number (the bucket's "theoretical arrival time"), O(1) work and memory whatever the limit, costs of
any size in one atomic step, an exact ``x-acs-retry-after``, and no burst of twice the limit at a window
edge (the fixed window's flaw). A key may spend its whole minute at once, then one unit every
``60 s / limit``. The script reads Redis's own clock, so API nodes with skewed clocks share one timeline.

Refused charges store nothing: a client that is told to wait does not dig itself deeper.
"""

from __future__ import annotations

from collections.abc import Callable

from redis.asyncio import Redis

from api.errors import ImmError
from worker import keys

PERIOD_MS = 60_000

# Shared by every GCRA script (here and in api.auth.failures): `now` in ms (ARGV[1] given by tests, else
# Redis TIME); next_tat(key, cost), the bucket's arrival time once `cost` ms more are spent; store_tat,
# which keeps it exactly as long as it matters.
GCRA_LUA = """
local now = tonumber(ARGV[1])
if not now then
  local t = redis.call('TIME')
  now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
local function next_tat(key, cost)
  local tat = tonumber(redis.call('GET', key) or '0')
  if tat < now then tat = now end
  return tat + cost
end
local function store_tat(key, tat)
  redis.call('SET', key, string.format('%.3f', tat), 'PX', math.max(1, math.ceil(tat - now)))
end
"""

# KEYS[1] bucket; ARGV: now|'', interval ms (period / limit), units, period ms.
# Returns 0 when charged, else the ms until the charge would fit (at least 1).
_CHARGE = (
    GCRA_LUA
    + """
local period = tonumber(ARGV[4])
local new_tat = next_tat(KEYS[1], tonumber(ARGV[2]) * tonumber(ARGV[3]))
if new_tat - now > period then
  return math.max(1, math.ceil(new_tat - now - period))
end
store_tat(KEYS[1], new_tat)
return 0
"""
)


def _clock_arg(clock_ms: Callable[[], int] | None) -> str:
    return "" if clock_ms is None else str(clock_ms())


def throttled(message: str, retry_after_ms: int) -> ImmError:
    """429 ``Throttling`` with ``x-acs-retry-after`` (ms), which makes the official SDK raise
    ``ThrottlingException``."""
    return ImmError(
        429,
        "Throttling",
        f"Request was denied due to request throttling: {message}",
        headers={"x-acs-retry-after": str(max(1, retry_after_ms))},
    )


async def charge_rate_limit(
    redis: Redis,
    access_key_id: str,
    units: int,
    limit_per_minute: int,
    *,
    clock_ms: Callable[[], int] | None = None,
) -> None:
    """Take ``units`` (one per request, one per job of a batch) from ``access_key_id``'s bucket.

    ``units <= 0`` or ``limit_per_minute <= 0`` do nothing. Over the limit raises 429 ``Throttling`` and
    consumes nothing. ``clock_ms`` pins the time in tests; by default Redis's clock is used.
    """
    if units <= 0 or limit_per_minute <= 0:
        return
    interval = PERIOD_MS / limit_per_minute
    wait = int(
        await redis.eval(
            _CHARGE,
            1,
            keys.rate_limit(access_key_id),
            _clock_arg(clock_ms),
            repr(interval),
            str(units),
            str(PERIOD_MS),
        )
    )
    if wait == 0:
        return
    if units > limit_per_minute:
        raise throttled(
            f"{units} units (one per job) exceed the limit of {limit_per_minute} per minute per access key; "
            "send smaller batches.",
            PERIOD_MS,
        )
    raise throttled(f"at most {limit_per_minute} requests (or batch jobs) per minute per access key.", wait)

"""Throttling of failed authentications, per client address and per claimed AccessKeyId.

Each failure (unknown key, bad signature or secret, bad or expired timestamp, reused nonce, garbled or
missing credentials) takes one unit from two token buckets (the GCRA of :mod:`api.auth.ratelimit`): the
client address's and the claimed key id's, each holding ``limit`` failures a minute. Checked before the
key lookup and the signature, so a throttled client costs one Redis call:

- an address over its budget gets 429 ``Throttling`` for every request, right secrets included, until a
  unit drains back (``60 s / limit``);
- a key id over its budget gets 429 only from addresses that failed on that key id within the last
  minute. Key ids are not secret, so a global lock would let anyone lock a tenant out; this way the owner
  keeps working from their own address, while a guesser spread over many addresses gets one try per
  address per minute.

The address is ``request.client.host``: behind a reverse proxy that is the proxy's address, unless uvicorn
runs with ``--proxy-headers --forwarded-allow-ips <proxy>`` so it takes the client from X-Forwarded-For.
"""

from __future__ import annotations

import hashlib
import re

from redis.asyncio import Redis

from api.auth.ratelimit import GCRA_LUA, PERIOD_MS, throttled
from api.errors import ImmError
from worker import keys

_PLAIN_KEY_ID = re.compile(r"[A-Za-z0-9_.-]{1,64}")

# KEYS: address bucket, key-id bucket, pair marker ('' key id: only the address is used).
# ARGV: now|'', interval ms, period ms, mode ('check' | 'record').
# check: ms to wait when throttled (>= 1), else 0. record: the same check first; when not throttled,
# add one failure to each bucket (a bucket never holds more than a full minute) and mark the pair.
_SCRIPT = (
    GCRA_LUA
    + """
local interval = tonumber(ARGV[2])
local period = tonumber(ARGV[3])
local wait = next_tat(KEYS[1], interval) - now - period
if KEYS[2] ~= '' and redis.call('EXISTS', KEYS[3]) == 1 then
  wait = math.max(wait, next_tat(KEYS[2], interval) - now - period)
end
if wait > 0 then return math.max(1, math.ceil(wait)) end
if ARGV[4] == 'record' then
  local n = 1
  if KEYS[2] ~= '' then n = 2 end
  for i = 1, n do
    store_tat(KEYS[i], math.min(next_tat(KEYS[i], interval), now + period))
  end
  if KEYS[2] ~= '' then redis.call('SET', KEYS[3], '1', 'PX', period) end
end
return 0
"""
)


def _key_part(key_id: str) -> str:
    """Key ids come from the request: anything unusual is hashed so it cannot bloat or shape Redis keys."""
    if _PLAIN_KEY_ID.fullmatch(key_id):
        return key_id
    return "h-" + hashlib.sha256(key_id.encode("utf-8", "surrogateescape")).hexdigest()[:32]


async def _run(
    redis: Redis, address: str, key_id: str | None, limit: int, mode: str, now_ms: int | None
) -> int:
    kid = _key_part(key_id) if key_id else ""
    addr = _key_part(address)
    return int(
        await redis.eval(
            _SCRIPT,
            3,
            keys.auth_failures("addr", addr),
            keys.auth_failures("key", kid) if kid else "",
            keys.auth_failed_pair(kid, addr) if kid else "",
            "" if now_ms is None else str(now_ms),
            repr(PERIOD_MS / limit),
            str(PERIOD_MS),
            mode,
        )
    )


def _refusal(limit: int, wait_ms: int) -> ImmError:
    return throttled(
        f"too many failed authentications (at most {limit} per minute per client address and per "
        "AccessKeyId); check the AccessKeyId and AccessKeySecret, then retry later.",
        wait_ms,
    )


async def check_auth_failures(
    redis: Redis, address: str, key_id: str | None, limit: int, *, now_ms: int | None = None
) -> None:
    """429 ``Throttling`` if ``address`` (or ``key_id`` from this address) is over its failure budget."""
    if limit <= 0:
        return
    wait = await _run(redis, address, key_id, limit, "check", now_ms)
    if wait:
        raise _refusal(limit, wait)


async def record_auth_failure(
    redis: Redis, address: str, key_id: str | None, limit: int, *, now_ms: int | None = None
) -> None:
    """Count one failed authentication; raises 429 instead if the client was already over its budget."""
    if limit <= 0:
        return
    wait = await _run(redis, address, key_id, limit, "record", now_ms)
    if wait:
        raise _refusal(limit, wait)

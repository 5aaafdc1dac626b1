"""Replay guard: a signature nonce is accepted once per access key while its request can still be valid."""

from __future__ import annotations

from redis.asyncio import Redis

from api.errors import ImmError
from worker import keys

NONCE_TTL_SECONDS = 900


async def claim_nonce(
    redis: Redis, access_key_id: str, nonce: str, ttl_seconds: int = NONCE_TTL_SECONDS
) -> None:
    """``SET imm:nonce:<ak>:<nonce> 1 NX EX ttl``; a nonce already seen → ``SignatureNonceUsed``.

    Call it only after the signature held, so unsigned traffic cannot burn other clients' nonces.
    """
    fresh = await redis.set(keys.nonce(access_key_id, nonce), "1", nx=True, ex=max(1, ttl_seconds))
    if not fresh:
        raise ImmError(400, "SignatureNonceUsed", "The request signature nonce has been used.")

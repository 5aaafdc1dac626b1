"""Listing a project's jobs, newest first, one cursor page at a time (``GET .../crop-jobs``).

A page reads one index (worker/job_index.py: the project's or the batch's jobs, all or one status) from a
cursor, the (creation ms, RequestId) of the last job answered, in the index's own order: score, then
RequestId, both descending. A job created meanwhile sorts before every cursor already handed out, so it
never shifts a page; every job present from the first page to the last is answered exactly once.

``NextToken`` is the cursor plus an HMAC over it and the request's project and filters: a forged, altered
or foreign token is a 400, and the index it positions in is always the requesting project's own.

An entry whose record has expired is skipped and pruned. A page examines at most ``SCAN_BUDGET`` entries,
so a long run of dead ones makes a short page (with a NextToken), never a long request.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
from dataclasses import dataclass
from typing import cast

import redis
import redis.asyncio as aioredis
from redis.backoff import ExponentialBackoff
from redis.retry import Retry

from api.batches import get_batch
from api.errors import invalid_argument
from api.schemas import MAX_NEXT_TOKEN_LENGTH
from worker import keys
from worker.contracts import Batch, Job, JobStatus
from worker.job_index import listing_key, unindex_ids
from worker.redis_clients import sync_client
from worker.settings import Settings

SCAN_BUDGET = 1000
"""Index entries one request examines at most (live or dead)."""
MAX_FETCH = 500
_MAX_SCORE = 2**53  # creation ms fit a double exactly far beyond this
_ID_RE = re.compile(r"[A-Za-z0-9_-]{1,64}")
_TOKEN_CONTEXT = b"cropq job listing token v1"


def sync_redis_client(settings: Settings) -> redis.Redis:
    """The API's synchronous client, for the worker's cancel and delete (run in the thread pool). It has
    the async client's outage policy: refused and reset connections retried for about a second, and a
    Redis that does not answer is a 503 within seconds, never a request held for the worker's ride-through.
    """
    return sync_client(
        settings.redis_url,
        retry=Retry(ExponentialBackoff(cap=0.5, base=0.05), 3),
        retry_on_error=[redis.ConnectionError],
        socket_timeout=3.0,
        socket_connect_timeout=2.0,
        health_check_interval=30,
    )


def _text(value: str | bytes) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else value


@dataclass(frozen=True)
class Cursor:
    """Where the previous page ended: its last entry's score and member."""

    score: int
    request_id: str


@dataclass(frozen=True)
class ListingScope:
    """What a token is valid for."""

    project: str
    status: JobStatus | None
    batch_id: str | None

    def __str__(self) -> str:
        return f"{self.project}\n{self.status.value if self.status else ''}\n{self.batch_id or ''}"


def token_key(secret: str) -> bytes:
    """The tokens' MAC key, derived so it is never the stored-secrets key itself."""
    return hmac.new(secret.encode("utf-8"), _TOKEN_CONTEXT, hashlib.sha256).digest()


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _mac(key: bytes, scope: ListingScope, payload: bytes) -> bytes:
    return hmac.new(key, f"{scope}\n".encode() + payload, hashlib.sha256).digest()[:16]


def encode_token(cursor: Cursor, scope: ListingScope, key: bytes) -> str:
    payload = f"{cursor.score}.{cursor.request_id}".encode("ascii")
    return f"{_b64(payload)}.{_b64(_mac(key, scope, payload))}"


def decode_token(token: str, scope: ListingScope, key: bytes) -> Cursor:
    """The cursor in a token made by ``encode_token`` for the same scope; else a 400."""
    bad = invalid_argument("NextToken is not valid (pass back the NextToken of the previous page as it is).")
    if len(token) > MAX_NEXT_TOKEN_LENGTH or token.count(".") != 1:
        raise bad
    body, mac = token.split(".")
    try:
        payload, given = _unb64(body), _unb64(mac)
    except (binascii.Error, ValueError):
        raise bad from None
    if not hmac.compare_digest(given, _mac(key, scope, payload)):
        raise bad
    score, _, rid = payload.decode("ascii", "replace").partition(".")
    if not score.isdigit() or int(score) > _MAX_SCORE or not _ID_RE.fullmatch(rid):
        raise bad  # only with the server's key: never met unless the key is known
    return Cursor(int(score), rid)


async def _entries_after(
    r: aioredis.Redis, key: str, cursor: Cursor | None, count: int
) -> list[tuple[str, int]]:
    """Up to ``count`` entries of ``key`` after ``cursor`` (score, then member, descending).

    Redis orders equal scores by member, so the entries sharing the cursor's score that come before it are
    at the front of the range from that score: fetch them too (``ZCOUNT``, usually 0 or 1) and drop them.
    The result is always a prefix of the true sequence, so a tie that grows meanwhile costs nothing."""
    high, num = ("+inf", count) if cursor is None else (cursor.score, count)
    if cursor is not None:
        num += int(await r.zcount(key, cursor.score, cursor.score))
    raw = cast(
        "list[tuple[str | bytes, float]]",
        await r.zrevrangebyscore(key, high, "-inf", start=0, num=num, withscores=True),
    )
    entries = [(_text(m), int(s)) for m, s in raw]
    if cursor is None:
        return entries
    return [(m, s) for m, s in entries if s < cursor.score or m < cursor.request_id][:count]


async def batch_of_project(r: aioredis.Redis, project: str, batch_id: str) -> Batch:
    """The batch, when it is the project's; 404 otherwise, as for a batch that does not exist."""
    return await get_batch(r, project, batch_id)


async def list_jobs(
    r: aioredis.Redis,
    scope: ListingScope,
    max_results: int,
    next_token: str | None,
    key: bytes,
) -> tuple[list[Job], str | None]:
    """One page of the scope's jobs, newest first, and the token of the next page (None on the last)."""
    cursor = decode_token(next_token, scope, key) if next_token else None
    index = listing_key(scope.project, scope.status, scope.batch_id)
    page: list[tuple[Cursor, Job]] = []
    examined = 0
    fetch = max_results + 1  # one more than asked: a live one past the page means there is a next page
    while len(page) <= max_results and examined < SCAN_BUDGET:
        entries = await _entries_after(r, index, cursor, min(fetch, SCAN_BUDGET - examined))
        if not entries:
            return [job for _, job in page], None
        examined += len(entries)
        records = await r.mget([keys.job(rid) for rid, _ in entries])
        dead: list[str] = []
        for (rid, score), raw in zip(entries, records, strict=True):
            cursor = Cursor(score, rid)
            if raw is None:
                dead.append(rid)
                continue
            job = Job.model_validate_json(raw)
            # Never another project's job, whatever an index holds; a status set is only ever a step
            # behind its record inside one MULTI, so a mismatch here is a record changed since the read.
            if job.ProjectName != scope.project or (scope.status and job.Status is not scope.status):
                continue
            page.append((cursor, job))
            if len(page) > max_results:
                break
        if dead:
            async with r.pipeline(transaction=False) as pipe:
                for rid in dead:
                    unindex_ids(pipe, scope.project, rid, scope.batch_id)
                await pipe.execute()
        fetch = min(fetch * 2, MAX_FETCH)
    if len(page) > max_results:
        last = page[max_results - 1][0]
        return [job for _, job in page[:max_results]], encode_token(last, scope, key)
    # The scan budget ran out among dead entries: a short page, resumed after the last entry examined.
    assert cursor is not None
    return [job for _, job in page], encode_token(cursor, scope, key)

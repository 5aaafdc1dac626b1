"""Prefix batches on the API side: validate -> record the batch -> send its feeder; read; cancel.

The listing, the feeding and the end of a batch happen in the workers (worker/batches.py); the API only
checks the request, records the batch (with its IdempotencyKey, as jobs do) and sends the first feeder run.
A batch costs one unit of the key's rate limit, the request's own: the jobs it makes are not charged one by
one (they are bounded by ``batch_in_flight`` instead).
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass

import redis
import redis.asyncio as aioredis
import structlog
from celery import Celery
from starlette.concurrency import run_in_threadpool

from api.durability import confirm_accepted
from api.errors import ImmError, invalid_argument, not_found, service_unavailable
from api.jobs import check_text, check_writable, validate_callback_url, validate_project_name, validate_render
from api.schemas import (
    MAX_IDEMPOTENCY_KEY_LENGTH,
    MAX_OBJECT_KEY_BYTES,
    MAX_SOURCE_URI_BYTES,
    MAX_SUFFIXES,
    MAX_USER_DATA_LENGTH,
    SubmitPrefixBatchRequest,
)
from worker import batches, keys
from worker.contracts import BATCH_FEED_TASK, Batch, BatchStatus, RenderSpec, batch_queue, utcnow_iso
from worker.engine.errors import CropError
from worker.engine.ratios import MAX_HINT_LENGTH, hints_from_param, ratios_from_param, shown
from worker.projects import Project
from worker.settings import Settings

log = structlog.get_logger("cropq.api")

_PREFIX_RE = re.compile(r"(oss|s3)://([a-z0-9][a-z0-9.-]{1,61}[a-z0-9])/(.*)", re.DOTALL)
_SUFFIX_RE = re.compile(r"\.[A-Za-z0-9_-]{1,15}")
_CONTROL_RE = re.compile(r"[\x00-\x1f\x7f]")
MANIFEST_PLACEHOLDER = "{BatchId}"
INVALID_STATE = "InvalidState"
"""The code of a cancel of a batch that already ended (HTTP 409), as for jobs."""


@dataclass(frozen=True)
class BatchParams:
    """A batch request after validation."""

    project: str
    source_prefix: str
    bucket: str
    prefix: str
    suffixes: list[str]
    aspect_ratios: list[str]
    inclusion_hints: list[str]
    render: RenderSpec | None
    manifest_uri: str | None
    """May hold {BatchId}, replaced when the batch is recorded."""
    callback_url: str | None
    user_data: str | None
    idempotency_key: str | None

    @property
    def manifest_bucket(self) -> str | None:
        return None if self.manifest_uri is None else self.manifest_uri.split("://", 1)[1].split("/", 1)[0]


def parse_prefix(uri: str) -> tuple[str, str]:
    check_text("SourcePrefix", uri, MAX_SOURCE_URI_BYTES)
    m = _PREFIX_RE.fullmatch(uri)
    if m is None or ".." in m.group(2) or _CONTROL_RE.search(uri):
        raise invalid_argument(
            f"SourcePrefix {shown(uri, 200)} must look like oss://bucket/prefix (or s3://bucket/prefix)."
        )
    if len(m.group(3).encode("utf-8")) > MAX_OBJECT_KEY_BYTES:
        raise invalid_argument(f"The prefix of SourcePrefix is at most {MAX_OBJECT_KEY_BYTES} bytes.")
    return m.group(2), m.group(3)


def parse_suffixes(suffixes: list[str] | None) -> list[str]:
    """Lower-cased, each once, in the order given."""
    found: list[str] = []
    for suffix in suffixes or []:
        if not isinstance(suffix, str) or not _SUFFIX_RE.fullmatch(suffix):
            raise invalid_argument(
                f'Suffixes: {shown(str(suffix), 40)} is not a file ending such as ".jpg" (a dot and 1-15 '
                "letters, digits, '-' or '_')."
            )
        if suffix.lower() not in found:
            found.append(suffix.lower())
    if len(found) > MAX_SUFFIXES:
        raise invalid_argument(f"Suffixes holds at most {MAX_SUFFIXES} endings.")
    return found


def validate_manifest_uri(uri: str | None) -> str | None:
    """oss://bucket/key whose only placeholder is {BatchId}."""
    if check_text("ManifestURI", uri, MAX_SOURCE_URI_BYTES) is None:
        return None
    assert uri is not None
    m = _PREFIX_RE.fullmatch(uri)
    if (
        m is None
        or not m.group(3)
        or m.group(3).endswith("/")
        or ".." in m.group(2)
        or _CONTROL_RE.search(uri)
    ):
        raise invalid_argument(f"ManifestURI {shown(uri, 200)} must look like oss://bucket/key.")
    if "{" in uri.replace(MANIFEST_PLACEHOLDER, "") or "}" in uri.replace(MANIFEST_PLACEHOLDER, ""):
        raise invalid_argument("ManifestURI may hold no placeholder but {BatchId}.")
    expanded = m.group(3).replace(MANIFEST_PLACEHOLDER, "X" * 64)  # the longest BatchId
    if len(expanded.encode("utf-8")) > MAX_OBJECT_KEY_BYTES:
        raise invalid_argument(f"The object key of ManifestURI is at most {MAX_OBJECT_KEY_BYTES} bytes.")
    return uri


def build_batch_params(
    project: str, body: SubmitPrefixBatchRequest, idempotency_header: str | None
) -> BatchParams:
    """Every syntax check, before anything is looked up: the job fields exactly as for a job."""
    validate_project_name(project)
    bucket, prefix = parse_prefix(body.SourcePrefix)
    suffixes = parse_suffixes(body.Suffixes)
    try:
        ratios = ratios_from_param(body.AspectRatios)
        hints = hints_from_param(body.InclusionHints)
    except CropError as e:
        raise invalid_argument(str(e)) from None
    render = validate_render(body.Render, ratios)
    for hint in hints:
        check_text("InclusionHints", hint, MAX_HINT_LENGTH)
    check_text("UserData", body.UserData, MAX_USER_DATA_LENGTH)
    idempotency_key = body.IdempotencyKey or idempotency_header
    check_text("IdempotencyKey", idempotency_key, MAX_IDEMPOTENCY_KEY_LENGTH)
    return BatchParams(
        project=project,
        source_prefix=body.SourcePrefix,
        bucket=bucket,
        prefix=prefix,
        suffixes=suffixes,
        aspect_ratios=ratios,
        inclusion_hints=hints,
        render=render,
        manifest_uri=validate_manifest_uri(body.ManifestURI),
        callback_url=validate_callback_url(body.CallbackURL),
        user_data=body.UserData,
        idempotency_key=idempotency_key,
    )


def check_batch_access(params: BatchParams, project: Project) -> None:
    """The prefix in a bucket the project reads; the manifest and rendered crops in buckets it writes."""
    if params.bucket not in project.Buckets:
        raise invalid_argument(f"Bucket {params.bucket!r} does not belong to project {params.project!r}.")
    manifest_bucket = params.manifest_bucket
    if manifest_bucket is not None and manifest_bucket not in project.WritableBuckets:
        raise invalid_argument(
            f"ManifestURI: bucket {manifest_bucket!r} is not writable by project {project.ProjectName!r} "
            "(an admin key lists it in the project's WritableBuckets)."
        )
    check_writable(params.render, project)


def _idempotency_key(params: BatchParams) -> str | None:
    # Batches have a key space of their own: the same key may name a job and a batch.
    return (
        None
        if not params.idempotency_key
        else keys.idempotency(params.project, f"batch:{params.idempotency_key}")
    )


async def get_batch(r: aioredis.Redis, project: str, batch_id: str) -> Batch:
    """The project's batch; 404 for a missing one and for another project's alike."""
    batch = batches.batch_of(await r.hgetall(keys.batch(batch_id)))
    if batch is None or batch.ProjectName != project:
        raise not_found("batch", f"The specified crop batch {batch_id!r} is not found.")
    return batch


async def submit_prefix_batch(
    r: aioredis.Redis,
    celery: Celery,
    settings: Settings,
    params: BatchParams,
    batch_id: str,
    project: Project,
) -> Batch:
    """Check the buckets, record the batch, send its first feeder run; the (possibly earlier) batch."""
    check_batch_access(params, project)
    idem = _idempotency_key(params)
    if idem is not None:
        first = await r.set(idem, batch_id, nx=True, ex=settings.result_ttl_seconds)
        if not first:
            earlier = await r.get(idem)
            if earlier:
                found = batches.batch_of(await r.hgetall(keys.batch(str(earlier))))
                if found is not None:
                    log.info("batch_idempotent_replay", earlier=str(earlier))
                    return found
            await r.set(idem, batch_id, ex=settings.result_ttl_seconds)  # the earlier one expired

    batch = Batch(
        BatchId=batch_id,
        ProjectName=params.project,
        Status=BatchStatus.LISTING,
        SourcePrefix=params.source_prefix,
        Suffixes=params.suffixes,
        AspectRatios=params.aspect_ratios,
        InclusionHints=params.inclusion_hints,
        Render=params.render,
        ManifestURI=None
        if params.manifest_uri is None
        else params.manifest_uri.replace(MANIFEST_PLACEHOLDER, batch_id),
        CallbackURL=params.callback_url,
        UserData=params.user_data,
        CreatedAt=utcnow_iso(),
    )
    key = keys.batch(batch_id)
    async with r.pipeline(transaction=True) as pipe:
        pipe.hset(key, mapping=batches.new_record(batch))  # type: ignore[arg-type]
        pipe.expire(key, settings.result_ttl_seconds)
        pipe.zadd(batches.ACTIVE, {batch_id: time.time()})
        pipe.set(batches.wake_mark(batch_id), 1, ex=batches.SCHEDULED_TTL_SECONDS)
        await pipe.execute()
    try:
        await run_in_threadpool(
            celery.send_task,
            BATCH_FEED_TASK,
            args=[batch_id, False],
            queue=batch_queue(settings.queue_name),
            retry=True,
            retry_policy={"max_retries": 2, "interval_start": 0.1, "interval_step": 0.2, "interval_max": 0.5},
        )
        await confirm_accepted(r, settings, 0)  # the batch record is as durable as a job's
    except Exception as e:
        log.warning("batch_not_accepted", error=type(e).__name__)
        await _withdraw(r, batch_id, idem)
        if isinstance(e, ImmError):
            raise
        raise service_unavailable(
            "The job queue is unavailable; the batch was not accepted. Try again."
        ) from None
    log.info("batch_accepted", project=params.project, batch_id=batch_id, prefix=params.source_prefix)
    return batch


async def _withdraw(r: aioredis.Redis, batch_id: str, idem: str | None) -> None:
    """Take back a batch that is not accepted after all: a feeder that meets its message finds no record."""
    async with r.pipeline(transaction=True) as pipe:
        pipe.delete(keys.batch(batch_id), batches.wake_mark(batch_id))
        pipe.zrem(batches.ACTIVE, batch_id)
        if idem is not None:
            pipe.delete(idem)
        await pipe.execute()


def cancel_batch(r: redis.Redis, settings: Settings, project: str, batch_id: str) -> Batch:
    """Stop a batch (synchronous: run it in the thread pool). Its Status is Cancelled at once, the feeder
    makes no new job, every job of it still Queued is cancelled and taken off the queue, jobs that finished
    stay as they are and running ones end by themselves; the batch then ends (manifest and callback) once
    none of its jobs runs. Cancelling a cancelled batch answers it again; a batch that ended is a 409."""
    batch = batches.read_batch(r, batch_id)
    if batch is None or batch.ProjectName != project:
        raise not_found("batch", f"The specified crop batch {batch_id!r} is not found.")
    outcome = batches.cancel_status(r, batch_id)
    if outcome == 0:
        raise not_found("batch", f"The specified crop batch {batch_id!r} is not found.")
    if outcome == 3:
        ended = batches.read_batch(r, batch_id)
        raise ImmError(
            409, INVALID_STATE, f"The crop batch already ended ({ended.Status.value if ended else 'gone'})."
        )
    feeder = batches.feeder_for(settings, r)
    batches.cancel_queued_jobs(r, batch_id, settings.queue_name)
    if batches.claim_finalise(r, batch_id):
        feeder.sender.finish(batch_id)
    else:
        batches.wake(r, feeder.sender, batch_id)  # the feeder sees it too (jobs recorded meanwhile)
    log.info("batch_cancelled", batch_id=batch_id, project=project)
    found = batches.read_batch(r, batch_id)
    assert found is not None
    return found

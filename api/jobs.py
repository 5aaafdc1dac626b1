"""The one job path both faces share: validate -> record in Redis -> send the Celery task -> wait.

The API never decodes images and never imports OpenCV: it sends the task by name.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import redis
import redis.asyncio as aioredis
import structlog
from celery import Celery
from starlette.concurrency import run_in_threadpool

from api.durability import confirm_accepted
from api.errors import ImmError, invalid_argument, not_found, service_unavailable
from api.projects import load_project
from api.schemas import (
    MAX_CALLBACK_URL_LENGTH,
    MAX_CREDENTIAL_CONFIG_LENGTH,
    MAX_IDEMPOTENCY_KEY_LENGTH,
    MAX_OBJECT_KEY_BYTES,
    MAX_SOURCE_URI_BYTES,
    MAX_USER_DATA_LENGTH,
)
from worker import keys
from worker.contracts import CROP_TASK, CallbackState, CropTaskMessage, Job, JobStatus, RenderSpec, utcnow_iso
from worker.engine.errors import CropError
from worker.engine.ratios import MAX_HINT_LENGTH, hints_from_param, loads_bounded, ratios_from_param, shown
from worker.engine.render_formats import supported_formats
from worker.http_source import SourceRefused, precheck_source_url
from worker.job_index import index_new_job, unindex_ids
from worker.projects import Project
from worker.render_targets import TargetError, parse_target
from worker.sealing import SecretBox
from worker.settings import Settings

log = structlog.get_logger("cropq.api")

_URI_RE = re.compile(r"(oss|s3)://([a-z0-9][a-z0-9.-]{1,61}[a-z0-9])/(.+)", re.DOTALL)
_URL_SCHEME_RE = re.compile(r"https?://", re.IGNORECASE)
_PROJECT_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,127}")
_CONTROL_RE = re.compile(r"[\x00-\x1f\x7f]")
_SURROGATE_RE = re.compile(r"[\ud800-\udfff]")
MAX_CREDENTIAL_CONFIG_DEPTH = 16


@dataclass(frozen=True)
class JobParams:
    """A submit request after validation; everything the job needs."""

    project: str
    source_uri: str
    bucket: str
    key: str
    aspect_ratios: list[str]
    inclusion_hints: list[str]
    callback_url: str | None = None
    user_data: str | None = None
    idempotency_key: str | None = None
    source_url: str | None = None
    """An http(s) source the worker fetches (then ``bucket`` and ``key`` are empty)."""
    render: RenderSpec | None = None
    uploaded: bool = False
    """The source is an image this request uploaded (to the upload bucket, which no project lists)."""


def validate_project_name(name: str) -> str:
    if not _PROJECT_RE.fullmatch(name or ""):
        raise invalid_argument(
            f"ProjectName {shown(name or '', 80)} is not valid (letters, digits, '-' and '_', 1-128)."
        )
    return name


def check_text(name: str, value: str | None, max_length: int) -> str | None:
    """Any text kept in a job record: bounded, and valid Unicode (non-UTF-8 bytes of the RPC face arrive as
    lone surrogates, which could be neither stored as JSON nor answered)."""
    if value is None:
        return None
    if not isinstance(value, str):
        raise invalid_argument(f"{name} must be a string.")
    if len(value) > max_length:
        raise invalid_argument(f"{name} is at most {max_length} characters, got {len(value)}.")
    if _SURROGATE_RE.search(value):
        raise invalid_argument(f"{name} is not valid UTF-8 text.")
    return value


def parse_source_uri(uri: str | None) -> tuple[str, str]:
    if not uri:
        raise invalid_argument("SourceURI is required.")
    check_text("SourceURI", uri, MAX_SOURCE_URI_BYTES)
    if len(uri.encode("utf-8")) > MAX_SOURCE_URI_BYTES:
        raise invalid_argument(f"SourceURI is at most {MAX_SOURCE_URI_BYTES} bytes (S3 keys: 1,024).")
    m = _URI_RE.fullmatch(uri)
    if m is None or ".." in m.group(2) or _CONTROL_RE.search(uri):
        raise invalid_argument(
            f"SourceURI {shown(uri, 200)} must look like oss://bucket/object (or s3://bucket/object)."
        )
    if len(m.group(3).encode("utf-8")) > MAX_OBJECT_KEY_BYTES:
        raise invalid_argument(
            f"The object key of SourceURI is at most {MAX_OBJECT_KEY_BYTES} bytes (S3's limit)."
        )
    return m.group(2), m.group(3)


def parse_source(uri: str | None, settings: Settings | None) -> tuple[str, str, str | None]:
    """(bucket, key, None) for a bucket source; ("", "", url) for an http(s) one, accepted only where
    ``settings`` is given (the native face) and the URL passes the source policy (no DNS here: the
    worker resolves, checks and pins each address before it connects)."""
    if settings is not None and uri and _URL_SCHEME_RE.match(uri):
        check_text("SourceURI", uri, MAX_SOURCE_URI_BYTES)
        try:
            precheck_source_url(uri, settings)
        except SourceRefused as e:
            raise invalid_argument(f"SourceURI: {e}") from None
        return "", "", uri
    bucket, key = parse_source_uri(uri)
    return bucket, key, None


def validate_render(render: RenderSpec | None, ratios: Sequence[str]) -> RenderSpec | None:
    """Everything about ``Render`` that needs no project: the template, the format this server can
    encode, and distinct keys for distinct ratios."""
    if render is None:
        return None
    try:
        target = parse_target(render.TargetURI)
    except TargetError as e:
        raise invalid_argument(str(e)) from None
    if render.Format not in supported_formats():
        raise invalid_argument(
            f"Render.Format {render.Format!r} is not supported by this server "
            f"(supported: {', '.join(sorted(supported_formats()))})."
        )
    if len(ratios) > 1 and "Ratio" not in target.placeholders:
        raise invalid_argument("Render.TargetURI needs {Ratio} when more than one ratio is requested.")
    return render


def check_writable(render: RenderSpec | None, project: Project) -> None:
    """A rendered crop is written only into a bucket an admin made writable for the project."""
    if render is not None:
        bucket = parse_target(render.TargetURI).bucket
        if bucket not in project.WritableBuckets:
            raise invalid_argument(
                f"Bucket {bucket!r} is not writable by project {project.ProjectName!r} "
                "(an admin key lists it in the project's WritableBuckets)."
            )


def validate_callback_url(url: str | None) -> str | None:
    if check_text("CallbackURL", url, MAX_CALLBACK_URL_LENGTH) is None:
        return None
    if not re.fullmatch(r"https?://[^\s/?#]+[^\s]*", url or ""):
        raise invalid_argument("CallbackURL must be an absolute http(s) URL.")
    return url


def _depth_exceeds(value: object, max_depth: int) -> bool:
    """Does a decoded JSON value nest deeper than ``max_depth``? Iterative, so any depth is safe."""
    stack: list[tuple[object, int]] = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict | list):
            if depth + 1 > max_depth:
                return True
            children = item.values() if isinstance(item, dict) else item
            stack.extend((child, depth + 1) for child in children)
    return False


def validate_credential_config(value: dict[str, Any] | str | None) -> None:
    """Ignored (IMM parity), but still bounded: a JSON object of at most 8 kB and 16 levels."""
    if value is None:
        return
    if isinstance(value, str):
        if _SURROGATE_RE.search(value):
            raise invalid_argument("CredentialConfig is not valid UTF-8 text.")
        try:
            decoded = loads_bounded(
                value, "CredentialConfig", MAX_CREDENTIAL_CONFIG_LENGTH, MAX_CREDENTIAL_CONFIG_DEPTH
            )
        except ValueError as e:
            raise invalid_argument(f"{e}.") from None
    else:
        decoded = value
    if not isinstance(decoded, dict):
        raise invalid_argument("CredentialConfig must be a JSON object.")
    if _depth_exceeds(decoded, MAX_CREDENTIAL_CONFIG_DEPTH):
        raise invalid_argument(
            f"CredentialConfig nests JSON deeper than {MAX_CREDENTIAL_CONFIG_DEPTH} levels."
        )


def build_params(
    project: str,
    *,
    source_uri: str | None,
    aspect_ratios: Sequence[str] | str | None,
    inclusion_hints: Sequence[str] | str | None,
    credential_config: dict[str, Any] | str | None = None,
    callback_url: str | None = None,
    user_data: str | None = None,
    idempotency_key: str | None = None,
    render: RenderSpec | None = None,
    settings: Settings | None = None,
    uploaded: bool = False,
) -> JobParams:
    """Syntax checks of every field, before anything is looked up or queued. ``settings`` (given by the
    native face only) lets http(s) sources in, under the source policy."""
    validate_project_name(project)
    bucket, key, url = parse_source(source_uri, settings)
    try:
        ratios = ratios_from_param(aspect_ratios)
        hints = hints_from_param(inclusion_hints)
    except CropError as e:
        raise invalid_argument(str(e)) from None
    render = validate_render(render, ratios)
    for hint in hints:
        check_text("InclusionHints", hint, MAX_HINT_LENGTH)
    validate_credential_config(credential_config)
    check_text("UserData", user_data, MAX_USER_DATA_LENGTH)
    check_text("IdempotencyKey", idempotency_key, MAX_IDEMPOTENCY_KEY_LENGTH)
    return JobParams(
        project=project,
        source_uri=source_uri or "",
        bucket=bucket,
        key=key,
        aspect_ratios=ratios,
        inclusion_hints=hints,
        callback_url=validate_callback_url(callback_url),
        user_data=user_data,
        idempotency_key=idempotency_key,
        source_url=url,
        render=render,
        uploaded=uploaded,
    )


async def project_of(r: aioredis.Redis, name: str, box: SecretBox) -> Project:
    """The project a job is submitted to (read once per request, however many jobs it carries); 404 when
    it does not exist."""
    project = await load_project(r, name, box)
    if project is None:
        raise not_found("project")
    return project


def check_readable(params: JobParams, project: Project) -> None:
    if params.source_url is None and not params.uploaded and params.bucket not in project.Buckets:
        raise invalid_argument(f"Bucket {params.bucket!r} does not belong to project {params.project!r}.")


async def submit_job(
    r: aioredis.Redis,
    celery: Celery,
    settings: Settings,
    params: JobParams,
    request_id: str,
    project: Project,
) -> Job:
    """Check the buckets, record the job, send the task. Returns the (possibly earlier) job."""
    check_readable(params, project)
    check_writable(params.render, project)

    if params.idempotency_key:
        idem = keys.idempotency(params.project, params.idempotency_key)
        first = await r.set(idem, request_id, nx=True, ex=settings.result_ttl_seconds)
        if not first:
            earlier = await r.get(idem)
            if earlier:
                job = await get_job(r, str(earlier))
                if job is not None:
                    log.info("job_idempotent_replay", earlier=str(earlier))
                    return job
            # The earlier job was deleted (or expired): this one takes the key over.
            await r.set(idem, request_id, ex=settings.result_ttl_seconds)

    job = Job(
        RequestId=request_id,
        ProjectName=params.project,
        Status=JobStatus.QUEUED,
        SourceURI=params.source_uri,
        AspectRatios=params.aspect_ratios,
        InclusionHints=params.inclusion_hints,
        Render=params.render,
        UserData=params.user_data,
        CallbackURL=params.callback_url,
        Callback=CallbackState() if params.callback_url else None,
        CreatedAt=utcnow_iso(),
    )
    async with r.pipeline(transaction=True) as pipe:
        pipe.set(keys.job(request_id), job.model_dump_json(exclude_none=True), ex=settings.result_ttl_seconds)
        pipe.zadd(keys.open_jobs(settings.queue_name), {request_id: time.time()})  # worker/orphans.py
        index_new_job(pipe, job, settings.result_ttl_seconds)  # the listing (worker/job_index.py)
        await pipe.execute()
    message = CropTaskMessage(
        RequestId=request_id,
        ProjectName=params.project,
        Bucket=params.bucket,
        Key=params.key,
        SourceURL=params.source_url,
        AspectRatios=params.aspect_ratios,
        InclusionHints=params.inclusion_hints,
        Render=params.render,
    )
    try:
        await run_in_threadpool(
            celery.send_task,
            CROP_TASK,
            args=[message.model_dump()],
            task_id=request_id,
            queue=settings.queue_name,
            retry=True,
            retry_policy={"max_retries": 2, "interval_start": 0.1, "interval_step": 0.2, "interval_max": 0.5},
        )
    except Exception as e:  # broker down: the job must not stay recorded as Queued forever
        log.warning("enqueue_failed", error=type(e).__name__)
        await withdraw(r, settings, params, request_id)
        raise service_unavailable("The job queue is unavailable; nothing was queued. Try again.") from None
    log.info("job_queued", project=params.project, ratios=params.aspect_ratios)
    return job


async def withdraw(r: aioredis.Redis, settings: Settings, params: JobParams, request_id: str) -> None:
    """Take back a job that is not accepted after all: a worker that meets its message finds no record."""
    async with r.pipeline(transaction=True) as pipe:
        pipe.delete(keys.job(request_id))
        pipe.zrem(keys.open_jobs(settings.queue_name), request_id)
        unindex_ids(pipe, params.project, request_id)
        await pipe.execute()
    if params.idempotency_key:
        await r.delete(keys.idempotency(params.project, params.idempotency_key))


async def accept_jobs(
    r: aioredis.Redis,
    celery: Celery,
    settings: Settings,
    jobs: Sequence[tuple[JobParams, str]],
    project: Project,
) -> list[Job]:
    """Submit (params, RequestId) pairs, then keep the 202's promise: all are durable, or none is accepted."""
    submitted = [(p, rid, await submit_job(r, celery, settings, p, rid, project)) for p, rid in jobs]
    try:
        await confirm_accepted(r, settings, len(submitted))
    except (ImmError, redis.RedisError):
        with contextlib.suppress(redis.RedisError):  # Redis gone: the worker may run it; the client retries
            for p, rid, job in submitted:
                if job.RequestId == rid:  # never an earlier job an IdempotencyKey replayed
                    await withdraw(r, settings, p, rid)
        raise
    return [job for _, _, job in submitted]


async def get_job(r: aioredis.Redis, request_id: str) -> Job | None:
    raw = await r.get(keys.job(request_id))
    return None if raw is None else Job.model_validate_json(raw)


async def wait_for_job(r: aioredis.Redis, request_id: str, timeout: float) -> Job | None:
    """Return the job once finished or when ``timeout`` passes (long-poll), woken by the done channel."""
    job = await get_job(r, request_id)
    if job is None or job.Status.finished or timeout <= 0:
        return job
    pubsub = r.pubsub(ignore_subscribe_messages=True)
    try:
        await pubsub.subscribe(keys.job_done_channel(request_id))
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        # Re-read after subscribing: the job may have finished in between.
        job = await get_job(r, request_id)
        while job is not None and not job.Status.finished:
            left = deadline - loop.time()
            if left <= 0:
                break
            await pubsub.get_message(timeout=min(left, 1.0))
            job = await get_job(r, request_id)
    finally:
        await pubsub.aclose()
    return job

"""Crop jobs: submit (JSON, or multipart with the image; 202 + RequestId), poll (with long-poll ``?wait=``),
list (newest first, paged), cancel, delete, and read back a job's source image and its rendered outputs."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Annotated, Any
from urllib.parse import quote

import redis
import structlog
from celery import Celery
from fastapi import APIRouter, Header, Query, Request, Response
from fastapi import Path as FastApiPath
from fastapi.exceptions import RequestValidationError
from pydantic import ValidationError
from redis.asyncio import Redis
from starlette.concurrency import run_in_threadpool

from api.auth.ratelimit import charge_rate_limit
from api.deps import (
    CeleryDep,
    PrincipalDep,
    RedisDep,
    SecretBoxDep,
    SettingsDep,
    StorageDep,
    require_project_access,
)
from api.errors import ImmError, invalid_argument, not_found, request_id_of, service_unavailable
from api.job_lifecycle import ListingScope, batch_of_project, list_jobs, token_key
from api.jobs import (
    JobParams,
    accept_jobs,
    build_params,
    check_readable,
    check_writable,
    get_job,
    parse_source_uri,
    project_of,
    wait_for_job,
)
from api.metrics import JOBS_SUBMITTED
from api.openapi import error_responses
from api.schemas import (
    BATCH_ID_PATTERN,
    DEFAULT_LIST_RESULTS,
    MAX_IDEMPOTENCY_KEY_LENGTH,
    MAX_LIST_RESULTS,
    MAX_NEXT_TOKEN_LENGTH,
    ErrorBody,
    ListJobsResponse,
    ProjectNamePath,
    RequestIdPath,
    SubmitBatchRequest,
    SubmitBatchResponse,
    SubmitJobRequest,
    SubmitJobResponse,
)
from api.uploads import (
    discard_upload,
    is_multipart,
    read_upload,
    safe_file_name,
    sniff_media_type,
    store_upload,
)
from worker import keys
from worker.contracts import WEBHOOK_TASK, Job, JobStatus
from worker.engine.ratios import MAX_RATIOS
from worker.engine.render_formats import MEDIA_TYPES
from worker.job_lifecycle import INVALID_STATE, JobAlreadyFinished, JobNotFinished, cancel_job, delete_job
from worker.jobstore import JobNotFound
from worker.sealing import SecretBox
from worker.settings import Settings
from worker.storage import ObjectNotFound, ObjectTooLarge, S3Storage, StorageError

log = structlog.get_logger("cropq.api")

router = APIRouter(prefix="/v1/projects/{ProjectName}/crop-jobs", tags=["crop-jobs"])


def _params_of(
    project: str,
    body: SubmitJobRequest,
    idempotency_header: str | None,
    settings: Settings,
    upload_uri: str | None = None,
) -> JobParams:
    return build_params(
        project,
        source_uri=upload_uri or body.SourceURI,
        aspect_ratios=body.AspectRatios,
        inclusion_hints=body.InclusionHints,
        credential_config=body.CredentialConfig,
        callback_url=body.CallbackURL,
        user_data=body.UserData,
        idempotency_key=body.IdempotencyKey or idempotency_header,
        render=body.Render,
        settings=settings,
        uploaded=upload_uri is not None,
    )


def _json_body(raw: bytes, request: Request) -> SubmitJobRequest:
    """The JSON submit body (parsed here because the same path also takes multipart)."""
    media_type = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if media_type and media_type != "application/json" and not media_type.endswith("+json"):
        raise invalid_argument("Content-Type must be application/json, or multipart/form-data for an upload.")
    try:
        return SubmitJobRequest.model_validate_json(raw or b"{}")
    except ValidationError as e:
        raise RequestValidationError(
            [{**err, "loc": ("body", *err.get("loc", ()))} for err in e.errors(include_url=False)]
        ) from None


_SUBMIT_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {"schema": {"$ref": "#/components/schemas/SubmitJobRequest"}},
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["Image"],
                    "properties": {
                        "Image": {"type": "string", "format": "binary", "description": "The image."},
                        "Job": {
                            "type": "string",
                            "description": "The submit body's JSON without SourceURI.",
                            "example": '{"AspectRatios": ["1:1", "16:9"]}',
                        },
                    },
                }
            },
        },
    }
}


@router.post(
    "",
    status_code=202,
    response_model=SubmitJobResponse,
    operation_id="submit_crop_job",
    responses=error_responses(),
    openapi_extra=_SUBMIT_BODY,
)
async def submit(
    ProjectName: ProjectNamePath,
    request: Request,
    response: Response,
    principal: PrincipalDep,
    r: RedisDep,
    celery: CeleryDep,
    settings: SettingsDep,
    box: SecretBoxDep,
    storage: StorageDep,
    idempotency_key: Annotated[
        str | None, Header(alias="Idempotency-Key", min_length=1, max_length=MAX_IDEMPOTENCY_KEY_LENGTH)
    ] = None,
) -> SubmitJobResponse:
    """Submit one crop job: a JSON body with SourceURI (a bucket of the project, or an http(s) URL), or
    multipart/form-data with the image itself (``Image``) and the other fields as JSON (``Job``)."""
    require_project_access(principal, ProjectName)
    rid = request_id_of(request)
    if not is_multipart(request):
        params = _params_of(ProjectName, _json_body(await request.body(), request), idempotency_key, settings)
        project = await project_of(r, ProjectName, box)
        (job,) = await accept_jobs(r, celery, settings, [(params, rid)], project)
    else:
        job = await _submit_upload(
            ProjectName, request, rid, r, celery, settings, box, storage, idempotency_key
        )
    JOBS_SUBMITTED.labels(face="native").inc()
    response.headers["Location"] = f"/v1/projects/{ProjectName}/crop-jobs/{job.RequestId}"
    return SubmitJobResponse(RequestId=job.RequestId, Status=job.Status)


async def _submit_upload(
    project_name: str,
    request: Request,
    rid: str,
    r: Redis,
    celery: Celery,
    settings: Settings,
    box: SecretBox,
    storage: S3Storage,
    idempotency_key: str | None,
) -> Job:
    """Every check first (fields, project, buckets), then the image is stored, then the job accepted; an
    image whose job is not accepted is removed again."""
    body, upload = await read_upload(request, settings)
    key = f"{project_name}/{rid}/{upload.file_name}"
    params = _params_of(
        project_name, body, idempotency_key, settings, upload_uri=f"oss://{settings.upload_bucket}/{key}"
    )
    project = await project_of(r, project_name, box)
    check_writable(params.render, project)
    try:
        await run_in_threadpool(store_upload, storage, settings, key, upload)
    except StorageError as e:
        log.warning("upload_not_stored", error=str(e))
        raise service_unavailable("The image store is unavailable; nothing was queued. Try again.") from None
    try:
        (job,) = await accept_jobs(r, celery, settings, [(params, rid)], project)
    except BaseException:
        await run_in_threadpool(discard_upload, storage, settings, key)
        raise
    if job.RequestId != rid:  # an IdempotencyKey replayed an earlier job: this upload is not needed
        await run_in_threadpool(discard_upload, storage, settings, key)
    return job


@router.post(
    ":batch",
    status_code=202,
    response_model=SubmitBatchResponse,
    operation_id="submit_crop_job_batch",
    responses=error_responses(),
)
async def submit_batch(
    ProjectName: ProjectNamePath,
    body: SubmitBatchRequest,
    request: Request,
    principal: PrincipalDep,
    r: RedisDep,
    celery: CeleryDep,
    settings: SettingsDep,
    box: SecretBoxDep,
) -> SubmitBatchResponse:
    """Submit up to 100 jobs at once. Every job is validated first: one bad job refuses the whole batch
    (naming its index) and nothing is queued. Each job gets its own RequestId, poll and callback, and costs
    one unit of the key's rate limit."""
    require_project_access(principal, ProjectName)
    # Authentication charged one unit; the other jobs are charged before anything is queued.
    await charge_rate_limit(r, principal.access_key_id, len(body.Jobs) - 1, settings.rate_limit_per_minute)
    params = []
    for i, item in enumerate(body.Jobs):
        with _job_index(i):
            params.append(_params_of(ProjectName, item, None, settings))
    project = await project_of(r, ProjectName, box)
    for i, p in enumerate(params):
        with _job_index(i):
            check_readable(p, project)
            check_writable(p.render, project)
    base = request_id_of(request)
    jobs = await accept_jobs(
        r, celery, settings, [(p, f"{base}-{i:03d}") for i, p in enumerate(params)], project
    )
    JOBS_SUBMITTED.labels(face="native").inc(len(jobs))
    return SubmitBatchResponse(Jobs=[SubmitJobResponse(RequestId=j.RequestId, Status=j.Status) for j in jobs])


def _job_not_found(request_id: str) -> ImmError:
    """The one answer for a job that does not exist and for another project's job (no probing)."""
    return not_found("job", f"The specified crop job {request_id!r} is not found.")


async def _own_job(r: Redis, project: str, request_id: str) -> Job:
    job = await get_job(r, request_id)
    if job is None or job.ProjectName != project:
        raise _job_not_found(request_id)
    return job


@contextmanager
def _job_index(i: int) -> Iterator[None]:
    """A batch's error names the job it is about."""
    try:
        yield
    except ImmError as e:
        raise ImmError(e.status, e.code, f"Jobs[{i}]: {e.message}") from None


@router.get(
    "/{RequestId}",
    response_model=Job,
    response_model_exclude_none=True,
    operation_id="get_crop_job",
    responses=error_responses(),
)
async def get(
    ProjectName: ProjectNamePath,
    RequestId: RequestIdPath,
    principal: PrincipalDep,
    r: RedisDep,
    settings: SettingsDep,
    wait: Annotated[
        float, Query(ge=0, le=300, description="Seconds to hold the request until the job ends.")
    ] = 0,
) -> Job:
    require_project_access(principal, ProjectName)
    if wait > settings.max_wait_seconds:
        raise ImmError(400, "InvalidArgument", f"wait is at most {settings.max_wait_seconds} seconds.")
    # The job's project is checked before any wait: another project's job answers 404 at once, so the
    # time of the answer tells nothing about which RequestIds exist.
    job = await _own_job(r, ProjectName, RequestId)
    if wait > 0 and not job.Status.finished:
        waited = await wait_for_job(r, RequestId, wait)
        if waited is None:  # expired or withdrawn meanwhile
            raise _job_not_found(RequestId)
        job = waited
    return job


@router.get(
    "",
    response_model=ListJobsResponse,
    response_model_exclude_none=True,
    operation_id="list_crop_jobs",
    responses=error_responses(),
)
async def list_(
    ProjectName: ProjectNamePath,
    principal: PrincipalDep,
    r: RedisDep,
    settings: SettingsDep,
    Status: Annotated[JobStatus | None, Query(description="Only the jobs in this state.")] = None,
    BatchId: Annotated[
        str | None,
        Query(pattern=BATCH_ID_PATTERN, max_length=64, description="Only the jobs of this prefix batch."),
    ] = None,
    MaxResults: Annotated[
        int, Query(ge=1, le=MAX_LIST_RESULTS, description="Jobs per page, 1 to 100.")
    ] = DEFAULT_LIST_RESULTS,
    NextToken: Annotated[
        str | None,
        Query(max_length=MAX_NEXT_TOKEN_LENGTH, description="The previous page's NextToken."),
    ] = None,
) -> ListJobsResponse:
    """The project's jobs, newest first, one page at a time (jobs whose record expired are not listed).
    Paging from the first page to the last answers every job once, however many are submitted meanwhile
    (a job whose state changes while a Status-filtered listing pages may be met in neither state)."""
    require_project_access(principal, ProjectName)
    if not await r.exists(keys.project(ProjectName)):
        raise not_found("project")
    if BatchId is not None:
        await batch_of_project(r, ProjectName, BatchId)
    jobs, token = await list_jobs(
        r,
        ListingScope(ProjectName, Status, BatchId),
        MaxResults,
        NextToken,
        token_key(settings.secret_key.get_secret_value()),
    )
    return ListJobsResponse(Jobs=jobs, NextToken=token)


_CONFLICT: dict[int | str, dict[str, Any]] = {
    409: {
        "model": ErrorBody,
        "description": "The job is in a state that does not allow this (`InvalidState`).",
    }
}


def _sync_redis(request: Request) -> redis.Redis:
    return request.app.state.sync_redis  # type: ignore[no-any-return]


@router.post(
    "/{RequestId}:cancel",
    response_model=Job,
    response_model_exclude_none=True,
    operation_id="cancel_crop_job",
    responses={**error_responses(), **_CONFLICT},
)
async def cancel(
    ProjectName: ProjectNamePath,
    RequestId: RequestIdPath,
    request: Request,
    principal: PrincipalDep,
    celery: CeleryDep,
    settings: SettingsDep,
) -> Job:
    """Cancel a Queued or Running job: a queued job never runs, a running job's result is discarded, and
    the job ends ``Cancelled`` (its callback, ``crop-job.cancelled``, is sent). A finished job is a 409
    ``InvalidState``. See docs/job-states.md."""
    require_project_access(principal, ProjectName)

    def send_callback(rid: str) -> None:
        celery.send_task(WEBHOOK_TASK, args=[rid])

    try:
        return await run_in_threadpool(
            cancel_job,
            _sync_redis(request),
            RequestId,
            settings.queue_name,
            project=ProjectName,
            ttl_seconds=settings.result_ttl_seconds,
            send_callback=send_callback,
        )
    except JobNotFound:
        raise _job_not_found(RequestId) from None
    except JobAlreadyFinished as e:
        raise ImmError(
            409,
            INVALID_STATE,
            f"The crop job {RequestId!r} already ended {e.job.Status.value}; only a Queued or Running job "
            "can be cancelled.",
        ) from None


@router.delete(
    "/{RequestId}",
    status_code=204,
    response_class=Response,
    operation_id="delete_crop_job",
    responses={**error_responses(), **_CONFLICT},
)
async def delete(
    ProjectName: ProjectNamePath,
    RequestId: RequestIdPath,
    request: Request,
    principal: PrincipalDep,
    settings: SettingsDep,
) -> Response:
    """Remove a finished job's record (and its place in the listing). An unfinished job is a 409
    ``InvalidState``: cancel it first."""
    require_project_access(principal, ProjectName)
    try:
        await run_in_threadpool(
            delete_job, _sync_redis(request), RequestId, settings.queue_name, project=ProjectName
        )
    except JobNotFound:
        raise _job_not_found(RequestId) from None
    except JobNotFinished as e:
        raise ImmError(
            409,
            INVALID_STATE,
            f"The crop job {RequestId!r} is still {e.job.Status.value}; only a finished job can be "
            "deleted (cancel it first).",
        ) from None
    return Response(status_code=204)


async def _read_object(storage: S3Storage, bucket: str, key: str, max_bytes: int) -> bytes:
    try:
        return await run_in_threadpool(storage.get, bucket, key, max_bytes)
    except ObjectNotFound:
        raise not_found("object", "The object is no longer in storage.") from None
    except ObjectTooLarge as e:
        raise ImmError(413, "RequestEntityTooLarge", str(e)) from None
    except StorageError:
        raise service_unavailable("The image store is unavailable; try again.") from None


_IMAGE_RESPONSE: dict[int | str, dict[str, Any]] = {
    200: {"content": {"image/*": {}}, "description": "The image's bytes."}
}


@router.get(
    "/{RequestId}/outputs/{Index}",
    operation_id="get_crop_job_output",
    responses={**_IMAGE_RESPONSE, **error_responses()},
    response_class=Response,
)
async def output(
    ProjectName: ProjectNamePath,
    RequestId: RequestIdPath,
    Index: Annotated[int, FastApiPath(ge=0, lt=MAX_RATIOS, description="Index into Croppings.")],
    principal: PrincipalDep,
    r: RedisDep,
    box: SecretBoxDep,
    storage: StorageDep,
    settings: SettingsDep,
) -> Response:
    """The rendered crop ``Croppings[Index].Output``, read back from its bucket (while the project may
    still write there)."""
    require_project_access(principal, ProjectName)
    job = await _own_job(r, ProjectName, RequestId)
    croppings = job.Croppings or []
    out = croppings[Index].Output if Index < len(croppings) else None
    if out is None:
        raise not_found("output", f"The crop job {RequestId!r} has no rendered output {Index}.")
    bucket, key = parse_source_uri(out.URI)
    project = await project_of(r, ProjectName, box)
    if bucket not in project.WritableBuckets:
        raise not_found("output", f"The crop job {RequestId!r} has no rendered output {Index}.")
    data = await _read_object(storage, bucket, key, settings.max_image_bytes)
    name = safe_file_name(key.rsplit("/", 1)[-1])
    return Response(
        data,
        media_type=MEDIA_TYPES.get(out.Format, "application/octet-stream"),
        headers={**_BYTES_HEADERS, "Content-Disposition": f'attachment; filename="{quote(name)}"'},
    )


@router.get(
    "/{RequestId}/source",
    operation_id="get_crop_job_source",
    responses={**_IMAGE_RESPONSE, **error_responses()},
    response_class=Response,
)
async def source(
    ProjectName: ProjectNamePath,
    RequestId: RequestIdPath,
    principal: PrincipalDep,
    r: RedisDep,
    box: SecretBoxDep,
    storage: StorageDep,
    settings: SettingsDep,
) -> Response:
    """The job's source image (a bucket source the project may still read, or its upload); 404 for an
    http(s) source, which was never stored."""
    require_project_access(principal, ProjectName)
    job = await _own_job(r, ProjectName, RequestId)
    if job.SourceURI.startswith(("http://", "https://")):
        raise not_found("source", "The job's source is a URL; cropq did not keep a copy.")
    bucket, key = parse_source_uri(job.SourceURI)
    project = await project_of(r, ProjectName, box)
    own_upload = bucket == settings.upload_bucket and key.startswith(f"{ProjectName}/{RequestId}/")
    if not own_upload and bucket not in project.Buckets:
        raise not_found("source", "The job's source is not readable by the project any more.")
    data = await _read_object(storage, bucket, key, settings.max_image_bytes)
    media_type = sniff_media_type(data[:32])
    headers = dict(_BYTES_HEADERS)
    if media_type is None:  # not an image after all: never let a browser render it
        media_type = "application/octet-stream"
        headers["Content-Disposition"] = "attachment"
    return Response(data, media_type=media_type, headers=headers)


# Stored bytes are the tenant's, not ours: no sniffing, no scripts, no caching by shared proxies.
_BYTES_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "Content-Security-Policy": "default-src 'none'; sandbox",
    "Cache-Control": "private, max-age=300",
}

"""Crop jobs: submit (202 + RequestId) and poll (with long-poll ``?wait=``)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Header, Query, Request, Response

from api.auth.ratelimit import charge_rate_limit
from api.deps import CeleryDep, PrincipalDep, RedisDep, SecretBoxDep, SettingsDep, require_project_access
from api.errors import ImmError, invalid_argument, not_found, request_id_of
from api.jobs import JobParams, accept_jobs, build_params, get_job, project_of, wait_for_job
from api.metrics import JOBS_SUBMITTED
from api.openapi import error_responses
from api.schemas import (
    MAX_IDEMPOTENCY_KEY_LENGTH,
    ProjectNamePath,
    RequestIdPath,
    SubmitBatchRequest,
    SubmitBatchResponse,
    SubmitJobRequest,
    SubmitJobResponse,
)
from worker.contracts import Job

router = APIRouter(prefix="/v1/projects/{ProjectName}/crop-jobs", tags=["crop-jobs"])


def _params_of(project: str, body: SubmitJobRequest, idempotency_header: str | None) -> JobParams:
    return build_params(
        project,
        source_uri=body.SourceURI,
        aspect_ratios=body.AspectRatios,
        inclusion_hints=body.InclusionHints,
        credential_config=body.CredentialConfig,
        callback_url=body.CallbackURL,
        user_data=body.UserData,
        idempotency_key=body.IdempotencyKey or idempotency_header,
    )


@router.post(
    "",
    status_code=202,
    response_model=SubmitJobResponse,
    operation_id="submit_crop_job",
    responses=error_responses(),
)
async def submit(
    ProjectName: ProjectNamePath,
    body: SubmitJobRequest,
    request: Request,
    response: Response,
    principal: PrincipalDep,
    r: RedisDep,
    celery: CeleryDep,
    settings: SettingsDep,
    box: SecretBoxDep,
    idempotency_key: Annotated[
        str | None, Header(alias="Idempotency-Key", min_length=1, max_length=MAX_IDEMPOTENCY_KEY_LENGTH)
    ] = None,
) -> SubmitJobResponse:
    require_project_access(principal, ProjectName)
    params = _params_of(ProjectName, body, idempotency_key)
    project = await project_of(r, ProjectName, box)
    (job,) = await accept_jobs(r, celery, settings, [(params, request_id_of(request))], project)
    JOBS_SUBMITTED.labels(face="native").inc()
    response.headers["Location"] = f"/v1/projects/{ProjectName}/crop-jobs/{job.RequestId}"
    return SubmitJobResponse(RequestId=job.RequestId, Status=job.Status)


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
        try:
            params.append(_params_of(ProjectName, item, None))
        except ImmError as e:
            raise ImmError(e.status, e.code, f"Jobs[{i}]: {e.message}") from None
    project = await project_of(r, ProjectName, box)
    for i, p in enumerate(params):
        if p.bucket not in project.Buckets:
            raise invalid_argument(
                f"Jobs[{i}]: Bucket {p.bucket!r} does not belong to project {ProjectName!r}."
            )
    base = request_id_of(request)
    jobs = await accept_jobs(
        r, celery, settings, [(p, f"{base}-{i:03d}") for i, p in enumerate(params)], project
    )
    JOBS_SUBMITTED.labels(face="native").inc(len(jobs))
    return SubmitBatchResponse(Jobs=[SubmitJobResponse(RequestId=j.RequestId, Status=j.Status) for j in jobs])


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
    job = await get_job(r, RequestId)
    if job is None or job.ProjectName != ProjectName:
        raise not_found("job", f"The specified crop job {RequestId!r} is not found.")
    if wait > 0 and not job.Status.finished:
        job = await wait_for_job(r, RequestId, wait)
        if job is None:  # expired or withdrawn meanwhile
            raise not_found("job", f"The specified crop job {RequestId!r} is not found.")
    return job

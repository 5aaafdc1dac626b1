"""Crop jobs: submit (202 + RequestId) and poll (with long-poll ``?wait=``)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Header, Query, Request, Response

from api.deps import CeleryDep, PrincipalDep, RedisDep, SettingsDep, require_project_access
from api.errors import ImmError, invalid_argument, not_found, request_id_of
from api.jobs import JobParams, build_params, submit_job, validate_project_name, wait_for_job
from api.metrics import JOBS_SUBMITTED
from api.projects import load_project
from api.schemas import SubmitBatchRequest, SubmitBatchResponse, SubmitJobRequest, SubmitJobResponse
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


@router.post("", status_code=202, response_model=SubmitJobResponse, operation_id="submit_crop_job")
async def submit(
    ProjectName: str,
    body: SubmitJobRequest,
    request: Request,
    response: Response,
    principal: PrincipalDep,
    r: RedisDep,
    celery: CeleryDep,
    settings: SettingsDep,
    idempotency_key: Annotated[str | None, Header(alias="Idempotency-Key", max_length=128)] = None,
) -> SubmitJobResponse:
    require_project_access(principal, ProjectName)
    params = _params_of(ProjectName, body, idempotency_key)
    job = await submit_job(r, celery, settings, params, request_id_of(request))
    JOBS_SUBMITTED.labels(face="native").inc()
    response.headers["Location"] = f"/v1/projects/{ProjectName}/crop-jobs/{job.RequestId}"
    return SubmitJobResponse(RequestId=job.RequestId, Status=job.Status)


@router.post(
    ":batch", status_code=202, response_model=SubmitBatchResponse, operation_id="submit_crop_job_batch"
)
async def submit_batch(
    ProjectName: str,
    body: SubmitBatchRequest,
    request: Request,
    principal: PrincipalDep,
    r: RedisDep,
    celery: CeleryDep,
    settings: SettingsDep,
) -> SubmitBatchResponse:
    """Submit up to 100 jobs at once. Every job is validated first: one bad job refuses the whole batch
    (naming its index) and nothing is queued. Each job gets its own RequestId, poll and callback."""
    require_project_access(principal, ProjectName)
    params = []
    for i, item in enumerate(body.Jobs):
        try:
            params.append(_params_of(ProjectName, item, None))
        except ImmError as e:
            raise ImmError(e.status, e.code, f"Jobs[{i}]: {e.message}") from None
    project = await load_project(r, ProjectName)
    if project is None:
        raise not_found("project")
    for i, p in enumerate(params):
        if p.bucket not in project.Buckets:
            raise invalid_argument(
                f"Jobs[{i}]: Bucket {p.bucket!r} does not belong to project {ProjectName!r}."
            )
    base = request_id_of(request)
    accepted = []
    for i, p in enumerate(params):
        job = await submit_job(r, celery, settings, p, f"{base}-{i:03d}")
        JOBS_SUBMITTED.labels(face="native").inc()
        accepted.append(SubmitJobResponse(RequestId=job.RequestId, Status=job.Status))
    return SubmitBatchResponse(Jobs=accepted)


@router.get("/{RequestId}", response_model=Job, response_model_exclude_none=True, operation_id="get_crop_job")
async def get(
    ProjectName: str,
    RequestId: str,
    principal: PrincipalDep,
    r: RedisDep,
    settings: SettingsDep,
    wait: Annotated[
        float, Query(ge=0, le=300, description="Seconds to hold the request until the job ends.")
    ] = 0,
) -> Job:
    require_project_access(principal, ProjectName)
    validate_project_name(ProjectName)
    if wait > settings.max_wait_seconds:
        raise ImmError(400, "InvalidArgument", f"wait is at most {settings.max_wait_seconds} seconds.")
    job = await wait_for_job(r, RequestId, wait)
    if job is None or job.ProjectName != ProjectName:
        raise not_found("job", f"The specified crop job {RequestId!r} is not found.")
    return job

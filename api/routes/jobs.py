"""Crop jobs: submit (202 + RequestId) and poll (with long-poll ``?wait=``)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Header, Query, Request, Response

from api.deps import CeleryDep, PrincipalDep, RedisDep, SettingsDep, require_project_access
from api.errors import ImmError, not_found, request_id_of
from api.jobs import build_params, submit_job, validate_project_name, wait_for_job
from api.metrics import JOBS_SUBMITTED
from api.schemas import SubmitJobRequest, SubmitJobResponse
from worker.contracts import Job

router = APIRouter(prefix="/v1/projects/{ProjectName}/crop-jobs", tags=["crop-jobs"])


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
    params = build_params(
        ProjectName,
        source_uri=body.SourceURI,
        aspect_ratios=body.AspectRatios,
        inclusion_hints=body.InclusionHints,
        credential_config=body.CredentialConfig,
        callback_url=body.CallbackURL,
        user_data=body.UserData,
        idempotency_key=body.IdempotencyKey or idempotency_key,
    )
    job = await submit_job(r, celery, settings, params, request_id_of(request))
    JOBS_SUBMITTED.labels(face="native").inc()
    response.headers["Location"] = f"/v1/projects/{ProjectName}/crop-jobs/{job.RequestId}"
    return SubmitJobResponse(RequestId=job.RequestId, Status=job.Status)


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

"""The IMM RPC face: ``POST /`` (or ``GET /``) with ``x-acs-action: DetectImageCropping``.

The official SDK (alibabacloud-imm20200930) sends every parameter in the query string (form rules) and
waits 10 s for the reply. This face submits the same job as the native API, waits up to
``rpc_wait_seconds`` and answers the IMM body; a job still running then stays pollable natively.
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from api.auth.dependency import form_pairs, query_pairs
from api.deps import CeleryDep, PrincipalDep, RedisDep, SecretBoxDep, SettingsDep, require_project_access
from api.errors import JSON_MEDIA_TYPE, ImmError, invalid_argument, request_id_of, service_unavailable
from api.jobs import build_params, project_of, submit_job, wait_for_job
from api.metrics import JOBS_SUBMITTED
from api.openapi import error_responses
from api.schemas import MAX_SOURCE_URI_BYTES, PROJECT_NAME_PATTERN, SOURCE_URI_PATTERN
from worker.contracts import Job, JobStatus

router = APIRouter(tags=["imm-rpc"])

ACTION = "DetectImageCropping"
VERSION = "2020-09-30"


async def _params(request: Request) -> dict[str, str]:
    """Query parameters merged with a form-encoded body (the body wins), decoded exactly as the signature
    check decoded them."""
    return dict(query_pairs(request) + form_pairs(request, await request.body()))


def _job_error(job: Job) -> ImmError:
    code = job.Code or "InternalError"
    message = job.Message or "The job failed."
    if code == "ResourceNotFound":
        return ImmError(404, "ResourceNotFound", message)
    if code.startswith("InvalidArgument"):
        return ImmError(400, "InvalidArgument", message)
    if code in ("ServiceUnavailable", "Timeout"):
        return service_unavailable(message)
    return ImmError(500, "InternalError", message)


def imm_body(job: Job) -> dict[str, object]:
    """The DetectImageCropping response body of a finished job."""
    body: dict[str, object] = {
        "RequestId": job.RequestId,
        "Croppings": [c.model_dump(exclude={"Output"}) for c in job.Croppings or []],
    }
    if job.InclusionHints:
        body["MatchedInclusionHints"] = job.MatchedInclusionHints
    return body


_PARAMS = {
    "Action": "DetectImageCropping (or the x-acs-action header).",
    "Version": "2020-09-30 (or the x-acs-version header).",
    "ProjectName": "The project (letters, digits, '-' and '_', 1 to 128).",
    "SourceURI": "oss://bucket/key or s3://bucket/key (at most 1,100 bytes).",
    "AspectRatios": 'A JSON array in a string, e.g. ["1:1","16:9"] (at most 1,024 characters).',
    "InclusionHints": 'A JSON array in a string, e.g. ["face"] (at most 1,024 characters).',
    "CredentialConfig": "A JSON object in a string (at most 8 kB); ignored.",
}
# The parameters are read from the query (and a form body), not declared to FastAPI: documented here.
_SCHEMAS: dict[str, dict[str, object]] = {
    "Action": {"type": "string", "enum": [ACTION]},
    "Version": {"type": "string", "enum": [VERSION]},
    "ProjectName": {"type": "string", "pattern": PROJECT_NAME_PATTERN},
    "SourceURI": {"type": "string", "pattern": SOURCE_URI_PATTERN, "maxLength": MAX_SOURCE_URI_BYTES},
}
_RPC_OPENAPI = {
    "parameters": [
        {
            "name": n,
            "in": "query",
            "required": False,
            "schema": _SCHEMAS.get(n, {"type": "string"}),
            "description": d,
        }
        for n, d in _PARAMS.items()
    ]
}


@router.get(
    "/",
    operation_id="imm_rpc_get",
    summary="IMM RPC endpoint (DetectImageCropping), for the official SDK",
    openapi_extra=_RPC_OPENAPI,
    responses=error_responses(),
)
@router.post(
    "/",
    operation_id="imm_rpc",
    summary="IMM RPC endpoint (DetectImageCropping), for the official SDK",
    openapi_extra=_RPC_OPENAPI,
    responses=error_responses(),
)
async def rpc(
    request: Request,
    principal: PrincipalDep,
    r: RedisDep,
    celery: CeleryDep,
    settings: SettingsDep,
    box: SecretBoxDep,
) -> JSONResponse:
    params = await _params(request)
    action = request.headers.get("x-acs-action") or params.get("Action")
    version = request.headers.get("x-acs-version") or params.get("Version")
    if action != ACTION:
        raise ImmError(404, "InvalidAction.NotFound", f"The specified action {action!r} is not found.")
    if version != VERSION:
        raise ImmError(
            400, "InvalidVersion", f"The specified version {version!r} is not valid; use {VERSION}."
        )
    project = params.get("ProjectName")
    if not project:
        raise invalid_argument("ProjectName is required.")
    job_params = build_params(
        project,
        source_uri=params.get("SourceURI"),
        aspect_ratios=params.get("AspectRatios"),
        inclusion_hints=params.get("InclusionHints"),
        credential_config=params.get("CredentialConfig"),
    )
    require_project_access(principal, project)
    # No durability wait: this face answers with the finished job, not with a promise.
    job = await submit_job(
        r, celery, settings, job_params, request_id_of(request), await project_of(r, project, box)
    )
    JOBS_SUBMITTED.labels(face="rpc").inc()
    done = await wait_for_job(r, job.RequestId, settings.rpc_wait_seconds)
    if done is None or not done.Status.finished:
        raise service_unavailable(
            f"The job {job.RequestId} is still running; poll it with "
            f"GET /v1/projects/{project}/crop-jobs/{job.RequestId}."
        )
    if done.Status is JobStatus.FAILED:
        raise _job_error(done)
    return JSONResponse(imm_body(done), media_type=JSON_MEDIA_TYPE)

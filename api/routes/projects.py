"""Projects: which buckets a project's jobs may read, and its webhook secret."""

from __future__ import annotations

import structlog
from fastapi import APIRouter, Response

from api.deps import PrincipalDep, RedisDep, SecretBoxDep, require_project_access
from api.errors import ImmError, not_found
from api.jobs import validate_project_name
from api.projects import load_project, put_project
from api.schemas import ProjectPutRequest, ProjectResponse
from worker.projects import Project, webhook_secret
from worker.sealing import SealingError, SecretBox

log = structlog.get_logger("cropq.projects")

router = APIRouter(prefix="/v1/projects", tags=["projects"])


@router.put(
    "/{ProjectName}",
    response_model=ProjectResponse,
    operation_id="put_project",
    responses={201: {"model": ProjectResponse}},
)
async def put(
    ProjectName: str,
    body: ProjectPutRequest,
    principal: PrincipalDep,
    r: RedisDep,
    box: SecretBoxDep,
    response: Response,
) -> ProjectResponse:
    validate_project_name(ProjectName)
    existing = await load_project(r, ProjectName)
    # Creating needs an admin key ("*"); updating needs a key of the project.
    if existing is None and not principal.is_admin:
        raise ImmError(403, "Forbidden", 'Only an access key with Projects ["*"] may create projects.')
    require_project_access(principal, ProjectName)
    try:
        project, created = await put_project(r, ProjectName, body.Buckets, box)
    except SealingError as exc:
        raise _unsealable(exc) from None
    response.status_code = 201 if created else 200
    return _response(project, box)


@router.get("/{ProjectName}", response_model=ProjectResponse, operation_id="get_project")
async def get(ProjectName: str, principal: PrincipalDep, r: RedisDep, box: SecretBoxDep) -> ProjectResponse:
    require_project_access(principal, ProjectName)
    project = await load_project(r, ProjectName)
    if project is None:
        raise not_found("project")
    return _response(project, box)


def _response(project: Project, box: SecretBox) -> ProjectResponse:
    """The record as the owner sees it: the webhook secret opened, so receivers can verify signatures."""
    try:
        secret = webhook_secret(project, box)
    except SealingError as exc:
        raise _unsealable(exc) from None
    return ProjectResponse.model_validate({**project.model_dump(), "WebhookSecret": secret})


def _unsealable(exc: SealingError) -> ImmError:
    log.error("webhook_secret_unsealable", error=str(exc))
    return ImmError(500, "InternalError", "The server cannot seal or open webhook secrets.")

"""Projects: which buckets a project's jobs may read, and its webhook secret."""

from __future__ import annotations

from fastapi import APIRouter, Response

from api.deps import PrincipalDep, RedisDep, require_project_access
from api.errors import ImmError, not_found
from api.jobs import validate_project_name
from api.projects import load_project, put_project
from api.schemas import ProjectPutRequest, ProjectResponse

router = APIRouter(prefix="/v1/projects", tags=["projects"])


@router.put(
    "/{ProjectName}",
    response_model=ProjectResponse,
    operation_id="put_project",
    responses={201: {"model": ProjectResponse}},
)
async def put(
    ProjectName: str, body: ProjectPutRequest, principal: PrincipalDep, r: RedisDep, response: Response
) -> ProjectResponse:
    validate_project_name(ProjectName)
    existing = await load_project(r, ProjectName)
    # Creating needs an admin key ("*"); updating needs a key of the project.
    if existing is None and not principal.is_admin:
        raise ImmError(403, "Forbidden", 'Only an access key with Projects ["*"] may create projects.')
    require_project_access(principal, ProjectName)
    project, created = await put_project(r, ProjectName, body.Buckets)
    response.status_code = 201 if created else 200
    return ProjectResponse.model_validate(project.model_dump())


@router.get("/{ProjectName}", response_model=ProjectResponse, operation_id="get_project")
async def get(ProjectName: str, principal: PrincipalDep, r: RedisDep) -> ProjectResponse:
    require_project_access(principal, ProjectName)
    project = await load_project(r, ProjectName)
    if project is None:
        raise not_found("project")
    return ProjectResponse.model_validate(project.model_dump())

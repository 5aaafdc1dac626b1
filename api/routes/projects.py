"""Projects: which buckets a project's jobs may read and write, and its webhook secrets.

Only an admin key (``Projects ["*"]``) creates projects or changes what they may read; a project's own key
may read its project and rotate its webhook secret.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import structlog
from fastapi import APIRouter, Response

from api.deps import PrincipalDep, RedisDep, SecretBoxDep, SettingsDep, require_project_access
from api.errors import ImmError, not_found
from api.openapi import error_responses
from api.projects import load_project, put_project, rotate_webhook_secret
from api.schemas import ProjectNamePath, ProjectPutRequest, ProjectResponse
from worker.projects import Project, previous_secret_active, webhook_secret
from worker.sealing import SealingError, SecretBox

log = structlog.get_logger("cropq.projects")

router = APIRouter(prefix="/v1/projects", tags=["projects"])


@router.put(
    "/{ProjectName}",
    response_model=ProjectResponse,
    response_model_exclude_none=True,
    operation_id="put_project",
    responses={201: {"model": ProjectResponse}, **error_responses()},
)
async def put(
    ProjectName: ProjectNamePath,
    body: ProjectPutRequest,
    principal: PrincipalDep,
    r: RedisDep,
    box: SecretBoxDep,
    settings: SettingsDep,
    response: Response,
) -> ProjectResponse:
    """Create a project or replace its Buckets and WritableBuckets (an admin key only: a project key cannot
    widen its access). WritableBuckets left out keeps the stored list."""
    if not principal.is_admin:
        raise ImmError(
            403, "Forbidden", 'Only an access key with Projects ["*"] may create projects or change them.'
        )
    with _sealing():
        project, created = await put_project(
            r, ProjectName, body.Buckets, box, body.WritableBuckets, settings.upload_bucket
        )
    response.status_code = 201 if created else 200
    return _response(project, box)


@router.get(
    "/{ProjectName}",
    response_model=ProjectResponse,
    response_model_exclude_none=True,
    operation_id="get_project",
    responses=error_responses(),
)
async def get(
    ProjectName: ProjectNamePath, principal: PrincipalDep, r: RedisDep, box: SecretBoxDep
) -> ProjectResponse:
    require_project_access(principal, ProjectName)
    with _sealing():
        project = await load_project(r, ProjectName, box)
    if project is None:
        raise not_found("project")
    return _response(project, box)


@router.post(
    "/{ProjectName}/webhook-secret:rotate",
    response_model=ProjectResponse,
    response_model_exclude_none=True,
    operation_id="rotate_webhook_secret",
    responses=error_responses(),
)
async def rotate(
    ProjectName: ProjectNamePath, principal: PrincipalDep, r: RedisDep, box: SecretBoxDep
) -> ProjectResponse:
    """Make a new webhook secret. Callbacks are signed with the new and the replaced secret until
    ``PreviousWebhookSecretExpiresAt`` (24 h), so receivers can switch without losing a callback; rotating
    again within that time ends the older secret's grace at once."""
    require_project_access(principal, ProjectName)
    with _sealing():
        project = await rotate_webhook_secret(r, ProjectName, box)
    if project is None:
        raise not_found("project")
    log.info("webhook_secret_rotated", project=ProjectName)
    return _response(project, box)


def _response(project: Project, box: SecretBox) -> ProjectResponse:
    """The record as the owner sees it: the webhook secret opened, so receivers can verify signatures."""
    with _sealing():
        secret = webhook_secret(project, box)
    grace = project.PreviousWebhookSecretExpiresAt if previous_secret_active(project) else None
    return ProjectResponse(
        ProjectName=project.ProjectName,
        Buckets=project.Buckets,
        WritableBuckets=project.WritableBuckets,
        CreatedAt=project.CreatedAt,
        WebhookSecret=secret,
        PreviousWebhookSecretExpiresAt=grace,
    )


@contextmanager
def _sealing() -> Iterator[None]:
    """A secret that cannot be sealed or opened is the server's misconfiguration (CROPQ_SECRET_KEY): 500."""
    try:
        yield
    except SealingError as exc:
        log.error("webhook_secret_unsealable", error=str(exc))
        raise ImmError(500, "InternalError", "The server cannot seal or open webhook secrets.") from None

"""Dependency aliases that keep routes short and tests' overrides trivial."""

from __future__ import annotations

from typing import Annotated

import redis.asyncio as aioredis
from celery import Celery
from fastapi import Depends, Request

from api.auth.dependency import authenticate
from api.auth.principal import Principal
from api.errors import ImmError
from worker.sealing import SecretBox
from worker.settings import Settings
from worker.storage import S3Storage


def _redis(request: Request) -> aioredis.Redis:
    return request.app.state.redis  # type: ignore[no-any-return]


def _celery(request: Request) -> Celery:
    return request.app.state.celery  # type: ignore[no-any-return]


def _settings(request: Request) -> Settings:
    return request.app.state.settings  # type: ignore[no-any-return]


def _webhook_box(request: Request) -> SecretBox:
    return request.app.state.webhook_box  # type: ignore[no-any-return]


def _storage(request: Request) -> S3Storage:
    return request.app.state.storage  # type: ignore[no-any-return]


StorageDep = Annotated[S3Storage, Depends(_storage)]
RedisDep = Annotated[aioredis.Redis, Depends(_redis)]
SecretBoxDep = Annotated[SecretBox, Depends(_webhook_box)]
CeleryDep = Annotated[Celery, Depends(_celery)]
SettingsDep = Annotated[Settings, Depends(_settings)]
PrincipalDep = Annotated[Principal, Depends(authenticate)]


def require_project_access(principal: Principal, project: str) -> None:
    """A key acts only on its projects; others' projects look like they do not exist (no probing)."""
    if not principal.can_act_on(project):
        raise ImmError(403, "Forbidden", f"The access key may not act on project {project!r}.")

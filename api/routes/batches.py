"""Prefix batches: submit (202 + BatchId), read the progress, cancel. The work is in worker/batches.py."""

from __future__ import annotations

from typing import Annotated

import redis
from fastapi import APIRouter, Header, Request, Response
from starlette.concurrency import run_in_threadpool

from api.batches import build_batch_params, cancel_batch, get_batch, submit_prefix_batch
from api.deps import CeleryDep, PrincipalDep, RedisDep, SecretBoxDep, SettingsDep, require_project_access
from api.errors import request_id_of
from api.jobs import project_of
from api.openapi import error_responses
from api.schemas import (
    MAX_IDEMPOTENCY_KEY_LENGTH,
    BatchIdPath,
    ProjectNamePath,
    SubmitPrefixBatchRequest,
    SubmitPrefixBatchResponse,
)
from worker.contracts import Batch

router = APIRouter(prefix="/v1/projects/{ProjectName}/crop-batches", tags=["crop-batches"])


@router.post(
    "",
    status_code=202,
    response_model=SubmitPrefixBatchResponse,
    operation_id="submit_crop_batch",
    responses=error_responses(),
)
async def submit(
    ProjectName: ProjectNamePath,
    body: SubmitPrefixBatchRequest,
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
) -> SubmitPrefixBatchResponse:
    """Crop every object under SourcePrefix (matching Suffixes) with the same job fields. The objects are
    listed and fed to jobs by the workers, a few at a time (``CROPQ_BATCH_IN_FLIGHT``), so interactive
    jobs submitted meanwhile still run promptly. The batch costs one unit of the key's rate limit."""
    require_project_access(principal, ProjectName)
    params = build_batch_params(ProjectName, body, idempotency_key)
    project = await project_of(r, ProjectName, box)
    batch = await submit_prefix_batch(r, celery, settings, params, request_id_of(request), project)
    response.headers["Location"] = f"/v1/projects/{ProjectName}/crop-batches/{batch.BatchId}"
    return SubmitPrefixBatchResponse(BatchId=batch.BatchId, Status=batch.Status)


@router.get(
    "/{BatchId}",
    response_model=Batch,
    response_model_exclude_none=True,
    operation_id="get_crop_batch",
    responses=error_responses(),
)
async def get(
    ProjectName: ProjectNamePath, BatchId: BatchIdPath, principal: PrincipalDep, r: RedisDep
) -> Batch:
    """The batch and its progress: Total (final once Status is past Listing), Succeeded, Failed, Cancelled
    and Pending (Total minus the jobs that ended). Counts never go backwards."""
    require_project_access(principal, ProjectName)
    return await get_batch(r, ProjectName, BatchId)


@router.post(
    "/{BatchId}:cancel",
    response_model=Batch,
    response_model_exclude_none=True,
    operation_id="cancel_crop_batch",
    responses=error_responses(),
)
async def cancel(
    ProjectName: ProjectNamePath,
    BatchId: BatchIdPath,
    request: Request,
    principal: PrincipalDep,
    settings: SettingsDep,
) -> Batch:
    """Stop the batch: Status Cancelled at once, no new job, its Queued jobs cancelled (never run), finished
    jobs kept; the manifest and callback follow once none of its jobs runs. 409 InvalidState when the batch
    had already ended."""
    require_project_access(principal, ProjectName)
    sync_redis: redis.Redis = request.app.state.sync_redis
    return await run_in_threadpool(cancel_batch, sync_redis, settings, ProjectName, BatchId)

"""Project records: which buckets a project may read, and its webhook secrets.

Every change is a read-modify-write under WATCH, so two API processes changing one project at once (a
bucket update and a secret rotation, say) cannot undo each other's change.
"""

from __future__ import annotations

import re
from collections.abc import Callable

import redis.asyncio as aioredis
import structlog
from redis.exceptions import WatchError

from api.errors import invalid_argument, service_unavailable
from worker import keys
from worker.contracts import utcnow_iso
from worker.projects import CLEAR_PREFIX, Project, grace_end, is_clear
from worker.sealing import SealingError, SecretBox
from worker.webhooks.signing import new_secret

log = structlog.get_logger("cropq.projects")

_BUCKET_RE = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")
_UPDATE_TRIES = 10


async def load_project(r: aioredis.Redis, name: str, box: SecretBox | None = None) -> Project | None:
    """The stored project. Given ``box``, a record that still holds a webhook secret in the clear (written
    before secrets were sealed) is sealed and written back on the way."""
    raw = await r.get(keys.project(name))
    if raw is None:
        return None
    project = Project.model_validate_json(raw)
    if box is not None and is_clear(project):
        try:
            migrated = await update_project(r, name, lambda p: _sealed(p, box))
        except SealingError as exc:  # no usable CROPQ_SECRET_KEY: serve the record as it is, say so
            log.warning("webhook_secret_left_clear", project=name, error=str(exc))
            return project
        log.info("webhook_secret_sealed_on_read", project=name)
        return migrated
    return project


def _seal_if_clear(owner: str, stored: str | None, box: SecretBox) -> str | None:
    if stored is None or not stored.startswith(CLEAR_PREFIX):
        return stored
    return box.seal(owner, stored)


def _sealed(project: Project, box: SecretBox) -> Project:
    name = project.ProjectName
    return project.model_copy(
        update={
            "WebhookSecret": _seal_if_clear(name, project.WebhookSecret, box),
            "PreviousWebhookSecret": _seal_if_clear(name, project.PreviousWebhookSecret, box),
        }
    )


async def update_project(
    r: aioredis.Redis, name: str, change: Callable[[Project], Project]
) -> Project | None:
    """Apply ``change`` to the stored record atomically (retried when another writer got there first).
    Returns the stored result, or None when the project does not exist."""
    key = keys.project(name)
    for _ in range(_UPDATE_TRIES):
        async with r.pipeline(transaction=True) as pipe:
            try:
                await pipe.watch(key)
                raw = await pipe.get(key)
                if raw is None:
                    return None
                project = change(Project.model_validate_json(raw))
                pipe.multi()  # type: ignore[no-untyped-call]
                pipe.set(key, project.model_dump_json())
                await pipe.execute()
                return project
            except WatchError:
                continue
    raise service_unavailable(f"The project {name!r} is being changed by other requests; try again.")


def validate_buckets(buckets: list[str], reserved: str | None = None, field: str = "Buckets") -> list[str]:
    """Valid S3 bucket names, sorted and deduplicated. ``reserved`` (the upload bucket, which holds every
    project's uploads) may not be listed: a project that could read or write it could reach other
    projects' images."""
    for b in buckets:
        if not _BUCKET_RE.fullmatch(b) or ".." in b:
            raise invalid_argument(f"Bucket name {b[:80]!r} is not valid.")
        if b == reserved:
            raise invalid_argument(f"{field} may not list {b!r}: it holds every project's uploaded images.")
    return sorted(set(buckets))


async def put_project(
    r: aioredis.Redis,
    name: str,
    buckets: list[str],
    box: SecretBox,
    writable: list[str] | None = None,
    reserved: str | None = None,
) -> tuple[Project, bool]:
    """Create or update; returns (stored project, created). ``writable`` None keeps the stored
    WritableBuckets. The webhook secret is made once, sealed with ``box``, and kept across updates."""
    wanted = validate_buckets(buckets, reserved)
    changes: dict[str, list[str]] = {"Buckets": wanted}
    if writable is not None:
        changes["WritableBuckets"] = validate_buckets(writable, reserved, "WritableBuckets")
    updated = await update_project(r, name, lambda p: _sealed(p, box).model_copy(update=changes))
    if updated is not None:
        return updated, False
    project = Project(
        ProjectName=name,
        CreatedAt=utcnow_iso(),
        WebhookSecret=box.seal(name, new_secret()),
        **changes,
    )
    if not await r.set(keys.project(name), project.model_dump_json(), nx=True):
        # lost a race with another create: update that one
        return await put_project(r, name, buckets, box, writable, reserved)
    await r.sadd(keys.PROJECTS_INDEX, name)
    return project, True


async def rotate_webhook_secret(r: aioredis.Redis, name: str, box: SecretBox) -> Project | None:
    """A new current secret; the one it replaces keeps signing until its grace period ends. A rotation
    within the grace period drops the older previous secret (two secrets sign at most)."""

    def rotate(project: Project) -> Project:
        current = _sealed(project, box).WebhookSecret
        return project.model_copy(
            update={
                "WebhookSecret": box.seal(name, new_secret()),
                "PreviousWebhookSecret": current,
                "PreviousWebhookSecretExpiresAt": grace_end(),
            }
        )

    return await update_project(r, name, rotate)

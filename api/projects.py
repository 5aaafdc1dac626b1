"""Project records: which buckets a project may read, and its webhook secret."""

from __future__ import annotations

import re

import redis.asyncio as aioredis

from api.errors import invalid_argument
from worker import keys
from worker.contracts import utcnow_iso
from worker.projects import Project
from worker.sealing import SecretBox
from worker.webhooks.signing import new_secret

_BUCKET_RE = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")


async def load_project(r: aioredis.Redis, name: str) -> Project | None:
    raw = await r.get(keys.project(name))
    return None if raw is None else Project.model_validate_json(raw)


async def put_project(
    r: aioredis.Redis, name: str, buckets: list[str], box: SecretBox
) -> tuple[Project, bool]:
    """Create or update; returns (stored project, created). The webhook secret is made once, sealed with
    ``box``, and kept across updates."""
    for b in buckets:
        if not _BUCKET_RE.fullmatch(b) or ".." in b:
            raise invalid_argument(f"Bucket name {b[:80]!r} is not valid.")
    existing = await load_project(r, name)
    if existing is None:
        project = Project(
            ProjectName=name,
            Buckets=sorted(set(buckets)),
            CreatedAt=utcnow_iso(),
            WebhookSecret=box.seal(name, new_secret()),
        )
        created = bool(await r.set(keys.project(name), project.model_dump_json(), nx=True))
        if not created:  # lost a race with another create: update that one instead
            return await put_project(r, name, buckets, box)
        await r.sadd(keys.PROJECTS_INDEX, name)
        return project, True
    project = existing.model_copy(update={"Buckets": sorted(set(buckets))})
    await r.set(keys.project(name), project.model_dump_json())
    return project, False

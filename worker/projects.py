"""Project records (name, buckets, webhook secret) in Redis; read by workers, written by the API.

The record keeps the webhook secret sealed (:mod:`worker.sealing`); :func:`webhook_secret` opens it.
"""

from __future__ import annotations

from pydantic import BaseModel, Field

from worker.sealing import SecretBox

# Records written before secrets were sealed hold the secret itself (Standard Webhooks' prefix).
_CLEAR_PREFIX = "whsec_"


class Project(BaseModel):
    ProjectName: str
    Buckets: list[str] = Field(default_factory=list)
    CreatedAt: str
    WebhookSecret: str
    """The sealed webhook secret (or, in records from before sealing, the secret itself)."""


def webhook_secret(project: Project, box: SecretBox) -> str:
    """The project's signing secret. Raises :class:`~worker.sealing.SealingError` if it cannot be opened."""
    stored = project.WebhookSecret
    if stored.startswith(_CLEAR_PREFIX):
        return stored
    return box.open(project.ProjectName, stored)

"""Project records (readable and writable buckets, webhook secrets) in Redis; read by workers, written
by the API.

The record keeps webhook secrets sealed (:mod:`worker.sealing`); :func:`webhook_secret` opens the current
one and :func:`signing_secrets` every secret a callback is signed with right now (the current one and,
for :data:`WEBHOOK_SECRET_GRACE_SECONDS` after a rotation, the previous one).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from pydantic import BaseModel, Field

from worker.sealing import SecretBox

# Records written before secrets were sealed hold the secret itself (Standard Webhooks' prefix).
CLEAR_PREFIX = "whsec_"

WEBHOOK_SECRET_GRACE_SECONDS = 24 * 3600
"""After a rotation the previous secret keeps signing (beside the new one) this long, as svix does: receivers
verify with either secret while they deploy the new one."""


class Project(BaseModel):
    ProjectName: str
    Buckets: list[str] = Field(default_factory=list)
    WritableBuckets: list[str] = Field(default_factory=list)
    """Buckets the project's jobs may write rendered outputs to (set by an admin key only)."""
    CreatedAt: str
    WebhookSecret: str
    """The sealed webhook secret (or, in records from before sealing, the secret itself)."""
    PreviousWebhookSecret: str | None = None
    """The sealed secret that was current before the last rotation, while its grace period lasts."""
    PreviousWebhookSecretExpiresAt: str | None = None
    """ISO 8601 UTC end of the previous secret's grace period."""


def is_clear(project: Project) -> bool:
    """Does the record still hold a secret in the clear (written before sealing)?"""
    return project.WebhookSecret.startswith(CLEAR_PREFIX) or (
        project.PreviousWebhookSecret is not None and project.PreviousWebhookSecret.startswith(CLEAR_PREFIX)
    )


def _open(owner: str, stored: str, box: SecretBox) -> str:
    return stored if stored.startswith(CLEAR_PREFIX) else box.open(owner, stored)


def webhook_secret(project: Project, box: SecretBox) -> str:
    """The project's signing secret. Raises :class:`~worker.sealing.SealingError` if it cannot be opened."""
    return _open(project.ProjectName, project.WebhookSecret, box)


def previous_secret_active(project: Project, now: datetime | None = None) -> bool:
    if not project.PreviousWebhookSecret or not project.PreviousWebhookSecretExpiresAt:
        return False
    expires = datetime.fromisoformat(project.PreviousWebhookSecretExpiresAt.replace("Z", "+00:00"))
    return (now or datetime.now(UTC)) < expires


def signing_secrets(project: Project, box: SecretBox, now: datetime | None = None) -> list[str]:
    """Every secret a callback is signed with now: the current one first, then the previous one during
    its grace period (Standard Webhooks carries several space-separated signatures in one header)."""
    found = [webhook_secret(project, box)]
    if previous_secret_active(project, now):
        assert project.PreviousWebhookSecret is not None
        found.append(_open(project.ProjectName, project.PreviousWebhookSecret, box))
    return found


def grace_end(now: datetime | None = None) -> str:
    """The ISO 8601 UTC end of a grace period that starts ``now``."""
    end = (now or datetime.now(UTC)) + timedelta(seconds=WEBHOOK_SECRET_GRACE_SECONDS)
    return end.strftime("%Y-%m-%dT%H:%M:%S.") + f"{end.microsecond // 1000:03d}Z"

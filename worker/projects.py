"""Project records (name, buckets, webhook secret) in Redis; read by workers, written by the API."""

from __future__ import annotations

from pydantic import BaseModel, Field


class Project(BaseModel):
    ProjectName: str
    Buckets: list[str] = Field(default_factory=list)
    CreatedAt: str
    WebhookSecret: str

"""Request and response models of the native API (PascalCase, as IMM)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from worker.contracts import JobStatus


class SubmitJobRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    SourceURI: str = Field(
        description="oss://bucket/key or s3://bucket/key; the bucket must belong to the project."
    )
    AspectRatios: list[str] | str | None = Field(
        None, description='Up to 5 of "W:H" (integers in (0, 20), W/H in [0.5, 2]) or ["auto"] (the default).'
    )
    InclusionHints: list[str] | str | None = Field(
        None, description='At most one free-text hint, e.g. ["face"].'
    )
    CredentialConfig: dict[str, Any] | str | None = Field(
        None, description="Accepted for IMM parity; ignored."
    )
    CallbackURL: str | None = Field(
        None, max_length=2048, description="http(s) URL that receives the finished job."
    )
    UserData: str | None = Field(
        None, max_length=2048, description="Echoed back in the job and the callback."
    )
    IdempotencyKey: str | None = Field(
        None,
        min_length=1,
        max_length=128,
        description="Same key within the result TTL returns the first job.",
    )


class SubmitJobResponse(BaseModel):
    RequestId: str
    Status: JobStatus


class SubmitBatchRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    Jobs: list[SubmitJobRequest] = Field(min_length=1, max_length=100, description="1 to 100 crop jobs.")


class SubmitBatchResponse(BaseModel):
    Jobs: list[SubmitJobResponse]


class ProjectPutRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    Buckets: list[str] = Field(
        default_factory=list, max_length=100, description="Buckets the project may read."
    )


class ProjectResponse(BaseModel):
    ProjectName: str
    Buckets: list[str]
    CreatedAt: str
    WebhookSecret: str

"""The service's wire models as the client reads and writes them (PascalCase, as the API and IMM).

They mirror the server's own models field for field (a test compares both JSON schemas, so drift fails
CI), but every model ignores fields it does not know: a newer server may add fields without breaking an
older client. Constraints stay on the server, which checks every request; the client only types.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class _Wire(BaseModel):
    model_config = ConfigDict(extra="ignore")


class JobStatus(StrEnum):
    QUEUED = "Queued"
    RUNNING = "Running"
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"
    CANCELLED = "Cancelled"

    @property
    def finished(self) -> bool:
        """A terminal state: nothing changes the job any more."""
        return self in (JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED)


class BatchStatus(StrEnum):
    LISTING = "Listing"
    RUNNING = "Running"
    SUCCEEDED = "Succeeded"
    PARTIALLY_FAILED = "PartiallyFailed"
    CANCELLED = "Cancelled"

    @property
    def finished(self) -> bool:
        return self in (BatchStatus.SUCCEEDED, BatchStatus.PARTIALLY_FAILED, BatchStatus.CANCELLED)


class CallbackStatus(StrEnum):
    PENDING = "Pending"
    RETRYING = "Retrying"
    DELIVERED = "Delivered"
    FAILED = "Failed"


class Point(_Wire):
    X: int
    Y: int


class Boundary(_Wire):
    """A crop rectangle in source pixels, and its four corners (IMM's polygon)."""

    Left: int
    Top: int
    Width: int
    Height: int
    Polygon: list[Point]


RenderFormat = Literal["jpeg", "webp", "png", "avif"]


class RenderSpec(_Wire):
    """``Render``: write each crop, resized and encoded, to a bucket in the project's WritableBuckets.

    ``TargetURI`` is an ``oss://bucket/key`` template: ``{RequestId}``, ``{Stem}`` (the source's file
    name without extension) and ``{Ratio}`` (e.g. ``16x9``) are replaced."""

    TargetURI: str
    Format: RenderFormat = "jpeg"
    Quality: int = 82
    MaxWidth: int | None = None
    MaxHeight: int | None = None
    KeepMetadata: bool = False


class RenderedOutput(_Wire):
    """Where a rendered crop was written, and what it is."""

    URI: str
    Width: int
    Height: int
    Format: str
    Bytes: int
    ETag: str


class Cropping(_Wire):
    AspectRatio: str
    Confidence: float
    Boundary: Boundary
    Output: RenderedOutput | None = None


class Box(_Wire):
    Left: int
    Top: int
    Width: int
    Height: int


class Detection(_Wire):
    """Something the engine found and weighed: a face, a person, another object, or a hinted object."""

    Type: Literal["face", "person", "object", "hint"]
    Label: str
    Confidence: float
    Boundary: Box


class CallbackState(_Wire):
    Status: CallbackStatus = CallbackStatus.PENDING
    Attempts: int = 0
    LastStatusCode: int | None = None
    LastError: str | None = None
    DeliveredAt: str | None = None


class Job(_Wire):
    """A crop job, as ``GET .../crop-jobs/{RequestId}`` answers it."""

    RequestId: str
    ProjectName: str
    Status: JobStatus
    BatchId: str | None = None
    SourceURI: str
    AspectRatios: list[str]
    InclusionHints: list[str] = Field(default_factory=list)
    Render: RenderSpec | None = None
    Croppings: list[Cropping] | None = None
    Detections: list[Detection] | None = None
    MatchedInclusionHints: list[str] = Field(default_factory=list)
    ImageWidth: int | None = None
    ImageHeight: int | None = None
    UserData: str | None = None
    CallbackURL: str | None = None
    Callback: CallbackState | None = None
    Code: str | None = None
    Message: str | None = None
    Attempts: int = 0
    CreatedAt: str
    StartedAt: str | None = None
    FinishedAt: str | None = None


class JobPage(_Wire):
    """One page of ``GET .../crop-jobs``: newest first; ``NextToken`` is absent on the last page."""

    Jobs: list[Job]
    NextToken: str | None = None


class Batch(_Wire):
    """A prefix batch, as ``GET .../crop-batches/{BatchId}`` answers it."""

    BatchId: str
    ProjectName: str
    Status: BatchStatus
    SourcePrefix: str
    Suffixes: list[str] = Field(default_factory=list)
    AspectRatios: list[str]
    InclusionHints: list[str] = Field(default_factory=list)
    Render: RenderSpec | None = None
    ManifestURI: str | None = None
    CallbackURL: str | None = None
    UserData: str | None = None
    Total: int = 0
    """Objects listed so far; final once Status is past Listing."""
    Succeeded: int = 0
    Failed: int = 0
    Cancelled: int = 0
    Pending: int = 0
    """Total minus the jobs that ended (Succeeded, Failed or Cancelled)."""
    CreatedAt: str
    FinishedAt: str | None = None

    @property
    def done(self) -> int:
        """Jobs that ended, whichever way."""
        return self.Succeeded + self.Failed + self.Cancelled


class Project(_Wire):
    """A project, as ``PUT``/``GET /v1/projects/{name}`` answer it."""

    ProjectName: str
    Buckets: list[str]
    WritableBuckets: list[str] = Field(default_factory=list)
    CreatedAt: str
    WebhookSecret: str
    PreviousWebhookSecretExpiresAt: str | None = None


__all__ = [
    "Batch",
    "BatchStatus",
    "Boundary",
    "Box",
    "CallbackState",
    "CallbackStatus",
    "Cropping",
    "Detection",
    "Job",
    "JobPage",
    "JobStatus",
    "Point",
    "Project",
    "RenderFormat",
    "RenderSpec",
    "RenderedOutput",
]

"""Wire models shared by the API and the workers (PascalCase as IMM, so one vocabulary serves both faces).

``CropTaskMessage`` is the versioned Celery message; ``Job`` is the record kept in Redis and served by
the API; ``Cropping`` is the IMM ``CroppingSuggestion``.
"""

from __future__ import annotations

from datetime import UTC, datetime
from enum import StrEnum
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from worker.engine.types import CropSuggestion, Detected

# The Celery task names and queues: the part of the wire contract a producer needs to send a task. No Celery
# import here, so the API sends by name without loading the worker's app (worker/celery_app.py).
CROP_TASK = "cropq.crop"
WEBHOOK_TASK = "cropq.webhook"
BATCH_FEED_TASK = "cropq.batch-feed"
BATCH_FINISH_TASK = "cropq.batch-finish"
BATCH_WEBHOOK_TASK = "cropq.batch-webhook"
BATCH_QUEUE_SUFFIX = ".batch"


def batch_queue(queue_name: str) -> str:
    """The queue of prefix batches' jobs beside the crop queue ``queue_name``: crop workers consume both,
    this one only when the crop queue is empty."""
    return queue_name + BATCH_QUEUE_SUFFIX


def utcnow_iso() -> str:
    """ISO 8601 in UTC with milliseconds and a ``Z``, as IMM prints times."""
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{datetime.now(UTC).microsecond // 1000:03d}Z"


class JobStatus(StrEnum):
    QUEUED = "Queued"
    RUNNING = "Running"
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"
    CANCELLED = "Cancelled"

    @property
    def finished(self) -> bool:
        """A terminal state: nothing changes the job any more (a run that meets it stores nothing)."""
        return self in (JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED)


class Point(BaseModel):
    X: int
    Y: int


class Boundary(BaseModel):
    Left: int
    Top: int
    Width: int
    Height: int
    Polygon: list[Point]


RenderFormat = Literal["jpeg", "webp", "png", "avif"]


class RenderSpec(BaseModel):
    """``Render``: write each crop, resized and encoded, to storage (native API and CLI only)."""

    model_config = ConfigDict(extra="forbid")

    TargetURI: str = Field(
        max_length=1100,
        description="oss://bucket/key template; {RequestId}, {Stem} (source file name without extension) and "
        "{Ratio} (e.g. 16x9) are replaced. The bucket must be one of the project's WritableBuckets.",
        examples=["oss://thumbs/{Stem}/{Ratio}.webp"],
    )
    Format: RenderFormat = Field(
        "jpeg", description="jpeg (progressive), webp, png, or avif where supported."
    )
    Quality: int = Field(82, ge=1, le=100, description="Encoder quality (jpeg, webp, avif).")
    MaxWidth: int | None = Field(None, ge=1, le=16384, description="Largest output width; never upscaled.")
    MaxHeight: int | None = Field(None, ge=1, le=16384, description="Largest output height; never upscaled.")
    KeepMetadata: bool = Field(
        False,
        description="Copy the source's EXIF (orientation reset) into the output and tag it sRGB. Off by "
        "default: location and camera data must not leak into thumbnails.",
    )


class RenderedOutput(BaseModel):
    """Where a rendered crop was written, and what it is."""

    URI: str
    Width: int
    Height: int
    Format: str
    Bytes: int
    ETag: str


class Cropping(BaseModel):
    AspectRatio: str
    Confidence: float = Field(ge=0, le=1)
    Boundary: Boundary
    Output: RenderedOutput | None = None

    @classmethod
    def from_suggestion(cls, s: CropSuggestion) -> Cropping:
        r = s.rect
        return cls(
            AspectRatio=s.aspect_ratio,
            Confidence=round(float(s.confidence), 4),
            Boundary=Boundary(
                Left=r.left,
                Top=r.top,
                Width=r.width,
                Height=r.height,
                Polygon=[Point(X=x, Y=y) for x, y in r.corners()],
            ),
        )


class Box(BaseModel):
    Left: int
    Top: int
    Width: int
    Height: int


class Detection(BaseModel):
    """Something the engine found and weighed: a face, a person, another object, or a hinted object."""

    Type: Literal["face", "person", "object", "hint"]
    Label: str
    Confidence: float = Field(ge=0, le=1)
    Boundary: Box

    @classmethod
    def from_detected(cls, d: Detected) -> Detection:
        r = d.rect
        return cls(
            Type=d.kind,  # the engine's kinds are exactly these four (validated)
            Label=d.label,
            Confidence=d.confidence,
            Boundary=Box(Left=r.left, Top=r.top, Width=r.width, Height=r.height),
        )


class CallbackStatus(StrEnum):
    PENDING = "Pending"
    RETRYING = "Retrying"
    DELIVERED = "Delivered"
    FAILED = "Failed"


class CallbackState(BaseModel):
    Status: CallbackStatus = CallbackStatus.PENDING
    Attempts: int = 0
    LastStatusCode: int | None = None
    LastError: str | None = None
    DeliveredAt: str | None = None


class Job(BaseModel):
    """A crop job as stored in Redis and answered by ``GET .../crop-jobs/{RequestId}``."""

    model_config = ConfigDict(extra="ignore")

    RequestId: str
    ProjectName: str
    Status: JobStatus
    BatchId: str | None = None
    """The prefix batch that made the job, if any."""
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


class CropTaskMessage(BaseModel):
    """The Celery task's only argument (JSON). Versioned so old messages stay readable after upgrades."""

    v: Literal[1] = 1
    RequestId: str
    ProjectName: str
    Bucket: str = ""
    Key: str = ""
    SourceURL: str | None = None
    """An http(s) source, fetched by the worker (then Bucket and Key are empty)."""
    AspectRatios: list[str]
    InclusionHints: list[str] = Field(default_factory=list)
    Render: RenderSpec | None = None


class BatchStatus(StrEnum):
    LISTING = "Listing"
    RUNNING = "Running"
    SUCCEEDED = "Succeeded"
    PARTIALLY_FAILED = "PartiallyFailed"
    CANCELLED = "Cancelled"

    @property
    def finished(self) -> bool:
        return self in (BatchStatus.SUCCEEDED, BatchStatus.PARTIALLY_FAILED, BatchStatus.CANCELLED)


class Batch(BaseModel):
    """A prefix batch as answered by ``GET .../crop-batches/{BatchId}`` (and sent in its callback)."""

    model_config = ConfigDict(extra="ignore")

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


class WebhookEvent(BaseModel):
    """The callback body: Standard Webhooks' ``{type, timestamp, data}``."""

    type: Literal["crop-job.succeeded", "crop-job.failed", "crop-job.cancelled"]
    timestamp: str
    data: Job


class BatchWebhookEvent(BaseModel):
    """The batch's one callback, when it ends."""

    type: Literal["crop-batch.finished"] = "crop-batch.finished"
    timestamp: str
    data: Batch

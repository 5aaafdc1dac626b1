"""Request and response models of the native API (PascalCase, as IMM), with the size caps every field
has: nothing unbounded is parsed, stored or echoed back."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Path
from pydantic import BaseModel, ConfigDict, Field

from worker.contracts import BatchStatus, Job, JobStatus, RenderSpec
from worker.engine.ratios import MAX_HINT_LENGTH, MAX_HINTS, MAX_RATIOS

PROJECT_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_-]{0,127}$"
SOURCE_URI_PATTERN = r"^(oss|s3)://[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]/.+$"
REQUEST_ID_PATTERN = r"^[A-Za-z0-9_-]{1,64}$"

# S3's object keys are at most 1,024 bytes; with a scheme and a bucket name a URI fits in 1,100.
MAX_SOURCE_URI_BYTES = 1100
MAX_OBJECT_KEY_BYTES = 1024
MAX_CALLBACK_URL_LENGTH = 2048
MAX_USER_DATA_LENGTH = 2048
MAX_IDEMPOTENCY_KEY_LENGTH = 128
# The JSON-in-a-string parameters (the RPC face's forms): bounded before they are decoded.
MAX_LIST_PARAM_LENGTH = 1024
MAX_CREDENTIAL_CONFIG_LENGTH = 8192

ProjectNamePath = Annotated[
    str,
    Path(
        pattern=PROJECT_NAME_PATTERN,
        max_length=128,
        description="Letters, digits, '-' and '_', 1 to 128 characters.",
    ),
]
RequestIdPath = Annotated[
    str, Path(pattern=REQUEST_ID_PATTERN, max_length=64, description="The RequestId that submit answered.")
]


class SubmitJobRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    SourceURI: str | None = Field(
        None,
        max_length=MAX_SOURCE_URI_BYTES,
        # Documented, checked by the job path (with its own messages) rather than by the model.
        json_schema_extra={"examples": ["oss://photos/photo.jpg", "https://example.com/photo.jpg"]},
        description="oss://bucket/key or s3://bucket/key (at most 1,100 bytes: S3 keys are at most 1,024) "
        "in a bucket of the project; or an https:// URL (http:// where the server allows it) that the worker "
        "fetches. Required, except in the Job part of a multipart upload (the Image part is the source).",
    )
    AspectRatios: (
        Annotated[list[Annotated[str, Field(max_length=16)]], Field(max_length=MAX_RATIOS)]
        | Annotated[str, Field(max_length=MAX_LIST_PARAM_LENGTH)]
        | None
    ) = Field(
        None,
        description='Up to 5 of "W:H" (integers in (0, 20), W/H in [0.5, 2]) or ["auto"] (the default); '
        "a JSON array in a string is accepted too.",
    )
    InclusionHints: (
        Annotated[list[Annotated[str, Field(max_length=MAX_HINT_LENGTH)]], Field(max_length=MAX_HINTS)]
        | Annotated[str, Field(max_length=MAX_LIST_PARAM_LENGTH)]
        | None
    ) = Field(None, description='At most one free-text hint of up to 64 characters, e.g. ["face"].')
    CredentialConfig: (
        dict[str, Any] | Annotated[str, Field(max_length=MAX_CREDENTIAL_CONFIG_LENGTH)] | None
    ) = Field(None, description="Accepted for IMM parity (a JSON object, at most 8 kB); ignored.")
    CallbackURL: str | None = Field(
        None, max_length=MAX_CALLBACK_URL_LENGTH, description="http(s) URL that receives the finished job."
    )
    UserData: str | None = Field(
        None, max_length=MAX_USER_DATA_LENGTH, description="Echoed back in the job and the callback."
    )
    Render: RenderSpec | None = Field(
        None,
        description="Write each crop, resized and encoded, to Render.TargetURI (a bucket in the project's "
        "WritableBuckets); each Cropping then carries Output.",
    )
    IdempotencyKey: str | None = Field(
        None,
        min_length=1,
        max_length=MAX_IDEMPOTENCY_KEY_LENGTH,
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


MAX_LIST_RESULTS = 100
DEFAULT_LIST_RESULTS = 20
MAX_NEXT_TOKEN_LENGTH = 512
BATCH_ID_PATTERN = REQUEST_ID_PATTERN


class ListJobsResponse(BaseModel):
    """A page of ``GET .../crop-jobs``: newest first."""

    Jobs: list[Job]
    NextToken: str | None = Field(
        None,
        description="Pass it back as NextToken for the next page; absent on the last page. Opaque, and "
        "valid only with the same project and filters.",
    )


class ProjectPutRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    Buckets: list[Annotated[str, Field(max_length=63)]] = Field(
        default_factory=list, max_length=100, description="Buckets the project may read."
    )
    WritableBuckets: list[Annotated[str, Field(max_length=63)]] | None = Field(
        None,
        max_length=100,
        description="Buckets the project's jobs may write rendered outputs to (Render.TargetURI); "
        "left as it is when omitted.",
    )


class ProjectResponse(BaseModel):
    ProjectName: str
    Buckets: list[str]
    WritableBuckets: list[str] = Field(default_factory=list)
    CreatedAt: str
    WebhookSecret: str = Field(description="The current signing secret of the project's callbacks.")
    PreviousWebhookSecretExpiresAt: str | None = Field(
        None,
        description="After a rotation: until when (ISO 8601 UTC) the replaced secret still signs too.",
    )


class ErrorBody(BaseModel):
    """Every error answer (IMM's body)."""

    RequestId: str
    HostId: str
    Code: str = Field(description='e.g. "InvalidArgument", "Forbidden", "ResourceNotFound", "Throttling".')
    Message: str
    Recommend: str


# --- prefix batches (POST/GET .../crop-batches) ---
MAX_SUFFIXES = 20
MAX_SUFFIX_LENGTH = 16

BatchIdPath = Annotated[
    str, Path(pattern=REQUEST_ID_PATTERN, max_length=64, description="The BatchId that submit answered.")
]


class SubmitPrefixBatchRequest(BaseModel):
    """A crop job for every object under a prefix (the job fields apply to each)."""

    model_config = ConfigDict(extra="forbid")

    SourcePrefix: str = Field(
        max_length=MAX_SOURCE_URI_BYTES,
        json_schema_extra={"examples": ["oss://photos/products/"]},
        description="oss://bucket/prefix (or s3://) in a bucket of the project; every object whose key "
        "starts with the prefix (and ends with one of Suffixes) gets a job. oss://bucket/ takes the whole "
        "bucket.",
    )
    Suffixes: list[Annotated[str, Field(max_length=MAX_SUFFIX_LENGTH)]] | None = Field(
        None,
        max_length=MAX_SUFFIXES,
        description='Up to 20 key endings such as ".jpg", compared case-insensitively; none: every object '
        "(folder markers, keys ending in '/', are skipped).",
    )
    AspectRatios: (
        Annotated[list[Annotated[str, Field(max_length=16)]], Field(max_length=MAX_RATIOS)]
        | Annotated[str, Field(max_length=MAX_LIST_PARAM_LENGTH)]
        | None
    ) = Field(None, description='As for a job: up to 5 of "W:H", or ["auto"] (the default).')
    InclusionHints: (
        Annotated[list[Annotated[str, Field(max_length=MAX_HINT_LENGTH)]], Field(max_length=MAX_HINTS)]
        | Annotated[str, Field(max_length=MAX_LIST_PARAM_LENGTH)]
        | None
    ) = Field(None, description="As for a job: at most one free-text hint.")
    Render: RenderSpec | None = Field(
        None, description="As for a job; {Stem} is each object's file name without its extension."
    )
    ManifestURI: str | None = Field(
        None,
        max_length=MAX_SOURCE_URI_BYTES,
        json_schema_extra={"examples": ["oss://results/batches/{BatchId}.jsonl"]},
        description="oss://bucket/key in one of the project's WritableBuckets ({BatchId} is replaced): when "
        "the batch ends, one JSON line per object is written there (SourceURI, RequestId, Status, and "
        "Croppings or Code and Message). None: no manifest.",
    )
    CallbackURL: str | None = Field(
        None,
        max_length=MAX_CALLBACK_URL_LENGTH,
        description="http(s) URL that receives one signed crop-batch.finished event when the batch ends "
        "(the batch's jobs send none of their own).",
    )
    UserData: str | None = Field(
        None, max_length=MAX_USER_DATA_LENGTH, description="Echoed back in the batch."
    )
    IdempotencyKey: str | None = Field(
        None,
        min_length=1,
        max_length=MAX_IDEMPOTENCY_KEY_LENGTH,
        description="Same key within the result TTL returns the first batch (the Idempotency-Key header "
        "works too).",
    )


class SubmitPrefixBatchResponse(BaseModel):
    BatchId: str
    Status: BatchStatus

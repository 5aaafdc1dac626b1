"""Settings for every cropq process, read from environment variables with the prefix ``CROPQ_``.

One class serves the API, the workers and the CLI; each field is described so the README table can be
generated from it (``cropq config``).
"""

from __future__ import annotations

import dataclasses
import ipaddress
import json
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from worker.engine.config import EngineConfig, ObjectDetection, Precision, Runtime

WEBHOOK_MAX_DELAY_FACTOR = 2
"""A receiver's ``Retry-After`` may stretch a callback retry delay to this multiple of its scheduled value
(svix's clamp); jitter (±20 %) stays inside it."""


SECRET_KEY_MIN_BYTES = 32
"""``CROPQ_SECRET_KEY`` is refused below this length: the key of every sealed secret derives from it."""


class AccessKeySpec(BaseModel):
    """A bootstrap access key given in settings (``CROPQ_ACCESS_KEYS``)."""

    AccessKeyId: str = Field(min_length=8, max_length=64, pattern=r"^[A-Za-z0-9_-]+$")
    AccessKeySecret: SecretStr = Field(min_length=16)
    Projects: list[str] = Field(min_length=1)


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="CROPQ_", extra="ignore", frozen=True)

    # --- Redis (job records, idempotency keys, nonces, Celery broker) ---
    redis_url: str = Field(
        "redis://127.0.0.1:6379/0",
        description="Redis URL for job records and the Celery broker: redis://, rediss://, or "
        "redis+sentinel://[[user]:password@]host1:26379[,host2:26379...]/<master_name>[/<db>]"
        "[?sentinel_password=...] for a Sentinel group.",
    )
    # --- S3 / MinIO ---
    s3_endpoint: str = Field(
        "127.0.0.1:9000", description="S3 endpoint host:port (MinIO, SeaweedFS, AWS...)."
    )
    s3_access_key: str = Field("cropq", description="S3 access key.")
    s3_secret_key: SecretStr = Field(SecretStr("cropq-dev-secret"), description="S3 secret key.")
    s3_secure: bool = Field(False, description="Use HTTPS to talk to S3.")
    s3_region: str | None = Field(None, description="S3 region (optional; avoids a bucket-location lookup).")
    s3_timeout_seconds: float = Field(10.0, gt=0, description="Connect/read timeout of each S3 call.")
    # --- API ---
    api_host: str = Field("127.0.0.1", description="Address the API binds to.")
    api_port: int = Field(8000, ge=1, le=65535, description="Port the API listens on.")
    max_wait_seconds: int = Field(
        30, ge=0, le=300, description="Upper bound of the long-poll ?wait= parameter."
    )
    rpc_wait_seconds: float = Field(
        8.5, gt=0, description="How long the IMM RPC face waits for a result (the SDK gives up at 10 s)."
    )
    max_body_bytes: int = Field(
        1024 * 1024,
        ge=1024,
        description="Largest request body the API reads, bytes; a larger one gets 413 before anything "
        "parses it (a 100-job batch whose jobs carry 2 kB of UserData and of CallbackURL is about 500 kB).",
    )
    # --- jobs ---
    result_ttl_seconds: int = Field(
        7 * 24 * 3600, ge=60, description="How long job records and results are kept."
    )
    accept_durability: Literal["auto", "memory", "fsync", "replica"] = Field(
        "auto",
        description="What a 202 waits for: `memory` (Redis holds the job), `fsync` (the job and its queue "
        "message are fsynced to Redis' append-only file: WAITAOF), `replica` (they reached a replica: WAIT, "
        "for Sentinel setups) or `auto` (`fsync` when Redis has its append-only file on, else `memory`). "
        "Unconfirmed within accept_durability_timeout_ms, the job is withdrawn and the answer is 503.",
    )
    accept_durability_timeout_ms: int = Field(
        2000, ge=10, le=10000, description="How long a submission waits for accept_durability, ms."
    )
    max_attempts: int = Field(
        5,
        ge=1,
        le=20,
        description="Worker deaths one job may cause (or suffer) before it is failed: runs that end with "
        "their process alive (retries, requeues) do not count.",
    )
    task_soft_time_limit: int = Field(60, ge=1, description="Soft time limit of one crop job, seconds.")
    task_hard_time_limit: int = Field(
        90, ge=2, description="Hard time limit: the worker child is killed, seconds."
    )
    visibility_timeout: int = Field(
        60,
        ge=5,
        description="Seconds after which a job held by a worker that stopped renewing its lease (host gone, "
        "network cut, process frozen) is handed to another worker. Workers renew the leases of the jobs they "
        "hold four times per timeout, so a long job or a retry countdown never outlives it.",
    )
    worker_max_memory_mb: int = Field(
        1536,
        ge=0,
        description=(
            "A worker child whose memory exceeds this after a job is replaced by a fresh one (0 = never)."
        ),
    )
    storage_outage_seconds: int = Field(
        120,
        ge=0,
        description="How long a job keeps trying an unavailable image store (connection refused, timeouts, "
        "5xx), counted from its first failure, with exponential backoff (1 s doubling to 15 s) and jitter; "
        "then it fails with ServiceUnavailable.",
    )
    max_image_bytes: int = Field(
        64 * 1024 * 1024, ge=1024, description="Largest source object accepted, bytes."
    )
    max_image_pixels: int = Field(
        100_000_000, ge=1, description="Pixel cap, read from the header before decoding."
    )
    decode_memory_mb: int = Field(
        640,
        ge=64,
        description="Memory budget of one image decode, MB: estimated from the header (pixels x bytes a "
        "pixel as each format's decoder holds them; a JPEG decodes at 1/8 scale but a progressive one keeps "
        "a full-size coefficient buffer) and refused above it; enforced as the decode child's address-space "
        "limit. 640 accepts 100 MP JPEGs (progressive ones too) and RGB PNGs, RGBA PNGs to about 75 MP and "
        "WebPs to about 40 MP, and keeps the decode child of a worker under 1 GB.",
    )
    decode_time_limit_seconds: float = Field(
        8.0,
        gt=0,
        le=300,
        description="Time budget of one image decode (wall clock and CPU), seconds: the decode runs in a "
        "child process that is killed when it is spent, and the job fails with "
        "InvalidArgument.ImageTooComplex after one attempt. A 100 MP PNG decodes in about 0.5 s.",
    )
    queue_name: str = Field("cropq", description="Celery queue the crop jobs travel on.")
    object_detection: ObjectDetection = Field(
        "always",
        description="When workers and `cropq crop` run the object detector (people and the other COCO "
        "classes): always (best at keeping people and the subject; about one JPEG decode more per "
        "12 MP photo), no_faces, hint (only for a hint naming one of its classes; fastest) or off.",
    )
    face_runtime: Runtime = Field(
        "auto",
        description="What runs the face detector (CenterFace): onnxruntime, openvino (needs the `openvino` "
        "extra), or auto (the runtime measured fastest on this CPU among those installed; onnxruntime on "
        "every CPU measured so far).",
    )
    object_precision: Precision = Field(
        "fp32",
        description="The object detector's arithmetic: fp32, or int8 (about 1.9x faster on a CPU with VNNI; "
        "every quality target held on the dev sets, with crops slightly changed; on a CPU without VNNI its "
        "quality is unmeasured and the worker says so once).",
    )
    object_runtime: Runtime = Field(
        "auto", description="What runs the object detector (NanoDet): the same choices as CROPQ_FACE_RUNTIME."
    )
    face_detect_long_side: int = Field(
        320,
        ge=160,
        le=1280,
        description="Long side (px) of the copy of a large photo that faces are detected on. Faces are "
        "found from about 16 px tall there: 320 finds them from about 7% of a 4:3 photo's short side, "
        "480 from 4.4%, 640 from 3.3%; per 12 MP JPEG, 480 costs about 0.4 and 640 about 1.5 JPEG "
        "decodes more than 320.",
    )
    # --- webhooks ---
    webhook_retry_schedule: list[int] = Field(
        # Svix's schedule: a receiver that is down for hours still gets its callbacks (for about 28 h).
        default_factory=lambda: [5, 300, 1800, 7200, 18000, 36000, 36000],
        description=(
            "Seconds to wait before each callback retry (JSON list); jitter ±20 % is added, and a receiver's "
            "Retry-After may stretch a delay to twice its value. The default retries for about 28 hours."
        ),
    )
    webhook_timeout_seconds: float = Field(
        15.0,
        gt=0,
        description="Deadline of one callback attempt over the whole exchange (DNS, connect, TLS, send, "
        "status and headers), however slowly the receiver answers.",
    )
    webhook_concurrency: int = Field(
        4,
        ge=1,
        le=64,
        description="Prefork children of each callback worker process (the workers of the "
        "`<queue_name>.webhooks` queue): callbacks in flight at once per process.",
    )
    webhook_allowed_cidrs: list[str] = Field(
        default_factory=list,
        description="Private/loopback networks callbacks may reach anyway (JSON list of CIDRs).",
    )
    # --- sources beyond the project's buckets ---
    source_allowed_cidrs: list[str] = Field(
        default_factory=list,
        description="Private/loopback networks http(s) sources may be fetched from anyway (JSON list of "
        "CIDRs); plain http:// is allowed to these addresses too.",
    )
    source_allow_http: bool = Field(
        False, description="Allow plain http:// sources on public addresses (https:// always is)."
    )
    source_timeout_seconds: float = Field(
        30.0, gt=0, le=600, description="Deadline of one http(s) source fetch, DNS to last byte."
    )
    source_user_agent: str = Field("cropq-fetcher/1.0", description="User-Agent of http(s) source fetches.")
    upload_bucket: str = Field(
        "cropq-uploads",
        description="Bucket that multipart uploads are stored in, under <project>/<RequestId>/ (created "
        "with an expiry rule of upload_retention_days); no project may read or write it otherwise.",
    )
    upload_retention_days: int = Field(
        1, ge=1, le=365, description="Days an uploaded image is kept (the upload bucket's expiry rule)."
    )
    max_upload_bytes: int = Field(
        32 * 1024 * 1024, ge=1024, description="Largest image a multipart upload may carry, bytes."
    )
    # --- rendered outputs ---
    render_max_side: int = Field(
        4096,
        ge=16,
        le=16384,
        description="Longest side of a rendered output, px: larger requests (or crops, when no MaxWidth/"
        "MaxHeight is given) are scaled down to it, so a 100 MP source never makes a 100 MP output.",
    )
    render_time_limit_seconds: float = Field(
        30.0,
        gt=0,
        le=300,
        description="Time budget of rendering one job's crops (decode, resize, encode; wall clock and CPU) "
        "in the sandboxed decode process; over it the job fails with InvalidArgument.ImageTooComplex. Five "
        "4096 px outputs of a 100 MP PNG take about 19 s on one core.",
    )
    # --- prefix batches ---
    batch_in_flight: int = Field(
        8,
        ge=1,
        le=10000,
        description="Jobs of one prefix batch queued or running at once (about twice the crop workers a "
        "batch should use): the batch is fed as they end, so the queue is never flooded and interactive "
        "jobs submitted meanwhile wait at most for the batch jobs already running.",
    )
    # --- auth ---
    access_keys: list[AccessKeySpec] = Field(
        default_factory=list,
        description="Bootstrap access keys (JSON list of {AccessKeyId, AccessKeySecret, Projects}).",
    )
    secret_key: SecretStr = Field(
        SecretStr(""),
        description=(
            "Key that encrypts stored access-key and webhook secrets: at least 32 bytes (e.g. `openssl rand "
            "-hex 32`), the same on the API and every worker. `cropq up` makes one when it is unset."
        ),
    )
    rate_limit_per_minute: int = Field(
        600,
        ge=0,
        description="Requests per minute per access key, a batch costing one per job (token bucket: the "
        "whole minute may be spent at once, then one every 60 s / limit; 0 = unlimited).",
    )
    auth_failures_per_minute: int = Field(
        30,
        ge=0,
        description="Failed authentications per minute per client address and per AccessKeyId before "
        "429 Throttling (token bucket; 0 = unlimited). Behind a proxy the address is the proxy's unless "
        "uvicorn runs with --proxy-headers --forwarded-allow-ips.",
    )
    # --- client commands (cropq submit / status) ---
    api_url: str | None = Field(
        None,
        description="API base URL for `cropq submit/status/batch/jobs` (default: the running `cropq up`'s, "
        "from its stack.json, else api_host:api_port).",
    )
    access_key_id: str | None = Field(
        None,
        description="AccessKeyId the client commands sign in with (default: the running `cropq up`'s "
        "development key).",
    )
    access_key_secret: SecretStr | None = Field(None, description="AccessKeySecret of CROPQ_ACCESS_KEY_ID.")
    # --- local stack ---
    data_dir: Path = Field(
        Path(".cropq"),
        description="`cropq up`'s folder: embedded Valkey and SeaweedFS data, logs, generated keys and "
        "stack.json (its endpoints and development key, read by the other commands).",
    )
    workers: int = Field(2, ge=1, le=64, description="Worker processes `cropq up` starts.")
    worker_concurrency: int = Field(1, ge=1, le=64, description="Prefork children per worker process.")
    tracing: Literal["off", "otlp", "console"] = Field(
        "off",
        description="OpenTelemetry traces (needs the `otel` extra): `otlp` exports to the collector the "
        "standard OTEL_EXPORTER_OTLP_* variables name, `console` prints spans; `off` loads nothing.",
    )
    log_level: str = Field("INFO", description="Log level.")
    log_json: bool = Field(True, description="JSON logs (one event per line); false gives console logs.")

    @field_validator(
        "access_keys",
        "webhook_retry_schedule",
        "webhook_allowed_cidrs",
        "source_allowed_cidrs",
        mode="before",
    )
    @classmethod
    def _json_list(cls, v: Any) -> Any:
        if isinstance(v, str):
            return json.loads(v) if v.strip() else []
        return v

    @field_validator("s3_region", "api_url", "access_key_id", "access_key_secret", mode="before")
    @classmethod
    def _empty_is_unset(cls, v: Any) -> Any:
        # `CROPQ_S3_REGION=` in an .env file means "not set", not a region named "".
        return None if isinstance(v, str) and not v.strip() else v

    @field_validator("webhook_allowed_cidrs", "source_allowed_cidrs")
    @classmethod
    def _cidrs_readable(cls, v: list[str]) -> list[str]:
        # A bad entry stops the process at start, naming it, instead of refusing every job at run time.
        for cidr in v:
            try:
                ipaddress.ip_network(cidr, strict=False)
            except ValueError:
                raise ValueError(f"{cidr!r} is not a network (e.g. 10.0.0.0/8 or fd00::/8)") from None
        return v

    @field_validator("redis_url")
    @classmethod
    def _redis_url_readable(cls, v: str) -> str:
        # A Sentinel URL with a bad part is refused here, naming it, rather than at the first connection.
        from worker.redis_clients import sentinel_target

        sentinel_target(v)
        return v

    @field_validator("secret_key")
    @classmethod
    def _secret_key_long_enough(cls, v: SecretStr) -> SecretStr:
        # Empty stays possible (a process that never seals, e.g. `cropq crop`, needs none; sealing then
        # says so); a short key is a weak key, refused at start rather than found out later.
        n = len(v.get_secret_value().encode("utf-8"))
        if 0 < n < SECRET_KEY_MIN_BYTES:
            raise ValueError(
                f"secret_key is {n} bytes; it must be at least {SECRET_KEY_MIN_BYTES} "
                "(e.g. the output of `openssl rand -hex 32`)"
            )
        return v

    @field_validator("task_hard_time_limit")
    @classmethod
    def _hard_above_soft(cls, v: int, info: Any) -> int:
        soft = info.data.get("task_soft_time_limit", 0)
        if v <= soft:
            raise ValueError("task_hard_time_limit must exceed task_soft_time_limit")
        return v

    @model_validator(mode="after")
    def _webhook_delays_positive(self) -> Settings:
        # A retry waiting for its countdown is leased like a running job (worker/leases.py), so no delay
        # has to fit the visibility timeout; it only has to be a delay.
        if any(d <= 0 for d in self.webhook_retry_schedule):
            raise ValueError("webhook_retry_schedule delays must be positive")
        return self


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()


def engine_config(settings: Settings) -> EngineConfig:
    """The crop engine's configuration from settings (workers and ``cropq crop`` crop alike)."""
    return dataclasses.replace(
        EngineConfig(),
        max_pixels=settings.max_image_pixels,
        object_detection=settings.object_detection,
        detect_long_side=settings.face_detect_long_side,
        face_runtime=settings.face_runtime,
        object_runtime=settings.object_runtime,
        object_precision=settings.object_precision,
        decode_memory_bytes=settings.decode_memory_mb * 1024 * 1024,
        decode_time_limit=settings.decode_time_limit_seconds,
        decode_isolated=True,  # workers and `cropq crop` alike: a hostile file cannot hold the process
        render_max_side=settings.render_max_side,
        render_time_limit=settings.render_time_limit_seconds,
    )

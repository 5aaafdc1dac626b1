"""Images sent with the job itself: ``multipart/form-data`` with an ``Image`` file part and a ``Job`` part.

The API never decodes the upload: it checks its size and its first bytes (an image signature, so a text
file gets a clear 400 rather than a failed job), stores it in the upload bucket under
``<project>/<RequestId>/<file name>``, and the job reads it from there like any bucket source. The upload
bucket is made on first use with an expiry rule of ``upload_retention_days``; no project may list it in
its Buckets or WritableBuckets, so only the job that uploaded an image reads it.
"""

from __future__ import annotations

import re
import threading
from dataclasses import dataclass

import structlog
from pydantic import ValidationError
from starlette.datastructures import UploadFile
from starlette.requests import Request

from api.errors import ImmError, invalid_argument
from api.schemas import SubmitJobRequest
from worker.settings import Settings
from worker.storage import S3Storage, StorageError

log = structlog.get_logger("cropq.uploads")

MULTIPART = "multipart/form-data"
FORM_SLACK_BYTES = 64 * 1024
"""What a multipart body may carry beyond the image: the Job part (a submit body is a few kB) and the
part headers."""
MAX_FILE_NAME = 200
_UNSAFE_NAME_RE = re.compile(r"[\x00-\x1f\x7f/\\{}]")

# The first bytes of every format the engine reads (preflight's allow-list); anything else is refused here.
_SIGNATURES: tuple[tuple[bytes, int, str], ...] = (
    (b"\xff\xd8\xff", 0, "image/jpeg"),
    (b"\x89PNG\r\n\x1a\n", 0, "image/png"),
    (b"GIF87a", 0, "image/gif"),
    (b"GIF89a", 0, "image/gif"),
    (b"WEBP", 8, "image/webp"),
    (b"BM", 0, "image/bmp"),
    (b"II*\x00", 0, "image/tiff"),
    (b"MM\x00*", 0, "image/tiff"),
    (b"ftypavif", 4, "image/avif"),
    (b"ftypavis", 4, "image/avif"),
    (b"ftypheic", 4, "image/heic"),
    (b"ftypheix", 4, "image/heic"),
    (b"ftypmif1", 4, "image/heif"),
    (b"ftypmsf1", 4, "image/heif"),
)


def sniff_media_type(data: bytes) -> str | None:
    """The image media type its first bytes announce, or None. Never trusted beyond that: the worker's
    preflight reads the real header."""
    for magic, offset, media_type in _SIGNATURES:
        if data[offset : offset + len(magic)] == magic:
            if media_type == "image/webp" and data[:4] != b"RIFF":
                continue
            return media_type
    return None


def is_multipart(request: Request) -> bool:
    return request.headers.get("content-type", "").split(";", 1)[0].strip().lower() == MULTIPART


def body_limit(settings: Settings) -> int:
    """The body cap of a multipart request (the others keep ``max_body_bytes``)."""
    return max(settings.max_body_bytes, settings.max_upload_bytes + FORM_SLACK_BYTES)


@dataclass(frozen=True)
class Upload:
    data: bytes
    file_name: str
    media_type: str


def safe_file_name(name: str | None) -> str:
    """The client's file name as the last segment of an object key: no separators, no control
    characters, no placeholders' braces, bounded."""
    cleaned = _UNSAFE_NAME_RE.sub("_", (name or "").strip())[:MAX_FILE_NAME].strip()
    return cleaned if cleaned not in ("", ".", "..") else "image"


async def read_upload(request: Request, settings: Settings) -> tuple[SubmitJobRequest, Upload]:
    """The job fields and the image of a multipart submit; 400 for anything missing or malformed."""
    # The body was bounded before anything read it (api/limits.py); the form parser spools the file.
    form = await request.form(max_files=1, max_fields=1, max_part_size=FORM_SLACK_BYTES)
    try:
        image, job = form.get("Image"), form.get("Job")
        if not isinstance(image, UploadFile):
            raise invalid_argument("A multipart submit needs an 'Image' file part.")
        if isinstance(job, UploadFile):
            job = (await job.read(FORM_SLACK_BYTES + 1)).decode("utf-8", "replace")
        try:
            body = SubmitJobRequest.model_validate_json(job or "{}")
        except ValidationError as e:
            first = e.errors()[0]
            where = ".".join(str(p) for p in first.get("loc", ())) or "Job"
            raise invalid_argument(f"Job part: {where}: {first.get('msg', 'invalid')}") from None
        if body.SourceURI is not None:
            raise invalid_argument("The Job part of an upload may not carry SourceURI: the Image part is it.")
        data = await image.read(settings.max_upload_bytes + 1)
        if len(data) > settings.max_upload_bytes:
            raise ImmError(
                413, "RequestEntityTooLarge", f"The image is larger than {settings.max_upload_bytes} bytes."
            )
        if not data:
            raise invalid_argument("The Image part is empty.")
        media_type = sniff_media_type(data[:32])
        if media_type is None:
            raise invalid_argument(
                "The Image part is not an image cropq reads (JPEG, PNG, WebP, GIF, BMP, TIFF, HEIC, AVIF)."
            )
        return body, Upload(data, safe_file_name(image.filename), media_type)
    finally:
        await form.close()


_prepared: set[str] = set()
_prepared_lock = threading.Lock()


def store_upload(storage: S3Storage, settings: Settings, key: str, upload: Upload) -> None:
    """Write the image to the upload bucket (made, with its expiry rule, on this process's first upload).
    Raises StorageError (the route answers 503)."""
    bucket = settings.upload_bucket
    with _prepared_lock:
        if bucket not in _prepared:
            storage.ensure_bucket(bucket, expire_days=settings.upload_retention_days)
            _prepared.add(bucket)
    storage.put(bucket, key, upload.data, upload.media_type)


def discard_upload(storage: S3Storage, settings: Settings, key: str) -> None:
    """Remove an upload whose job was not accepted after all (best effort: the expiry rule is the net)."""
    try:
        storage.delete(settings.upload_bucket, key)
    except StorageError as e:
        log.warning("upload_not_removed", key=key, error=str(e))

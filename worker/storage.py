"""Object storage over the ``minio`` client: a plain S3 client (MinIO, SeaweedFS, AWS S3, ...).

Errors are split into the three kinds the task cares about: the object is missing (the job fails with
``ResourceNotFound``), the object is unacceptable (too large), and the store is unreachable or
failing (transient: Celery retries with backoff).
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Iterator
from typing import Protocol

import structlog
import urllib3
from minio import Minio
from minio.commonconfig import ENABLED, Filter
from minio.error import S3Error
from minio.lifecycleconfig import Expiration, LifecycleConfig, Rule

from worker.settings import Settings


class StorageError(Exception):
    code = "InternalError"


class ObjectNotFound(StorageError):
    code = "ResourceNotFound"


class ObjectTooLarge(StorageError):
    code = "InvalidArgument.ImageTooLarge"


class StorageUnavailable(StorageError):
    """The store did not answer or answered 5xx: worth retrying."""

    code = "ServiceUnavailable"


log = structlog.get_logger("cropq.storage")

_MISSING = {"NoSuchKey", "NoSuchBucket", "NoSuchObject", "NotFound"}


class Storage(Protocol):
    def get(self, bucket: str, key: str, max_bytes: int) -> bytes: ...

    def put(self, bucket: str, key: str, data: bytes, content_type: str) -> str: ...

    def ping(self) -> None: ...


@contextlib.contextmanager
def _store_errors(what: str) -> Iterator[None]:
    """The client's errors as the three kinds callers handle."""
    try:
        yield
    except S3Error as e:
        if e.code in _MISSING:
            raise ObjectNotFound(f"The specified resource object is not found: {what}.") from None
        raise StorageUnavailable(f"S3 error {e.code}") from None
    except (urllib3.exceptions.HTTPError, OSError) as e:
        raise StorageUnavailable(f"S3 unreachable: {type(e).__name__}") from None


class S3Storage:
    def __init__(self, settings: Settings) -> None:
        timeout = urllib3.Timeout(connect=settings.s3_timeout_seconds, read=settings.s3_timeout_seconds)
        # Retries are Celery's job (with backoff); the pool itself must fail fast.
        http = urllib3.PoolManager(timeout=timeout, retries=urllib3.Retry(total=0), maxsize=4)
        self.client = Minio(
            settings.s3_endpoint,
            access_key=settings.s3_access_key,
            secret_key=settings.s3_secret_key.get_secret_value(),
            secure=settings.s3_secure,
            region=settings.s3_region,
            http_client=http,
        )

    def get(self, bucket: str, key: str, max_bytes: int) -> bytes:
        with _store_errors(f"{bucket}/{key}"):
            stat = self.client.stat_object(bucket, key)
            if stat.size is not None and stat.size > max_bytes:
                raise ObjectTooLarge(f"The object is {stat.size} bytes; the limit is {max_bytes}.")
            resp = self.client.get_object(bucket, key)
            try:
                data: bytes = resp.read(max_bytes + 1)
            finally:
                resp.close()
                resp.release_conn()
        if len(data) > max_bytes:
            raise ObjectTooLarge(f"The object exceeds the limit of {max_bytes} bytes.")
        return data

    def put(self, bucket: str, key: str, data: bytes, content_type: str) -> str:
        """Write (or overwrite) an object; its ETag."""
        with _store_errors(f"{bucket}/{key}"):
            result = self.client.put_object(
                bucket, key, io.BytesIO(data), len(data), content_type=content_type
            )
        return str(result.etag or "").strip('"')

    def delete(self, bucket: str, key: str) -> None:
        with _store_errors(f"{bucket}/{key}"):
            self.client.remove_object(bucket, key)

    def ensure_bucket(self, bucket: str, expire_days: int | None = None) -> None:
        """Make the bucket if it is missing and, given ``expire_days``, set an expiry rule on it. A store
        without lifecycle support (some S3 servers) keeps objects: logged, not fatal."""
        with _store_errors(bucket):
            if not self.client.bucket_exists(bucket):
                with contextlib.suppress(S3Error):  # made meanwhile by another process
                    self.client.make_bucket(bucket)
        if expire_days is None:
            return
        rule = Rule(
            ENABLED,
            rule_filter=Filter(prefix=""),
            rule_id="cropq-expiry",
            expiration=Expiration(days=expire_days),
        )
        try:
            self.client.set_bucket_lifecycle(bucket, LifecycleConfig([rule]))
        except (S3Error, urllib3.exceptions.HTTPError, OSError) as e:
            log.warning("bucket_expiry_not_set", bucket=bucket, error=str(e)[:200])

    def ping(self) -> None:
        try:
            self.client.list_buckets()
        except (S3Error, urllib3.exceptions.HTTPError, OSError) as e:
            raise StorageUnavailable(f"S3 unreachable: {type(e).__name__}") from None

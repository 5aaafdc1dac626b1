"""cropq's Python client: submit crop jobs and prefix batches, wait for them with a progress callback,
list and cancel them; sync (:class:`CropqClient`) and asyncio (:class:`AsyncCropqClient`). It needs only
httpx and pydantic.

    from cropq_client import CropqClient

    with CropqClient("http://127.0.0.1:8000", "LTAI...", "secret") as c:
        rid = c.submit("shop", "oss://photos/red-shoe.jpg", ["1:1", "16:9"])
        job = c.wait("shop", rid)
"""

from cropq_client._async import AsyncCropqClient
from cropq_client._sync import CropqClient
from cropq_client.errors import (
    AccessDenied,
    ApiError,
    Conflict,
    ConnectionFailed,
    CropqError,
    InvalidArgument,
    NotFound,
    ServerError,
    Throttled,
    WaitTimeout,
)
from cropq_client.models import (
    Batch,
    BatchStatus,
    Cropping,
    Detection,
    Job,
    JobPage,
    JobStatus,
    Project,
    RenderedOutput,
    RenderSpec,
)
from cropq_client.version import __version__

__all__ = [
    "AccessDenied",
    "ApiError",
    "AsyncCropqClient",
    "Batch",
    "BatchStatus",
    "Conflict",
    "ConnectionFailed",
    "Cropping",
    "CropqClient",
    "CropqError",
    "Detection",
    "InvalidArgument",
    "Job",
    "JobPage",
    "JobStatus",
    "NotFound",
    "Project",
    "RenderSpec",
    "RenderedOutput",
    "ServerError",
    "Throttled",
    "WaitTimeout",
    "__version__",
]

"""What each client method sends and how its answer is read, with no I/O: the sync and the async client
share these, so the two stay the same client with two ways of waiting."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

from pydantic import ValidationError

from cropq_client.models import Batch, BatchStatus, Job, JobPage, JobStatus, RenderSpec

LONG_POLL_SECONDS = 20.0
"""One long-poll of a job; under the server's default cap (CROPQ_MAX_WAIT_SECONDS, 30 s)."""

RenderArg = RenderSpec | Mapping[str, Any] | None
UploadData = bytes | Path


@dataclass(frozen=True)
class Call:
    """One HTTP request of the API."""

    method: str
    path: str
    params: dict[str, str | int | float] | None = None
    json: dict[str, Any] | None = None
    files: dict[str, tuple[str | None, bytes | str, str] | tuple[str, bytes]] | None = None
    headers: dict[str, str] = field(default_factory=dict)
    read_timeout: float | None = None
    """A longer read timeout than the client's (a long-poll holds the answer back on purpose)."""


def _seg(value: str) -> str:
    """A path segment: a RequestId or project name can never reach another route."""
    return quote(value, safe="")


def project_path(project: str) -> str:
    return f"/v1/projects/{_seg(project)}"


def job_path(project: str, request_id: str | None = None) -> str:
    base = f"{project_path(project)}/crop-jobs"
    return base if request_id is None else f"{base}/{_seg(request_id)}"


def batch_path(project: str, batch_id: str | None = None) -> str:
    base = f"{project_path(project)}/crop-batches"
    return base if batch_id is None else f"{base}/{_seg(batch_id)}"


def _idempotency(key: str | None) -> dict[str, str]:
    return {"Idempotency-Key": key} if key else {}


def render_body(render: RenderArg) -> dict[str, Any] | None:
    """A RenderSpec or a plain mapping, as the API takes it (the server checks the values)."""
    if render is None:
        return None
    spec = render if isinstance(render, RenderSpec) else RenderSpec.model_validate(dict(render))
    return spec.model_dump(exclude_none=True)


def _compact(fields: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in fields.items() if v is not None}


def job_fields(
    aspect_ratios: Sequence[str] | None,
    inclusion_hints: Sequence[str] | None,
    render: RenderArg,
    callback_url: str | None,
    user_data: str | None,
) -> dict[str, Any]:
    return _compact(
        {
            "AspectRatios": list(aspect_ratios) if aspect_ratios is not None else None,
            "InclusionHints": list(inclusion_hints) if inclusion_hints is not None else None,
            "Render": render_body(render),
            "CallbackURL": callback_url,
            "UserData": user_data,
        }
    )


def submit_call(project: str, source_uri: str, fields: dict[str, Any], idempotency_key: str | None) -> Call:
    return Call(
        "POST",
        job_path(project),
        json={"SourceURI": source_uri, **fields},
        headers=_idempotency(idempotency_key),
    )


def submit_file_call(
    project: str,
    data: UploadData,
    file_name: str | None,
    fields: dict[str, Any],
    idempotency_key: str | None,
) -> Call:
    """A multipart upload: the image as ``Image``, the other job fields as JSON in ``Job``."""
    if isinstance(data, Path):
        name = file_name or data.name
        content = data.read_bytes()
    else:
        name, content = file_name or "image", bytes(data)
    return Call(
        "POST",
        job_path(project),
        files={"Image": (name, content), "Job": (None, json.dumps(fields), "application/json")},
        headers=_idempotency(idempotency_key),
    )


def get_call(project: str, request_id: str, wait: float) -> Call:
    params: dict[str, str | int | float] = {"wait": wait} if wait > 0 else {}
    return Call("GET", job_path(project, request_id), params=params, read_timeout=wait + 15 if wait else None)


def list_call(
    project: str,
    status: JobStatus | str | None,
    batch_id: str | None,
    max_results: int | None,
    next_token: str | None,
) -> Call:
    params: dict[str, str | int | float] = _compact(
        {
            "Status": JobStatus(status).value if status is not None else None,
            "BatchId": batch_id,
            "MaxResults": max_results,
            "NextToken": next_token,
        }
    )
    return Call("GET", job_path(project), params=params)


def batch_call(
    project: str,
    source_prefix: str,
    suffixes: Sequence[str] | None,
    manifest_uri: str | None,
    fields: dict[str, Any],
    idempotency_key: str | None,
) -> Call:
    body = {
        "SourcePrefix": source_prefix,
        **_compact(
            {"Suffixes": list(suffixes) if suffixes is not None else None, "ManifestURI": manifest_uri}
        ),
        **fields,
    }
    return Call("POST", batch_path(project), json=body, headers=_idempotency(idempotency_key))


def project_call(project: str, buckets: Sequence[str], writable_buckets: Sequence[str] | None) -> Call:
    body: dict[str, Any] = {"Buckets": list(buckets)}
    if writable_buckets is not None:
        body["WritableBuckets"] = list(writable_buckets)
    return Call("PUT", project_path(project), json=body)


def request_id_of(answer: Any) -> str:
    return str(answer["RequestId"])


def batch_id_of(answer: Any) -> str:
    return str(answer["BatchId"])


def job_or_none(answer: Any) -> Job | None:
    """The job in an answer that may carry one (``:cancel``), else None (then the client reads it)."""
    try:
        return Job.model_validate(answer)
    except ValidationError:
        return None


def batch_or_none(answer: Any) -> Batch | None:
    try:
        return Batch.model_validate(answer)
    except ValidationError:
        return None


def page_of(answer: Any) -> JobPage:
    return JobPage.model_validate(answer)


def timed_out(kind: str, ident: str, timeout: float, status: JobStatus | BatchStatus) -> str:
    return f"{kind} {ident} is still {status.value} after {timeout:g} s"

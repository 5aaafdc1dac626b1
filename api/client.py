"""A small typed client of the native API (httpx), used by ``cropq submit`` / ``cropq status``."""

from __future__ import annotations

import json
import time
from typing import Any

import httpx

from worker.contracts import Job


class CropqError(Exception):
    """An IMM-style error answer: ``code``, ``status`` and the server's message."""

    def __init__(self, status: int, code: str, message: str, request_id: str | None) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status, self.code, self.request_id = status, code, request_id


class CropqClient:
    def __init__(
        self, base_url: str, access_key_id: str, access_key_secret: str, timeout: float = 60
    ) -> None:
        self.http = httpx.Client(
            base_url=base_url,
            timeout=timeout,
            headers={"Authorization": f"Bearer {access_key_id}:{access_key_secret}"},
        )

    def __enter__(self) -> CropqClient:
        return self

    def __exit__(self, *_: object) -> None:
        self.http.close()

    def _call(self, method: str, path: str, **kw: Any) -> Any:
        r = self.http.request(method, path, **kw)
        if r.status_code >= 400:
            try:
                body = r.json()
            except ValueError:
                body = {}
            raise CropqError(
                r.status_code,
                body.get("Code", "Unknown"),
                body.get("Message", r.text[:200]),
                body.get("RequestId"),
            )
        return r.json()

    def put_project(
        self, project: str, buckets: list[str], writable_buckets: list[str] | None = None
    ) -> dict[str, Any]:
        body: dict[str, Any] = {"Buckets": buckets}
        if writable_buckets is not None:
            body["WritableBuckets"] = writable_buckets
        result: dict[str, Any] = self._call("PUT", f"/v1/projects/{project}", json=body)
        return result

    def submit(
        self,
        project: str,
        source_uri: str,
        aspect_ratios: list[str] | None = None,
        inclusion_hints: list[str] | None = None,
        **extra: Any,
    ) -> str:
        body = {
            "SourceURI": source_uri,
            "AspectRatios": aspect_ratios,
            "InclusionHints": inclusion_hints,
            **extra,
        }
        answer = self._call(
            "POST", f"/v1/projects/{project}/crop-jobs", json={k: v for k, v in body.items() if v is not None}
        )
        return str(answer["RequestId"])

    def submit_file(
        self,
        project: str,
        image: bytes,
        file_name: str,
        aspect_ratios: list[str] | None = None,
        inclusion_hints: list[str] | None = None,
        **extra: Any,
    ) -> str:
        """Submit the image itself (multipart upload); the RequestId."""
        fields = {"AspectRatios": aspect_ratios, "InclusionHints": inclusion_hints, **extra}
        job = json.dumps({k: v for k, v in fields.items() if v is not None})
        answer = self._call(
            "POST",
            f"/v1/projects/{project}/crop-jobs",
            files={"Image": (file_name, image), "Job": (None, job, "application/json")},
        )
        return str(answer["RequestId"])

    def get(self, project: str, request_id: str, wait: float = 0) -> Job:
        return Job.model_validate(
            self._call("GET", f"/v1/projects/{project}/crop-jobs/{request_id}", params={"wait": wait})
        )

    def wait(self, project: str, request_id: str, timeout: float = 300) -> Job:
        """Long-poll until the job ends (or ``timeout`` passes; then the last state is returned)."""
        deadline = time.monotonic() + timeout
        job = self.get(project, request_id)
        while not job.Status.finished and time.monotonic() < deadline:
            job = self.get(project, request_id, wait=min(30.0, max(0.0, deadline - time.monotonic())))
        return job

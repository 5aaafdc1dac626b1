"""An in-memory cropq API behind an httpx MockTransport, for the client and CLI tests: jobs that move one
state per read (Queued, Running, Succeeded), cursor-paginated listing, cancel and delete with the API's
409s, and prefix batches whose counts grow per read. It follows the wire contract, not the server's code."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote

import httpx

KEY_ID, KEY_SECRET = "LTAIfake", "fake-secret"
NOW = "2026-01-01T00:00:00.000Z"


def imm_error(status: int, code: str, message: str, rid: str = "R-err") -> httpx.Response:
    body = {"RequestId": rid, "HostId": "cropq", "Code": code, "Message": message, "Recommend": ""}
    return httpx.Response(status, json=body)


def new_job(rid: str, project: str, source: str, **fields: Any) -> dict[str, Any]:
    return {
        "RequestId": rid,
        "ProjectName": project,
        "Status": "Queued",
        "SourceURI": source,
        "AspectRatios": fields.get("AspectRatios") or ["auto"],
        "CreatedAt": NOW,
        **{k: v for k, v in fields.items() if k != "AspectRatios"},
    }


def succeeded(job: dict[str, Any]) -> dict[str, Any]:
    crops = [
        {
            "AspectRatio": ratio,
            "Confidence": 0.9,
            "Boundary": {"Left": 0, "Top": 0, "Width": 10, "Height": 10, "Polygon": [{"X": 0, "Y": 0}] * 4},
        }
        for ratio in job["AspectRatios"]
    ]
    return {**job, "Status": "Succeeded", "Croppings": crops, "ImageWidth": 40, "ImageHeight": 30}


@dataclass
class FakeCropq:
    max_wait: float = 30
    batch_size: int = 5
    jobs: dict[str, dict[str, Any]] = field(default_factory=dict)
    batches: dict[str, dict[str, Any]] = field(default_factory=dict)
    idempotent: dict[str, str] = field(default_factory=dict)
    requests: list[httpx.Request] = field(default_factory=list)

    def transport(self) -> httpx.MockTransport:
        return httpx.MockTransport(self.handle)

    def add_jobs(self, project: str, n: int, batch_id: str | None = None) -> list[str]:
        rids = [f"J{len(self.jobs) + i:04d}" for i in range(n)]
        for rid in rids:
            self.jobs[rid] = new_job(rid, project, f"oss://b/{rid}.jpg", BatchId=batch_id)
        return rids

    def handle(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        if request.headers.get("Authorization") != f"Bearer {KEY_ID}:{KEY_SECRET}":
            return imm_error(401, "InvalidAccessKeyId.NotFound", "The access key is not found.")
        parts = [unquote(p) for p in request.url.raw_path.decode().split("?")[0].split("/")[1:]]
        if parts[:2] != ["v1", "projects"] or len(parts) < 3:
            return imm_error(404, "ResourceNotFound", "No such route.")
        project, rest = parts[2], parts[3:]
        if not rest:
            return self._project(request, project)
        if rest[0] == "crop-jobs":
            return self._jobs(request, project, rest[1] if len(rest) > 1 else None)
        if rest[0] == "crop-batches":
            return self._batches(request, project, rest[1] if len(rest) > 1 else None)
        return imm_error(404, "ResourceNotFound", "No such route.")

    def _project(self, request: httpx.Request, project: str) -> httpx.Response:
        body = json.loads(request.content) if request.method == "PUT" else {"Buckets": []}
        answer = {
            "ProjectName": project,
            "Buckets": body["Buckets"],
            "WritableBuckets": body.get("WritableBuckets", []),
            "CreatedAt": NOW,
            "WebhookSecret": "whsec_x",
        }
        return httpx.Response(200, json=answer)

    def _submit(self, request: httpx.Request, project: str) -> httpx.Response:
        if request.headers.get("content-type", "").startswith("multipart/form-data"):
            fields = json.loads(_part(request, "Job"))
            source = f"oss://cropq-uploads/{project}/{_file_name(request)}"
        else:
            fields = json.loads(request.content)
            source = fields.pop("SourceURI")
        if "1:3" in (fields.get("AspectRatios") or []):
            return imm_error(400, "InvalidArgument", "AspectRatios: '1:3' is out of range.", "R-400")
        key = request.headers.get("Idempotency-Key")
        if key and key in self.idempotent:
            rid = self.idempotent[key]
        else:
            rid = f"J{len(self.jobs):04d}"
            self.jobs[rid] = new_job(rid, project, source, **fields)
            if key:
                self.idempotent[key] = rid
        return httpx.Response(202, json={"RequestId": rid, "Status": self.jobs[rid]["Status"]})

    def _jobs(self, request: httpx.Request, project: str, tail: str | None) -> httpx.Response:
        if tail is None:
            return (
                self._submit(request, project) if request.method == "POST" else self._list(request, project)
            )
        rid, _, action = tail.partition(":")
        job = self.jobs.get(rid)
        if job is None or job["ProjectName"] != project:
            return imm_error(404, "ResourceNotFound", f"The specified crop job {rid!r} is not found.")
        finished = job["Status"] in ("Succeeded", "Failed", "Cancelled")
        if action == "cancel":
            if finished:
                return imm_error(409, "InvalidState", f"The job already ended ({job['Status']}).", "R-409")
            job["Status"] = "Cancelled"
            return httpx.Response(200, json=job)
        if request.method == "DELETE":
            if not finished:
                return imm_error(409, "InvalidState", "Only a finished job can be deleted.")
            del self.jobs[rid]
            return httpx.Response(204)
        wait = float(request.url.params.get("wait", 0))
        if wait > self.max_wait:
            return imm_error(400, "InvalidArgument", f"wait is at most {self.max_wait:g} seconds.")
        # Each read moves the job one state on: Queued, Running, then Succeeded.
        if job["Status"] == "Queued":
            job["Status"] = "Running"
        elif job["Status"] == "Running":
            self.jobs[rid] = job = succeeded(job)
        return httpx.Response(200, json=job)

    def _list(self, request: httpx.Request, project: str) -> httpx.Response:
        q = request.url.params
        found = [
            j
            for j in reversed(self.jobs.values())  # newest first
            if j["ProjectName"] == project
            and q.get("Status", j["Status"]) == j["Status"]
            and q.get("BatchId", j.get("BatchId")) == j.get("BatchId")
        ]
        start = int(q.get("NextToken", "0"))
        size = int(q.get("MaxResults", "20"))
        if size > 100:
            return imm_error(400, "InvalidArgument", "MaxResults is at most 100.")
        page: dict[str, Any] = {"Jobs": found[start : start + size]}
        if start + size < len(found):
            page["NextToken"] = str(start + size)
        return httpx.Response(200, json=page)

    def _batches(self, request: httpx.Request, project: str, tail: str | None) -> httpx.Response:
        if tail is None:
            body = json.loads(request.content)
            bid = f"B{len(self.batches):04d}"
            self.batches[bid] = {
                "BatchId": bid,
                "ProjectName": project,
                "Status": "Listing",
                "CreatedAt": NOW,
                "AspectRatios": body.get("AspectRatios") or ["auto"],
                **body,
            }
            return httpx.Response(202, json={"BatchId": bid, "Status": "Listing"})
        bid, _, action = tail.partition(":")
        batch = self.batches.get(bid)
        if batch is None or batch["ProjectName"] != project:
            return imm_error(404, "ResourceNotFound", f"The specified crop batch {bid!r} is not found.")
        if action == "cancel":
            batch |= {"Status": "Cancelled", "Cancelled": batch.get("Total", 0) - batch.get("Succeeded", 0)}
            batch |= {"Pending": 0, "FinishedAt": "2026-01-01T00:00:10.000Z"}
            return httpx.Response(200, json=batch)
        if batch["Status"] in ("Listing", "Running"):
            self._advance(batch)
        return httpx.Response(200, json=batch)

    def _advance(self, batch: dict[str, Any]) -> None:
        """One read: while listing, two more objects are found and one job ends; then one job per read."""
        total, done = batch.get("Total", 0), batch.get("Succeeded", 0)
        if batch["Status"] == "Listing":
            total = min(self.batch_size, total + 2)
            batch["Status"] = "Running" if total == self.batch_size else "Listing"
        done = min(total, done + 1)
        batch |= {"Total": total, "Succeeded": done, "Pending": total - done}
        if batch["Status"] == "Running" and done == total:
            batch |= {"Status": "Succeeded", "FinishedAt": "2026-01-01T00:00:10.000Z"}


def _part(request: httpx.Request, name: str) -> bytes:
    """A multipart part's body (enough of a parser for httpx's own encoding)."""
    boundary = request.headers["content-type"].split("boundary=")[1].encode()
    for chunk in request.content.split(b"--" + boundary):
        head, _, body = chunk.partition(b"\r\n\r\n")
        if f'name="{name}"'.encode() in head:
            return body.rsplit(b"\r\n", 1)[0]
    raise KeyError(name)


def _file_name(request: httpx.Request) -> str:
    boundary = request.headers["content-type"].split("boundary=")[1].encode()
    for chunk in request.content.split(b"--" + boundary):
        head = chunk.partition(b"\r\n\r\n")[0].decode("latin-1")
        if 'name="Image"' in head:
            return head.split('filename="')[1].split('"')[0]
    raise KeyError("Image")

"""Job listing, cancel and delete on a real stack: every transition of docs/job-states.md that the API
and the worker make, seen from the outside."""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest
import redis

from tests.conftest import Stack
from tests.integration.helpers import jpeg, submit, wait_done
from worker import keys
from worker.batches import new_record
from worker.contracts import Batch, BatchStatus, Job, JobStatus, utcnow_iso
from worker.job_index import index_new_job

pytestmark = pytest.mark.integration


class Hooks:
    """A callback receiver keeping every event body."""

    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                outer.events.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


class GatedImage:
    """An http source that answers only once released: its job stays Running as long as the test wants."""

    def __init__(self, data: bytes) -> None:
        self.asked = threading.Event()
        self.release = threading.Event()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                outer.asked.set()
                outer.release.wait(60)
                self.send_response(200)
                self.send_header("Content-Type", "image/jpeg")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/slow.jpg"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


def _listing(c: httpx.Client, project: str, **params: Any) -> dict[str, Any]:
    r = c.get(f"/v1/projects/{project}/crop-jobs", params=params)
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


def _ids(c: httpx.Client, project: str, **params: Any) -> list[str]:
    """Every page, in order."""
    seen: list[str] = []
    token = None
    while True:
        body = _listing(c, project, **params, **({"NextToken": token} if token else {}))
        seen += [j["RequestId"] for j in body["Jobs"]]
        token = body.get("NextToken")
        if token is None:
            return seen


def _job(c: httpx.Client, project: str, rid: str) -> dict[str, Any]:
    r = c.get(f"/v1/projects/{project}/crop-jobs/{rid}")
    assert r.status_code == 200, r.text
    job: dict[str, Any] = r.json()
    return job


def _until(what: str, check: Any, timeout: float = 60) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = check()
        if got:
            return got
        time.sleep(0.1)
    raise AssertionError(f"{what} not seen in {timeout} s")


def test_listing_cancel_and_delete_through_every_state(make_stack: Any) -> None:
    # No worker at first: submitted jobs stay Queued until one is added.
    stack: Stack = make_stack(workers=0, source_allowed_cidrs='["127.0.0.0/8"]')
    project, bucket = stack.project()
    other, _ = stack.project()
    hooks = Hooks()
    gated = GatedImage(jpeg(320, 240))
    uri = stack.put(bucket, "photo.jpg", jpeg(320, 240))
    body = {"SourceURI": uri, "AspectRatios": ["1:1"]}
    with stack.http() as c:
        a = submit(c, project, body)
        b = submit(c, project, {**body, "CallbackURL": hooks.url})
        cc = submit(c, project, body)

        # Listing: newest first, paged; a job submitted while paging never shifts the pages given.
        first = _listing(c, project, MaxResults=2)
        assert [j["RequestId"] for j in first["Jobs"]] == [cc, b] and first["Jobs"][0]["Status"] == "Queued"
        d = submit(c, project, body)
        last = _listing(c, project, MaxResults=2, NextToken=first["NextToken"])
        assert [j["RequestId"] for j in last["Jobs"]] == [a] and "NextToken" not in last
        assert _ids(c, project, MaxResults=1) == [d, cc, b, a]
        assert _ids(c, project, Status="Queued") == [d, cc, b, a]
        assert _ids(c, other) == []

        # Bad parameters and tokens are 400s; another project's token is refused there.
        for params in (
            {"MaxResults": 0},
            {"MaxResults": 101},
            {"Status": "Done"},
            {"NextToken": "garbage"},
            {"NextToken": first["NextToken"][:-3] + "AAA"},
            {"BatchId": "a:b"},
        ):
            r = c.get(f"/v1/projects/{project}/crop-jobs", params=params)
            assert (r.status_code, r.json()["Code"]) == (400, "InvalidArgument"), (params, r.text)
        r = c.get(f"/v1/projects/{other}/crop-jobs", params={"NextToken": first["NextToken"]})
        assert r.status_code == 400

        # Queued -> Cancelled (API): its callback goes once a callback worker runs.
        r = c.post(f"/v1/projects/{project}/crop-jobs/{b}:cancel")
        assert r.status_code == 200, r.text
        assert (r.json()["Status"], r.json()["Code"]) == ("Cancelled", "Cancelled")
        r = c.post(f"/v1/projects/{project}/crop-jobs/{b}:cancel")
        assert (r.status_code, r.json()["Code"]) == (409, "InvalidState")
        r = c.delete(f"/v1/projects/{project}/crop-jobs/{a}")
        assert (r.status_code, r.json()["Code"]) == (409, "InvalidState")
        assert _ids(c, project, Status="Cancelled") == [b]
        assert _ids(c, project, Status="Queued") == [d, cc, a]

        # Another project's job is not found, exactly like a missing one.
        for method, path in (("POST", f"{b}:cancel"), ("DELETE", a), ("POST", "NOSUCHJOB:cancel")):
            r = c.request(method, f"/v1/projects/{other}/crop-jobs/{path}")
            assert (r.status_code, r.json()["Code"]) == (404, "ResourceNotFound"), (method, path)
        assert c.delete(f"/v1/projects/{project}/crop-jobs/NOSUCHJOB").status_code == 404

        # A worker arrives: the cancelled job's message is met and does nothing; the others run.
        stack.add_worker()
        for rid in (a, cc, d):
            assert wait_done(c, project, rid)["Status"] == "Succeeded"
        cancelled = _job(c, project, b)
        assert cancelled["Status"] == "Cancelled" and "StartedAt" not in cancelled
        assert "Croppings" not in cancelled
        event = _until("the cancelled callback", lambda: hooks.events)[0]
        assert event["type"] == "crop-job.cancelled" and event["data"]["RequestId"] == b
        assert _ids(c, project, Status="Succeeded") == [d, cc, a]

        # Succeeded -> cancel refused; a finished job is deleted: its record and its listing entry go.
        r = c.post(f"/v1/projects/{project}/crop-jobs/{a}:cancel")
        assert (r.status_code, r.json()["Code"]) == (409, "InvalidState")
        assert c.delete(f"/v1/projects/{project}/crop-jobs/{a}").status_code == 204
        assert c.get(f"/v1/projects/{project}/crop-jobs/{a}").status_code == 404
        assert c.delete(f"/v1/projects/{project}/crop-jobs/{a}").status_code == 404
        assert _ids(c, project) == [d, cc, b]
        assert c.delete(f"/v1/projects/{project}/crop-jobs/{b}").status_code == 204  # Cancelled too
        assert _ids(c, project) == [d, cc]

        # Running -> Cancelled: the run goes on (its source is held back) but its result is discarded.
        slow = submit(c, project, {**body, "SourceURI": gated.url})
        assert gated.asked.wait(60)
        assert _job(c, project, slow)["Status"] == "Running"
        r = c.post(f"/v1/projects/{project}/crop-jobs/{slow}:cancel")
        assert r.status_code == 200, r.text
        gated.release.set()
        after = submit(c, project, body)  # one worker, one job at a time: runs once the slow one ended
        assert wait_done(c, project, after)["Status"] == "Succeeded"
        ended = _job(c, project, slow)
        assert ended["Status"] == "Cancelled" and "Croppings" not in ended and "StartedAt" in ended


def test_batch_filter_and_its_tenant_check(make_stack: Any) -> None:
    stack: Stack = make_stack(workers=0)
    project, _ = stack.project()
    other, _ = stack.project()
    r = redis.Redis.from_url(stack.redis_url)
    batch = Batch(
        BatchId="BTEST" + project,
        ProjectName=project,
        Status=BatchStatus.RUNNING,
        SourcePrefix="oss://b/p/",
        AspectRatios=["1:1"],
        CreatedAt=utcnow_iso(),
    )
    r.hset(keys.batch(batch.BatchId), mapping=new_record(batch))
    r.expire(keys.batch(batch.BatchId), 600)
    for i, status in enumerate((JobStatus.QUEUED, JobStatus.FAILED, JobStatus.QUEUED)):
        job = Job(
            RequestId=f"{batch.BatchId}-{i}",
            ProjectName=project,
            Status=status,
            BatchId=batch.BatchId,
            SourceURI=f"oss://b/p/{i}.jpg",
            AspectRatios=["1:1"],
            CreatedAt=utcnow_iso(),
        )
        with r.pipeline() as pipe:  # recorded and indexed as the batch feeder does
            pipe.set(keys.job(job.RequestId), job.model_dump_json(exclude_none=True), ex=600)
            index_new_job(pipe, job, 600)
            pipe.execute()
        time.sleep(0.002)  # distinct creation ms: a known order
    with stack.http() as c:
        assert _ids(c, project, BatchId=batch.BatchId, MaxResults=2) == [
            f"{batch.BatchId}-{i}" for i in (2, 1, 0)
        ]
        assert _listing(c, project, BatchId=batch.BatchId)["Jobs"][0]["BatchId"] == batch.BatchId
        assert _ids(c, project, BatchId=batch.BatchId, Status="Failed") == [f"{batch.BatchId}-1"]
        for name, batch_id in ((other, batch.BatchId), (project, "NOSUCHBATCH")):
            resp = c.get(f"/v1/projects/{name}/crop-jobs", params={"BatchId": batch_id})
            assert (resp.status_code, resp.json()["Code"]) == (404, "ResourceNotFound")

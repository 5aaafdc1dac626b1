"""Prefix batches on a real stack: a 200-object batch ends with exact counts and a manifest naming every
object once, its progress never goes backwards, a cancelled batch leaves no job queued, idempotency, the
manifest's bucket check and tenancy."""

from __future__ import annotations

import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest
import redis
from standardwebhooks import Webhook

from tests.integration.helpers import jpeg
from tests.security.signatures_support import new_key
from worker import keys
from worker.batches import queued_messages
from worker.contracts import batch_queue

pytestmark = pytest.mark.integration

OBJECTS = 200  # the black-box check runs 500; 200 keep every behaviour and half the time
COUNTS = ("Total", "Succeeded", "Failed", "Cancelled")


class Receiver:
    """Keeps every callback POSTed to it and answers 200."""

    def __init__(self) -> None:
        self.requests: list[tuple[dict[str, str], bytes]] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                outer.requests.append(({k.lower(): v for k, v in self.headers.items()}, body))
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hooks"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


@pytest.fixture(scope="module")
def world(make_stack: Any) -> dict[str, Any]:
    """A stack, a project reading ``bucket`` (200 tiny JPEGs under photos/ and a few other objects) and
    writing ``out``."""
    # Tiny images, no object detector: the batch machinery is what is tested, not the engine's speed.
    stack = make_stack(workers=2, object_detection="off")
    project, bucket = stack.project()
    out = f"{bucket}-out"
    s3 = stack.s3.client()
    s3.make_bucket(out)
    with stack.http() as c:
        c.put(
            f"/v1/projects/{project}", json={"Buckets": [bucket], "WritableBuckets": [out]}
        ).raise_for_status()
    images = [jpeg(64, 48, patch=(16 + i * 8, 24), seed=i) for i in range(4)]
    names = [f"photos/{i:04d}.jpg" for i in range(OBJECTS)]
    with ThreadPoolExecutor(16) as pool:
        list(pool.map(lambda n: stack.put(bucket, n[1], images[n[0] % 4]), enumerate(names)))
    for extra in ("photos/readme.txt", "photos/sub/", "other/0000.jpg"):
        stack.put(bucket, extra, b"x")
    return {"stack": stack, "project": project, "bucket": bucket, "out": out, "names": names}


def _submit(c: httpx.Client, project: str, body: dict[str, Any], replay: bool = False, **kw: Any) -> str:
    r = c.post(f"/v1/projects/{project}/crop-batches", json=body, **kw)
    assert r.status_code == 202, r.text
    # A replay (same Idempotency-Key) answers with the batch as it is now: its feeder may have listed on.
    assert r.json()["Status"] in (("Listing", "Running") if replay else ("Listing",)), r.text
    return str(r.json()["BatchId"])


def _get(c: httpx.Client, project: str, batch_id: str) -> dict[str, Any]:
    r = c.get(f"/v1/projects/{project}/crop-batches/{batch_id}")
    assert r.status_code == 200, r.text
    return dict(r.json())


def _follow(c: httpx.Client, project: str, batch_id: str, until: Any, timeout: float = 90) -> dict[str, Any]:
    """Poll until ``until(batch)``, checking that the counts never go backwards on the way."""
    last: dict[str, Any] | None = None
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        batch = _get(c, project, batch_id)
        if last is not None:
            assert all(batch[k] >= last[k] for k in COUNTS), (last, batch)
            if last["Status"] != "Listing":
                assert batch["Total"] == last["Total"] and batch["Pending"] <= last["Pending"], (last, batch)
        last = batch
        if until(batch):
            return batch
        time.sleep(0.1)
    raise AssertionError(f"batch {batch_id} is still {last}")


def test_a_prefix_batch_crops_every_object_once_and_writes_its_manifest(world: dict[str, Any]) -> None:
    stack, project, bucket, out = world["stack"], world["project"], world["bucket"], world["out"]
    body = {
        "SourcePrefix": f"oss://{bucket}/photos/",
        "Suffixes": [".JPG"],
        "AspectRatios": ["1:1", "16:9"],
        "ManifestURI": f"oss://{out}/manifests/{{BatchId}}.jsonl",
    }
    with stack.http() as c:
        batch_id = _submit(c, project, body, headers={"Idempotency-Key": "batch-one"})
        assert _submit(c, project, body, replay=True, headers={"Idempotency-Key": "batch-one"}) == batch_id
        batch = _follow(c, project, batch_id, lambda b: b.get("FinishedAt"))
    assert batch["Status"] == "Succeeded", batch
    assert {k: batch[k] for k in (*COUNTS, "Pending")} == {
        "Total": OBJECTS,
        "Succeeded": OBJECTS,
        "Failed": 0,
        "Cancelled": 0,
        "Pending": 0,
    }
    assert batch["ManifestURI"] == f"oss://{out}/manifests/{batch_id}.jsonl"
    raw = stack.s3.client().get_object(out, f"manifests/{batch_id}.jsonl").read()
    lines = [json.loads(line) for line in raw.decode().splitlines()]
    assert sorted(line["SourceURI"] for line in lines) == [f"oss://{bucket}/{n}" for n in world["names"]]
    assert len({line["RequestId"] for line in lines}) == OBJECTS
    assert all(line["Status"] == "Succeeded" and len(line["Croppings"]) == 2 for line in lines)
    with stack.http() as c:  # a job of the batch is an ordinary job that names its batch
        job = c.get(f"/v1/projects/{project}/crop-jobs/{lines[0]['RequestId']}").json()
    assert job["BatchId"] == batch_id and job["Status"] == "Succeeded"


def test_cancelling_a_batch_midway_leaves_nothing_queued(world: dict[str, Any]) -> None:
    stack, project, bucket = world["stack"], world["project"], world["bucket"]
    receiver = Receiver()
    body = {
        "SourcePrefix": f"oss://{bucket}/photos/",
        "Suffixes": [".jpg"],
        "AspectRatios": ["1:1"],
        "CallbackURL": receiver.url,
        "UserData": "second",
    }
    with stack.http() as c:
        batch_id = _submit(c, project, body)
        _follow(c, project, batch_id, lambda b: b["Status"] == "Running" and b["Succeeded"] >= 20)
        r = c.post(f"/v1/projects/{project}/crop-batches/{batch_id}:cancel")
        assert r.status_code == 200, r.text
        assert r.json()["Status"] == "Cancelled"
        client = redis.Redis.from_url(stack.redis_url, decode_responses=True)
        fed = int(client.hget(keys.batch(batch_id), "Fed") or 0)
        assert 20 <= fed < OBJECTS
        records = client.mget([keys.job(f"{batch_id}-{n}") for n in range(1, fed + 1)])
        states = [json.loads(raw)["Status"] for raw in records if raw]
        assert len(states) == fed and "Queued" not in states
        queue = batch_queue(stack.env["CROPQ_QUEUE_NAME"])
        assert not [t for t, _ in queued_messages(client, queue) if t.startswith(f"{batch_id}-")]
        batch = _follow(c, project, batch_id, lambda b: b.get("FinishedAt"))
        again = c.post(f"/v1/projects/{project}/crop-batches/{batch_id}:cancel")
    assert batch["Status"] == "Cancelled" and batch["Pending"] == 0, batch
    assert batch["Succeeded"] + batch["Failed"] + batch["Cancelled"] == OBJECTS
    assert batch["Succeeded"] >= 20 and batch["Cancelled"] >= OBJECTS - fed
    assert again.status_code == 200 and again.json()["Status"] == "Cancelled"  # cancelling again is a no-op
    # One signed crop-batch.finished callback, verified with the project's secret, carrying the final counts.
    deadline = time.monotonic() + 20
    while not receiver.requests and time.monotonic() < deadline:
        time.sleep(0.1)
    time.sleep(1.0)
    (headers, raw), *more = receiver.requests
    assert more == []
    with stack.http() as c:
        secret = c.get(f"/v1/projects/{project}").json()["WebhookSecret"]
    event = Webhook(secret).verify(raw, headers)
    assert event["type"] == "crop-batch.finished" and headers["webhook-id"] == batch_id
    fields = ("BatchId", "Status", "Total", "Succeeded", "Cancelled", "UserData")
    assert {k: event["data"][k] for k in fields} == {k: batch[k] for k in fields}
    receiver.server.shutdown()


def test_a_manifest_outside_the_writable_buckets_is_refused(world: dict[str, Any]) -> None:
    stack, project, bucket = world["stack"], world["project"], world["bucket"]
    with stack.http() as c:
        r = c.post(
            f"/v1/projects/{project}/crop-batches",
            json={"SourcePrefix": f"oss://{bucket}/photos/", "ManifestURI": f"oss://{bucket}/m.jsonl"},
        )
    assert r.status_code == 400 and r.json()["Code"] == "InvalidArgument"
    assert "not writable" in r.json()["Message"]


def test_another_projects_batch_is_not_found(world: dict[str, Any]) -> None:
    stack, project, bucket = world["stack"], world["project"], world["bucket"]
    with stack.http() as c:
        batch_id = _submit(c, project, {"SourcePrefix": f"oss://{bucket}/other/"})
    other, _ = stack.project()
    key_id, secret = new_key(stack, other)
    with httpx.Client(base_url=stack.url, headers={"Authorization": f"Bearer {key_id}:{secret}"}) as c:
        for r in (
            c.get(f"/v1/projects/{other}/crop-batches/{batch_id}"),
            c.post(f"/v1/projects/{other}/crop-batches/{batch_id}:cancel"),
        ):
            assert r.status_code == 404 and r.json()["Code"] == "ResourceNotFound", r.text
        assert c.get(f"/v1/projects/{project}/crop-batches/{batch_id}").status_code == 403

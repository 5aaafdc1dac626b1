"""cropq_client against an in-memory API (httpx MockTransport): what each method sends, how answers and
errors are read, pagination, waiting with progress, and the async client's parity with the sync one."""

from __future__ import annotations

import asyncio
import inspect
import json
from pathlib import Path
from typing import Any

import httpx
import pytest
from cropq_client import (
    AccessDenied,
    ApiError,
    AsyncCropqClient,
    Batch,
    BatchStatus,
    Conflict,
    ConnectionFailed,
    CropqClient,
    InvalidArgument,
    Job,
    JobStatus,
    NotFound,
    RenderSpec,
    ServerError,
    Throttled,
    WaitTimeout,
)

from tests.unit.fake_cropq import KEY_ID, KEY_SECRET, FakeCropq, _part, imm_error

URL = "http://cropq.test"


@pytest.fixture
def fake() -> FakeCropq:
    return FakeCropq()


@pytest.fixture
def client(fake: FakeCropq) -> CropqClient:
    return CropqClient(URL, KEY_ID, KEY_SECRET, transport=fake.transport())


def answering(response: httpx.Response) -> CropqClient:
    return CropqClient(URL, KEY_ID, KEY_SECRET, transport=httpx.MockTransport(lambda _: response))


def test_submit_sends_the_job_fields_and_answers_the_request_id(client: CropqClient, fake: FakeCropq) -> None:
    rid = client.submit(
        "shop",
        "oss://photos/a.jpg",
        ["1:1", "16:9"],
        ["face"],
        render=RenderSpec(TargetURI="oss://thumbs/{Stem}/{Ratio}.webp", Format="webp", MaxWidth=400),
        callback_url="https://hooks.example/x",
        user_data="u1",
        idempotency_key="k1",
    )
    sent = fake.requests[-1]
    assert (sent.method, sent.url.path) == ("POST", "/v1/projects/shop/crop-jobs")
    assert sent.headers["Idempotency-Key"] == "k1" and sent.headers["User-Agent"].startswith("cropq-client/")
    assert json.loads(sent.content) == {
        "SourceURI": "oss://photos/a.jpg",
        "AspectRatios": ["1:1", "16:9"],
        "InclusionHints": ["face"],
        "Render": {
            "TargetURI": "oss://thumbs/{Stem}/{Ratio}.webp",
            "Format": "webp",
            "Quality": 82,
            "MaxWidth": 400,
            "KeepMetadata": False,
        },
        "CallbackURL": "https://hooks.example/x",
        "UserData": "u1",
    }
    assert fake.jobs[rid]["SourceURI"] == "oss://photos/a.jpg"
    # The same key answers the same job; unset fields are not sent at all.
    assert client.submit("shop", "oss://photos/a.jpg", idempotency_key="k1") == rid
    assert json.loads(fake.requests[-1].content) == {"SourceURI": "oss://photos/a.jpg"}


def test_a_render_mapping_is_checked_by_the_client_model(client: CropqClient, fake: FakeCropq) -> None:
    client.submit(
        "shop", "oss://photos/a.jpg", render={"TargetURI": "oss://t/{RequestId}.png", "Format": "png"}
    )
    assert json.loads(fake.requests[-1].content)["Render"]["Format"] == "png"
    with pytest.raises(ValueError, match="Format"):
        client.submit("shop", "oss://photos/a.jpg", render={"TargetURI": "oss://t/x.gif", "Format": "gif"})


def test_submit_file_uploads_bytes_or_a_path(client: CropqClient, fake: FakeCropq, tmp_path: Path) -> None:
    image = tmp_path / "holiday.jpg"
    image.write_bytes(b"\xff\xd8\xff-not-really-a-jpeg")
    rid = client.submit_file("shop", image, aspect_ratios=["4:3"], idempotency_key="up1")
    sent = fake.requests[-1]
    assert sent.headers["content-type"].startswith("multipart/form-data")
    assert _part(sent, "Image") == image.read_bytes()
    assert json.loads(_part(sent, "Job")) == {"AspectRatios": ["4:3"]}
    assert fake.jobs[rid]["SourceURI"].endswith("/holiday.jpg")
    rid2 = client.submit_file("shop", b"\x89PNG...", "poster.png")
    assert fake.jobs[rid2]["SourceURI"].endswith("/poster.png") and rid2 != rid
    assert fake.jobs[client.submit_file("shop", b"\x89PNG...")]["SourceURI"].endswith("/image")


def test_get_long_polls_with_wait_and_reads_a_typed_job(client: CropqClient, fake: FakeCropq) -> None:
    (rid,) = fake.add_jobs("shop", 1)
    job = client.get("shop", rid, wait=5)
    assert fake.requests[-1].url.params["wait"] == "5"
    assert isinstance(job, Job) and job.Status is JobStatus.RUNNING
    done = client.get("shop", rid)
    assert "wait" not in fake.requests[-1].url.params
    assert done.Status.finished and done.Croppings and done.Croppings[0].Boundary.Width == 10


def test_wait_reports_every_state_and_returns_the_finished_job(client: CropqClient, fake: FakeCropq) -> None:
    (rid,) = fake.add_jobs("shop", 1)
    seen: list[JobStatus] = []
    job = client.wait("shop", rid, on_progress=lambda j: seen.append(j.Status))
    assert seen == [JobStatus.RUNNING, JobStatus.SUCCEEDED] and job.Status is JobStatus.SUCCEEDED
    assert all(0 < float(r.url.params["wait"]) <= 20 for r in fake.requests[1:])


def test_wait_gives_up_with_the_last_state(client: CropqClient, fake: FakeCropq) -> None:
    (rid,) = fake.add_jobs("shop", 1)
    with pytest.raises(WaitTimeout, match="still Running") as e:
        client.wait("shop", rid, timeout=0)
    assert isinstance(e.value.last, Job) and e.value.last.Status is JobStatus.RUNNING


def test_wait_falls_back_to_polling_when_the_server_caps_long_polls(
    client: CropqClient, fake: FakeCropq, monkeypatch: pytest.MonkeyPatch
) -> None:
    import time

    naps: list[float] = []
    monkeypatch.setattr(time, "sleep", naps.append)
    fake.max_wait = 0
    (rid,) = fake.add_jobs("shop", 1)
    assert client.wait("shop", rid).Status is JobStatus.SUCCEEDED
    assert naps and all(0 < n <= 1 for n in naps)
    assert "wait" not in fake.requests[-1].url.params


def test_list_jobs_pages_through_every_job_once_newest_first(client: CropqClient, fake: FakeCropq) -> None:
    rids = fake.add_jobs("shop", 7)
    fake.add_jobs("other", 2)
    listed = [j.RequestId for j in client.list_jobs("shop", max_results=3)]
    assert listed == rids[::-1]
    pages = [r for r in fake.requests if r.method == "GET"]
    assert [p.url.params.get("NextToken") for p in pages] == [None, "3", "6"]
    assert all(p.url.params["MaxResults"] == "3" for p in pages)


def test_list_jobs_filters_and_stops_at_the_limit(client: CropqClient, fake: FakeCropq) -> None:
    fake.add_jobs("shop", 3)
    in_batch = fake.add_jobs("shop", 4, batch_id="B1")
    assert [j.RequestId for j in client.list_jobs("shop", batch_id="B1")] == in_batch[::-1]
    fake.requests.clear()
    assert len(list(client.list_jobs("shop", "Queued", max_results=2, limit=3))) == 3
    assert len(fake.requests) == 2  # the page after the limit is never asked for
    assert fake.requests[0].url.params["Status"] == "Queued"
    page = client.list_jobs_page("shop", JobStatus.QUEUED, max_results=5)
    assert len(page.Jobs) == 5 and page.NextToken == "5"
    with pytest.raises(ValueError):
        client.list_jobs_page("shop", "Done")  # not a JobStatus: refused before anything is sent


def test_cancel_and_delete_follow_the_job_lifecycle(client: CropqClient, fake: FakeCropq) -> None:
    queued, done = fake.add_jobs("shop", 2)
    fake.jobs[done] = {**fake.jobs[done], "Status": "Succeeded"}
    assert client.cancel("shop", queued).Status is JobStatus.CANCELLED
    assert fake.requests[-1].url.path == f"/v1/projects/shop/crop-jobs/{queued}:cancel"
    with pytest.raises(Conflict) as e:
        client.cancel("shop", done)
    assert (e.value.status, e.value.code, e.value.request_id) == (409, "InvalidState", "R-409")
    assert e.value.message == "The job already ended (Succeeded)."
    client.delete("shop", done)
    with pytest.raises(NotFound):
        client.get("shop", done)
    (running,) = fake.add_jobs("shop", 1)
    with pytest.raises(Conflict):
        client.delete("shop", running)


def test_a_cancel_answer_without_the_job_is_followed_by_a_read(fake: FakeCropq) -> None:
    (rid,) = fake.add_jobs("shop", 1)

    def handle(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith(":cancel"):
            fake.jobs[rid]["Status"] = "Cancelled"
            return httpx.Response(204)
        return fake.handle(request)

    with CropqClient(URL, KEY_ID, KEY_SECRET, transport=httpx.MockTransport(handle)) as c:
        assert c.cancel("shop", rid).Status is JobStatus.CANCELLED


def test_batches_submit_wait_with_progress_and_cancel(client: CropqClient, fake: FakeCropq) -> None:
    batch = client.submit_batch(
        "shop",
        "oss://photos/products/",
        ["1:1", "16:9"],
        suffixes=[".jpg", ".png"],
        render={"TargetURI": "oss://thumbs/{Stem}/{Ratio}.jpg"},
        manifest_uri="oss://thumbs/manifest.jsonl",
        idempotency_key="b1",
    )
    post = next(r for r in fake.requests if r.method == "POST")
    assert post.url.path == "/v1/projects/shop/crop-batches" and post.headers["Idempotency-Key"] == "b1"
    body = json.loads(post.content)
    assert body["SourcePrefix"] == "oss://photos/products/" and body["Suffixes"] == [".jpg", ".png"]
    assert body["ManifestURI"] == "oss://thumbs/manifest.jsonl" and body["AspectRatios"] == ["1:1", "16:9"]
    assert isinstance(batch, Batch) and batch.Status is BatchStatus.LISTING  # read back after the 202
    seen: list[Batch] = []
    final = client.wait_batch("shop", batch.BatchId, on_progress=seen.append, poll_interval=0)
    assert final.Status is BatchStatus.SUCCEEDED and final.Succeeded == final.Total == 5
    assert seen[-1] == final and seen[0].Status is BatchStatus.LISTING
    done = [b.done for b in seen]
    assert done == sorted(done) and seen[-1].Pending == 0
    other = client.submit_batch("shop", "oss://photos/other/")
    cancelled = client.cancel_batch("shop", other.BatchId)
    assert cancelled.Status is BatchStatus.CANCELLED and cancelled.Pending == 0
    with pytest.raises(NotFound):
        client.get_batch("elsewhere", other.BatchId)


def test_wait_batch_gives_up_after_its_timeout(client: CropqClient, fake: FakeCropq) -> None:
    batch = client.submit_batch("shop", "oss://photos/p/")
    with pytest.raises(WaitTimeout) as e:
        client.wait_batch("shop", batch.BatchId, timeout=0, poll_interval=0)
    assert isinstance(e.value.last, Batch) and not e.value.last.Status.finished


def test_put_project_answers_a_project(client: CropqClient, fake: FakeCropq) -> None:
    project = client.put_project("shop", ["photos"], ["thumbs"])
    assert project.Buckets == ["photos"] and project.WritableBuckets == ["thumbs"]
    assert json.loads(fake.requests[-1].content) == {"Buckets": ["photos"], "WritableBuckets": ["thumbs"]}
    client.put_project("shop", ["photos"])
    assert json.loads(fake.requests[-1].content) == {"Buckets": ["photos"]}  # writable buckets kept
    assert client.get_project("shop").ProjectName == "shop"


def test_ids_are_one_path_segment(client: CropqClient, fake: FakeCropq) -> None:
    with pytest.raises(NotFound):
        client.get("shop", "../other/crop-jobs/x")
    assert fake.requests[-1].url.raw_path == b"/v1/projects/shop/crop-jobs/..%2Fother%2Fcrop-jobs%2Fx"


@pytest.mark.parametrize(
    ("response", "kind", "code"),
    [
        (imm_error(400, "InvalidArgument", "bad"), InvalidArgument, "InvalidArgument"),
        (imm_error(401, "InvalidAccessKeyId.NotFound", "who"), AccessDenied, "InvalidAccessKeyId.NotFound"),
        (imm_error(403, "Forbidden", "not yours"), AccessDenied, "Forbidden"),
        (imm_error(404, "ResourceNotFound", "gone"), NotFound, "ResourceNotFound"),
        (imm_error(409, "InvalidState", "ended"), Conflict, "InvalidState"),
        (imm_error(413, "RequestEntityTooLarge", "big"), ApiError, "RequestEntityTooLarge"),
        (imm_error(503, "ServiceUnavailable", "later"), ServerError, "ServiceUnavailable"),
        (httpx.Response(502, text="<html>bad gateway</html>"), ServerError, "Bad Gateway"),
    ],
)
def test_error_answers_become_typed_exceptions(
    response: httpx.Response, kind: type[ApiError], code: str
) -> None:
    with pytest.raises(kind) as e, answering(response) as c:
        c.get("shop", "J1")
    assert type(e.value) is kind and e.value.status == response.status_code and e.value.code == code
    body = response.json() if code != "Bad Gateway" else {"Message": "<html>bad gateway</html>"}
    assert e.value.message == body["Message"] and e.value.request_id == body.get("RequestId")
    assert str(e.value).startswith(f"{response.status_code} {code}: ")


def test_throttling_carries_the_servers_retry_advice() -> None:
    throttled = imm_error(429, "Throttling", "slow down")
    throttled.headers["x-acs-retry-after"] = "1500"  # milliseconds, as IMM
    with pytest.raises(Throttled) as e, answering(throttled) as c:
        c.submit("shop", "oss://b/k.jpg")
    assert e.value.retry_after == 1.5 and e.value.code == "Throttling"


def test_an_unreachable_server_is_connection_failed() -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    with (
        CropqClient(URL, KEY_ID, KEY_SECRET, transport=httpx.MockTransport(refuse)) as c,
        pytest.raises(ConnectionFailed, match=r"cannot reach http://cropq\.test: connection refused"),
    ):
        c.get("shop", "J1")


def test_wrong_keys_are_access_denied(fake: FakeCropq) -> None:
    with CropqClient(URL, KEY_ID, "wrong", transport=fake.transport()) as c, pytest.raises(AccessDenied):
        c.submit("shop", "oss://b/k.jpg")


def test_models_ignore_fields_a_newer_server_adds(fake: FakeCropq) -> None:
    (rid,) = fake.add_jobs("shop", 1)
    fake.jobs[rid] |= {"Priority": 5, "Render": {"TargetURI": "oss://t/x.jpg", "Sharpen": True}}
    with CropqClient(URL, KEY_ID, KEY_SECRET, transport=fake.transport()) as c:
        job = c.get("shop", rid)
    assert job.Render is not None and job.Render.TargetURI == "oss://t/x.jpg"
    assert "Priority" not in job.model_dump()


# --- the async client is the same client ---


def _public_methods(cls: type) -> dict[str, inspect.Signature]:
    return {n: inspect.signature(f) for n, f in vars(cls).items() if callable(f) and not n.startswith("_")}


def test_the_async_client_has_every_method_with_the_same_parameters() -> None:
    sync, asyn = _public_methods(CropqClient), _public_methods(AsyncCropqClient)
    assert set(sync) - {"close"} == set(asyn) - {"aclose"}
    for name, sig in sync.items():
        if name == "close":
            continue
        assert list(sig.parameters) == list(asyn[name].parameters), name
        assert inspect.iscoroutinefunction(vars(AsyncCropqClient)[name]) or name == "list_jobs", name
    assert inspect.isasyncgenfunction(AsyncCropqClient.list_jobs)


def test_the_async_client_does_what_the_sync_one_does(fake: FakeCropq, tmp_path: Path) -> None:
    image = tmp_path / "a.jpg"
    image.write_bytes(b"\xff\xd8\xff")

    async def scenario() -> dict[str, Any]:
        seen: list[str] = []

        async def progress(job: Job) -> None:
            seen.append(job.Status.value)

        async with AsyncCropqClient(URL, KEY_ID, KEY_SECRET, transport=fake.transport()) as c:
            rid = await c.submit("shop", "oss://b/a.jpg", ["1:1"], idempotency_key="k")
            up = await c.submit_file("shop", image)
            job = await c.wait("shop", rid, on_progress=progress)
            listed = [j.RequestId async for j in c.list_jobs("shop", max_results=1)]
            cancelled = await c.cancel("shop", up)
            with pytest.raises(Conflict):
                await c.cancel("shop", rid)
            await c.delete("shop", rid)
            batch = await c.submit_batch("shop", "oss://b/p/", suffixes=[".jpg"])
            counts: list[int] = []
            final = await c.wait_batch(
                "shop", batch.BatchId, on_progress=lambda b: counts.append(b.done), poll_interval=0
            )
            project = await c.put_project("shop", ["b"])
        return {
            "seen": seen,
            "job": job,
            "listed": listed,
            "rid": rid,
            "up": up,
            "cancelled": cancelled,
            "final": final,
            "counts": counts,
            "project": project,
        }

    out = asyncio.run(scenario())
    assert out["seen"] == ["Running", "Succeeded"] and out["job"].Status is JobStatus.SUCCEEDED
    assert out["listed"] == [out["up"], out["rid"]]  # one job a page, newest first
    assert out["cancelled"].Status is JobStatus.CANCELLED and out["rid"] not in fake.jobs
    assert out["final"].Status is BatchStatus.SUCCEEDED and out["counts"] == sorted(out["counts"])
    assert out["project"].Buckets == ["b"]


def test_the_async_client_maps_errors_the_same_way() -> None:
    async def call() -> None:
        transport = httpx.MockTransport(lambda _: imm_error(404, "ResourceNotFound", "gone", "R9"))
        async with AsyncCropqClient(URL, KEY_ID, KEY_SECRET, transport=transport) as c:
            await c.get_batch("shop", "B1")

    with pytest.raises(NotFound) as e:
        asyncio.run(call())
    assert (e.value.status, e.value.code, e.value.request_id) == (404, "ResourceNotFound", "R9")

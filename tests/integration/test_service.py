"""The whole service on real parts: API process, Celery worker processes, Valkey, SeaweedFS."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from typing import Any

import pytest
import redis

from tests.conftest import Stack
from tests.integration.helpers import assert_valid_croppings, jpeg, submit, wait_done

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def stack(make_stack: Any) -> Stack:
    s: Stack = make_stack(workers=2)
    return s


def test_submit_and_long_poll_returns_valid_crops(stack: Stack) -> None:
    project, bucket = stack.project()
    uri = stack.put(bucket, "photos/cat 1+x.jpg", jpeg(1200, 800, patch=(1000, 150)))
    ratios = ["1:1", "16:9", "3:4", "2:1", "1:2"]
    with stack.http() as c:
        rid = submit(c, project, {"SourceURI": uri, "AspectRatios": ratios, "UserData": "u-42"})
        job = wait_done(c, project, rid)
    assert job["Status"] == "Succeeded", job
    assert job["RequestId"] == rid and job["ProjectName"] == project and job["UserData"] == "u-42"
    assert job["ImageWidth"] == 1200 and job["ImageHeight"] == 800
    assert job["CreatedAt"] <= job["StartedAt"] <= job["FinishedAt"]
    assert_valid_croppings(job, ratios, 1200, 800)
    # The salient patch at (1000, 150) lies in the 1:1 and 3:4 crops (they can reach it).
    for c in job["Croppings"][:1] + job["Croppings"][2:3]:
        b = c["Boundary"]
        assert b["Left"] <= 1000 <= b["Left"] + b["Width"], c


def test_auto_is_the_default_and_reports_the_chosen_ratio(stack: Stack) -> None:
    project, bucket = stack.project()
    uri = stack.put(bucket, "a.jpg", jpeg(900, 600))
    with stack.http() as c:
        job = wait_done(c, project, submit(c, project, {"SourceURI": uri}))
    assert job["Status"] == "Succeeded" and job["AspectRatios"] == ["auto"]
    (crop,) = job["Croppings"]
    assert re.fullmatch(r"\d+:\d+", crop["AspectRatio"]), crop
    assert_valid_croppings(job, ["auto"], 900, 600)


@pytest.mark.parametrize(
    ("body", "message_part"),
    [
        ({"AspectRatios": ["1:1"] * 6}, "at most 5"),
        ({"AspectRatios": []}, "empty"),
        ({"AspectRatios": ["4.1:3"]}, "4.1:3"),
        ({"AspectRatios": ["1:3"]}, "1:3"),
        ({"AspectRatios": ["3:1"]}, "3:1"),
        ({"AspectRatios": ["20:19"]}, "20:19"),
        ({"AspectRatios": "not json"}, "JSON"),
        ({"InclusionHints": ["face", "cat"]}, "at most 1"),
        ({"SourceURI": "http://example.com/a.jpg"}, "SourceURI"),
        ({"SourceURI": "oss://otherbucket/a.jpg"}, "does not belong"),
        ({"CallbackURL": "ftp://x/y"}, "CallbackURL"),
        ({"UserData": "x" * 2049}, "UserData"),
        ({"Unknown": 1}, "Unknown"),
    ],
)
def test_bad_requests_get_imm_errors_and_queue_nothing(
    stack: Stack, body: dict[str, Any], message_part: str
) -> None:
    project, bucket = stack.project()
    full = {"SourceURI": f"oss://{bucket}/a.jpg", **body}
    r_before = redis.Redis.from_url(stack.redis_url)
    queue = stack.env["CROPQ_QUEUE_NAME"]
    jobs_before = len(list(r_before.scan_iter(match="cropq:job:*")))
    with stack.http() as c:
        r = c.post(f"/v1/projects/{project}/crop-jobs", json=full)
    assert r.status_code == 400, r.text
    err = r.json()
    assert err["Code"] == "InvalidArgument" and message_part in err["Message"], err
    assert set(err) >= {"RequestId", "HostId", "Code", "Message", "Recommend"}
    assert r.headers["x-acs-request-id"] == err["RequestId"]
    assert len(list(r_before.scan_iter(match="cropq:job:*"))) == jobs_before
    assert r_before.llen(queue) == 0


def test_unknown_project_is_404_and_missing_object_fails_the_job(stack: Stack) -> None:
    project, bucket = stack.project()
    with stack.http() as c:
        r = c.post("/v1/projects/nosuchproject/crop-jobs", json={"SourceURI": f"oss://{bucket}/a.jpg"})
        assert r.status_code == 404 and r.json()["Code"] == "ResourceNotFound"
        job = wait_done(c, project, submit(c, project, {"SourceURI": f"oss://{bucket}/missing.jpg"}))
    assert job["Status"] == "Failed" and job["Code"] == "ResourceNotFound", job
    assert "Croppings" not in job


def test_bytes_that_are_not_an_image_fail_with_a_clear_code(stack: Stack) -> None:
    project, bucket = stack.project()
    uri = stack.put(bucket, "fake.jpg", b"\xff\xd8\xff\xe0 this is not really a jpeg" * 10)
    with stack.http() as c:
        job = wait_done(c, project, submit(c, project, {"SourceURI": uri}))
    assert job["Status"] == "Failed" and job["Code"] == "InvalidArgument.Image", job
    # The worker survived the hostile bytes and keeps serving.
    uri = stack.put(bucket, "ok.jpg", jpeg(400, 300))
    with stack.http() as c:
        assert wait_done(c, project, submit(c, project, {"SourceURI": uri}))["Status"] == "Succeeded"


def _png_header_only(width: int, height: int) -> bytes:
    """A PNG that claims a huge size (a decompression bomb's header) with a tiny body."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(b"\0" * 64))
        + chunk(b"IEND", b"")
    )


def test_decompression_bomb_is_refused_from_its_header(stack: Stack) -> None:
    project, bucket = stack.project()
    uri = stack.put(bucket, "bomb.png", _png_header_only(60_000, 60_000))
    with stack.http() as c:
        job = wait_done(c, project, submit(c, project, {"SourceURI": uri}))
    assert job["Status"] == "Failed" and job["Code"] == "InvalidArgument.ImageTooLarge", job


def test_idempotency_key_returns_the_first_job(stack: Stack) -> None:
    project, bucket = stack.project()
    uri = stack.put(bucket, "a.jpg", jpeg(500, 400))
    with stack.http() as c:
        first = submit(c, project, {"SourceURI": uri, "IdempotencyKey": "k-1"})
        again = submit(c, project, {"SourceURI": uri, "IdempotencyKey": "k-1"})
        header = submit(c, project, {"SourceURI": uri}, headers={"Idempotency-Key": "k-1"})
        other = submit(c, project, {"SourceURI": uri, "IdempotencyKey": "k-2"})
    assert first == again == header != other


def test_jobs_are_private_to_their_project(stack: Stack) -> None:
    project, bucket = stack.project()
    other, _ = stack.project()
    uri = stack.put(bucket, "a.jpg", jpeg(500, 400))
    with stack.http() as c:
        rid = submit(c, project, {"SourceURI": uri})
        assert c.get(f"/v1/projects/{other}/crop-jobs/{rid}").status_code == 404
        r = c.get(f"/v1/projects/{project}/crop-jobs/NOPE")
        assert r.status_code == 404 and r.json()["Code"] == "ResourceNotFound"


def test_every_error_has_the_imm_body(stack: Stack) -> None:
    with stack.http() as c:
        for method, path in (
            ("GET", "/nope"),
            ("DELETE", "/v1/projects/x"),
            ("POST", "/v1/projects/x/crop-jobs"),
        ):
            r = c.request(method, path, content=b"{not json", headers={"content-type": "application/json"})
            assert r.status_code in (400, 404, 405), (path, r.status_code, r.text)
            assert set(r.json()) >= {"RequestId", "Code", "Message"}, r.text
    import httpx

    r = httpx.post(f"{stack.url}/v1/projects/x/crop-jobs", json={"SourceURI": "oss://b/k"})
    assert r.status_code == 400 and r.json()["Code"] == "IncompleteSignature"


def test_operations_endpoints(stack: Stack) -> None:
    project, bucket = stack.project()
    uri = stack.put(bucket, "m.jpg", jpeg(300, 200))
    with stack.http() as c:
        assert wait_done(c, project, submit(c, project, {"SourceURI": uri}))["Status"] == "Succeeded"
        assert c.get("/healthz").json() == {"Status": "ok"}
        ready = c.get("/readyz")
        assert ready.status_code == 200 and ready.json()["Checks"] == {"Redis": "ok", "Storage": "ok"}
        metrics = c.get("/metrics").text  # this API process's figures
        assert re.search(r'cropq_jobs_submitted_total\{face="native"\} [1-9]', metrics), metrics
        assert "cropq_cluster_" not in metrics
        cluster = c.get("/metrics/cluster").text  # the service's figures, read from Redis
        assert int(re.findall(r"cropq_cluster_workers_alive (\d+)", cluster)[0]) >= 2
        succeeded = re.search(r'cropq_cluster_jobs_finished_total\{status="Succeeded"\} (\d+)', cluster)
        assert succeeded and int(succeeded.group(1)) >= 1, cluster
        assert re.search(r"cropq_cluster_crop_seconds_count [1-9]", cluster), cluster
        assert c.get("/openapi.json").json()["info"]["title"] == "cropq"
        assert c.get("/docs").status_code == 200


def test_two_workers_share_one_queue(stack: Stack) -> None:
    project, bucket = stack.project()
    uris = [stack.put(bucket, f"img{i}.jpg", jpeg(2400, 1600, seed=i)) for i in range(8)]
    with stack.http() as c:
        rids = [submit(c, project, {"SourceURI": u, "AspectRatios": ["1:1", "4:3"]}) for u in uris]
        jobs = [wait_done(c, project, rid) for rid in rids]
    assert all(j["Status"] == "Succeeded" for j in jobs)
    served = [sum(rid in w.log_path.read_text() for rid in rids) for w in stack.workers]
    assert all(n > 0 for n in served), served


def test_cli_submit_and_status(stack: Stack) -> None:
    from tests.conftest import ADMIN_KEY

    project, bucket = stack.project()
    uri = stack.put(bucket, "cli.jpg", jpeg(800, 600))
    env = {
        **stack.env,
        "CROPQ_API_URL": stack.url,
        "CROPQ_ACCESS_KEY_ID": ADMIN_KEY["AccessKeyId"],
        "CROPQ_ACCESS_KEY_SECRET": ADMIN_KEY["AccessKeySecret"],
    }
    cli = [sys.executable, "-m", "cropq_cli.main"]
    out = subprocess.run(
        [*cli, "submit", uri, "--project", project, "--ratios", "1:1,2:1", "--json"],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    job = json.loads(out.stdout)
    assert job["Status"] == "Succeeded"
    assert [c["AspectRatio"] for c in job["Croppings"]] == ["1:1", "2:1"]
    again = subprocess.run(
        [*cli, "status", job["RequestId"], "--project", project],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    assert json.loads(again.stdout)["RequestId"] == job["RequestId"]
    bad = subprocess.run(
        [*cli, "submit", uri, "--project", project, "--ratios", "1:3"],
        env=env,
        capture_output=True,
        text=True,
    )
    assert bad.returncode == 1 and "InvalidArgument" in bad.stderr


def test_api_process_never_imports_opencv() -> None:
    code = "import sys, api.main, cropq_cli.main; api.main.create_app; print('cv2' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_batch_submit(stack: Stack) -> None:
    project, bucket = stack.project()
    uris = [stack.put(bucket, f"batch{i}.jpg", jpeg(600, 400, seed=i)) for i in range(3)]
    with stack.http() as c:
        bad = c.post(
            f"/v1/projects/{project}/crop-jobs:batch",
            json={"Jobs": [{"SourceURI": uris[0]}, {"SourceURI": uris[1], "AspectRatios": ["9:1"]}]},
        )
        assert bad.status_code == 400 and bad.json()["Message"].startswith("Jobs[1]: "), bad.text
        other = c.post(
            f"/v1/projects/{project}/crop-jobs:batch",
            json={"Jobs": [{"SourceURI": uris[0]}, {"SourceURI": "oss://not-ours/x.jpg"}]},
        )
        assert other.status_code == 400 and "Jobs[1]" in other.json()["Message"], other.text
        assert redis.Redis.from_url(stack.redis_url).llen(stack.env["CROPQ_QUEUE_NAME"]) == 0
        r = c.post(
            f"/v1/projects/{project}/crop-jobs:batch",
            json={
                "Jobs": [
                    {"SourceURI": u, "AspectRatios": ["1:1"], "UserData": str(i)} for i, u in enumerate(uris)
                ]
            },
        )
        assert r.status_code == 202, r.text
        rids = [j["RequestId"] for j in r.json()["Jobs"]]
        assert len(set(rids)) == 3
        jobs = [wait_done(c, project, rid) for rid in rids]
    assert [j["UserData"] for j in jobs] == ["0", "1", "2"]
    assert all(j["Status"] == "Succeeded" for j in jobs)

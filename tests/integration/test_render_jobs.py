"""Pictures, not only rectangles: rendered crops written to the project's writable bucket, http(s) and
uploaded sources, and reading a job's source and outputs back — on real processes and storage."""

from __future__ import annotations

import http.server
import io
import json
import subprocess
import sys
import threading
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
from PIL import Image

from tests.conftest import ADMIN_KEY, Stack
from tests.integration.helpers import submit, wait_done

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def stack(make_stack: Any) -> Stack:
    """Workers may fetch from loopback (the test's image server)."""
    s: Stack = make_stack(workers=1, source_allowed_cidrs='["127.0.0.0/8"]')
    return s


@pytest.fixture(scope="module")
def default_stack(make_stack: Any) -> Stack:
    """The default source policy (no private or loopback address, no plain http), and a small upload cap;
    no workers: everything it is asked is refused at the API."""
    s: Stack = make_stack(workers=0, max_upload_bytes="20000")
    return s


def photo(width: int = 1600, height: int = 1000) -> bytes:
    """A smooth, photo-like picture (gradients and soft shapes) with one clear subject, as a JPEG."""
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    img = np.zeros((height, width, 3), np.float32)
    img[..., 0] = 60 + 120 * x / width
    img[..., 1] = 90 + 80 * y / height
    img[..., 2] = 140 - 60 * x / width
    cx, cy, r = width * 0.72, height * 0.35, min(width, height) * 0.14
    blob = np.exp(-(((x - cx) ** 2 + (y - cy) ** 2) / (2 * r * r)))
    img = img * (1 - blob[..., None]) + np.array([235.0, 40.0, 30.0]) * blob[..., None]
    buf = io.BytesIO()
    Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(buf, "JPEG", quality=95)
    return buf.getvalue()


def writable_project(stack: Stack) -> tuple[str, str, str]:
    """(project, readable bucket, writable bucket)."""
    project, bucket = stack.project()
    out = f"{bucket}-out"
    stack.s3.client().make_bucket(out)
    with stack.http() as c:
        r = c.put(f"/v1/projects/{project}", json={"Buckets": [bucket], "WritableBuckets": [out]})
        assert r.status_code == 200, r.text
        assert r.json()["WritableBuckets"] == [out]
    return project, bucket, out


def _object(stack: Stack, uri: str) -> bytes:
    bucket, key = uri.removeprefix("oss://").split("/", 1)
    resp = stack.s3.client().get_object(bucket, key)
    try:
        return resp.read()
    finally:
        resp.close()
        resp.release_conn()


def test_render_writes_one_object_per_ratio_matching_a_reference_crop(stack: Stack) -> None:
    project, bucket, out = writable_project(stack)
    source = photo()
    uri = stack.put(bucket, "shop/red shoe.jpg", source)
    ratios = ["1:1", "16:9", "3:4"]
    render = {"TargetURI": f"oss://{out}/{{Stem}}/{{Ratio}}.png", "Format": "png", "MaxWidth": 600}
    with stack.http() as c:
        rid = submit(c, project, {"SourceURI": uri, "AspectRatios": ratios, "Render": render})
        job = wait_done(c, project, rid)
    assert job["Status"] == "Succeeded", job
    assert job["Render"]["TargetURI"] == render["TargetURI"] and job["Render"]["Quality"] == 82
    full = Image.open(io.BytesIO(source)).convert("RGB")
    keys = set()
    for cropping in job["Croppings"]:
        b, o = cropping["Boundary"], cropping["Output"]
        slug = cropping["AspectRatio"].replace(":", "x")
        assert o["URI"] == f"oss://{out}/red shoe/{slug}.png"
        keys.add(o["URI"])
        data = _object(stack, o["URI"])
        assert o["Bytes"] == len(data) and o["Format"] == "png" and o["ETag"]
        im = Image.open(io.BytesIO(data))
        assert im.size == (o["Width"], o["Height"])
        assert o["Width"] <= 600 and o["Width"] <= b["Width"]  # MaxWidth honoured, never upscaled
        w, h = (int(p) for p in cropping["AspectRatio"].split(":"))
        assert abs(o["Width"] * h / w - o["Height"]) <= 1
        ref = full.crop((b["Left"], b["Top"], b["Left"] + b["Width"], b["Top"] + b["Height"]))
        ref = ref.resize(im.size, Image.Resampling.LANCZOS)
        mae = np.abs(np.asarray(im.convert("RGB"), np.float32) - np.asarray(ref, np.float32)).mean()
        assert mae < 3.0, (cropping["AspectRatio"], mae)
    assert len(keys) == len(ratios)
    # Read back through the API: the output, and the source.
    with stack.http() as c:
        r = c.get(f"/v1/projects/{project}/crop-jobs/{rid}/outputs/1")
        assert r.status_code == 200 and r.headers["content-type"] == "image/png"
        assert r.content == _object(stack, job["Croppings"][1]["Output"]["URI"])
        assert "16x9.png" in r.headers["content-disposition"]
        assert c.get(f"/v1/projects/{project}/crop-jobs/{rid}/outputs/3").status_code == 404
        src = c.get(f"/v1/projects/{project}/crop-jobs/{rid}/source")
        assert (
            src.status_code == 200 and src.content == source and src.headers["content-type"] == "image/jpeg"
        )
        assert src.headers["x-content-type-options"] == "nosniff"


def test_a_rerun_overwrites_the_same_objects(stack: Stack) -> None:
    project, bucket, out = writable_project(stack)
    uri = stack.put(bucket, "a.jpg", photo(800, 600))
    render = {"TargetURI": f"oss://{out}/{{RequestId}}/{{Ratio}}.webp", "Format": "webp"}
    with stack.http() as c:
        rid = submit(c, project, {"SourceURI": uri, "AspectRatios": ["1:1", "4:3"], "Render": render})
        assert wait_done(c, project, rid)["Status"] == "Succeeded"
    listed = sorted(o.object_name for o in stack.s3.client().list_objects(out, recursive=True))
    assert listed == [f"{rid}/1x1.webp", f"{rid}/4x3.webp"]


def test_render_into_a_bucket_the_project_may_not_write_is_refused(stack: Stack) -> None:
    project, bucket, out = writable_project(stack)
    other = f"{bucket}-other"
    stack.s3.client().make_bucket(other)
    uri = stack.put(bucket, "a.jpg", photo(400, 300))
    with stack.http() as c:
        for target in (
            f"oss://{other}/{{Ratio}}.jpg",
            f"oss://{bucket}/{{Ratio}}.jpg",
        ):  # readable != writable
            r = c.post(
                f"/v1/projects/{project}/crop-jobs",
                json={"SourceURI": uri, "AspectRatios": ["1:1"], "Render": {"TargetURI": target}},
            )
            assert r.status_code == 400, r.text
            assert r.json()["Code"] == "InvalidArgument" and "not writable" in r.json()["Message"]
        # Two ratios into one key would overwrite each other: refused before anything runs.
        r = c.post(
            f"/v1/projects/{project}/crop-jobs",
            json={
                "SourceURI": uri,
                "AspectRatios": ["1:1", "4:3"],
                "Render": {"TargetURI": f"oss://{out}/x.jpg"},
            },
        )
        assert r.status_code == 400 and "{Ratio}" in r.json()["Message"]
        # Nor may any project read or write the bucket that holds every project's uploads.
        for field in ("Buckets", "WritableBuckets"):
            r = c.put(f"/v1/projects/{project}", json={"Buckets": [bucket], field: ["cropq-uploads"]})
            assert r.status_code == 400 and "uploaded images" in r.json()["Message"], r.text
    assert list(stack.s3.client().list_objects(other, recursive=True)) == []
    assert [o.object_name for o in stack.s3.client().list_objects(bucket, recursive=True)] == ["a.jpg"]


class _ImageServer:
    """A loopback HTTP server with one image (and a counter of the requests it got)."""

    def __init__(self, body: bytes) -> None:
        outer = self
        self.requests: list[dict[str, str]] = []

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                outer.requests.append(dict(self.headers))
                self.send_response(200)
                self.send_header("Content-Type", "image/jpeg")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *_: object) -> None:
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/pics/beach%20day.jpg"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture(scope="module")
def image_server() -> Iterator[_ImageServer]:
    server = _ImageServer(photo(900, 600))
    yield server
    server.close()


def test_http_source_on_loopback_is_refused_by_default(
    default_stack: Stack, image_server: _ImageServer
) -> None:
    project, _ = default_stack.project()
    with default_stack.http() as c:
        r = c.post(f"/v1/projects/{project}/crop-jobs", json={"SourceURI": image_server.url})
    assert r.status_code == 400, r.text
    assert r.json()["Code"] == "InvalidArgument"
    assert image_server.requests == []  # nothing was fetched


def test_http_source_works_once_its_address_is_listed(stack: Stack, image_server: _ImageServer) -> None:
    project, _, out = writable_project(stack)
    render = {"TargetURI": f"oss://{out}/{{Stem}}-{{Ratio}}.jpg"}
    with stack.http() as c:
        rid = submit(c, project, {"SourceURI": image_server.url, "AspectRatios": ["1:1"], "Render": render})
        job = wait_done(c, project, rid)
        assert job["Status"] == "Succeeded", job
        assert job["ImageWidth"] == 900 and job["ImageHeight"] == 600
        assert job["Croppings"][0]["Output"]["URI"] == f"oss://{out}/beach day-1x1.jpg"
        assert c.get(f"/v1/projects/{project}/crop-jobs/{rid}/source").status_code == 404  # never stored
    assert image_server.requests and image_server.requests[-1]["User-Agent"].startswith("cropq")


def test_multipart_upload_job(stack: Stack) -> None:
    project, _, out = writable_project(stack)
    image = photo(1000, 700)
    job_fields = {
        "AspectRatios": ["4:3"],
        "Render": {"TargetURI": f"oss://{out}/{{Stem}}_{{Ratio}}.webp", "Format": "webp"},
    }
    with stack.http() as c:
        r = c.post(
            f"/v1/projects/{project}/crop-jobs",
            files={"Image": ("holiday.jpg", image, "image/jpeg"), "Job": (None, json.dumps(job_fields))},
        )
        assert r.status_code == 202, r.text
        rid = r.json()["RequestId"]
        job = wait_done(c, project, rid)
        assert job["Status"] == "Succeeded", job
        assert job["SourceURI"].endswith(f"/{project}/{rid}/holiday.jpg")
        assert job["Croppings"][0]["Output"]["URI"] == f"oss://{out}/holiday_4x3.webp"
        assert c.get(f"/v1/projects/{project}/crop-jobs/{rid}/source").content == image
        # Uploads expire by themselves (the bucket's lifecycle rule, CROPQ_UPLOAD_RETENTION_DAYS).
        lifecycle = stack.s3.client().get_bucket_lifecycle("cropq-uploads")
        assert lifecycle is not None and [r.expiration.days for r in lifecycle.rules] == [1]
        # Not an image, no image part, a SourceURI in the Job part: clear 400s.
        for files in (
            {"Image": ("x.jpg", b"hello", "image/jpeg"), "Job": (None, "{}")},
            {"Job": (None, json.dumps({"AspectRatios": ["1:1"]}))},
            {"Image": ("x.jpg", image, "image/jpeg"), "Job": (None, json.dumps({"SourceURI": "oss://a/b"}))},
            {"Image": ("x.jpg", image, "image/jpeg"), "Job": (None, "{not json")},
        ):
            bad = c.post(f"/v1/projects/{project}/crop-jobs", files=files)
            assert bad.status_code == 400 and bad.json()["Code"] == "InvalidArgument", bad.text
    # Another project's key cannot read this job's upload, nor list the upload bucket as its own.
    with stack.http() as c:
        other, _ = stack.project()
        assert c.get(f"/v1/projects/{other}/crop-jobs/{rid}/source").status_code == 404


def test_upload_larger_than_the_cap_is_413(default_stack: Stack) -> None:
    project, _ = default_stack.project()
    with default_stack.http() as c:
        r = c.post(
            f"/v1/projects/{project}/crop-jobs",
            files={"Image": ("big.jpg", photo(1200, 900), "image/jpeg"), "Job": (None, "{}")},
        )
    assert r.status_code == 413 and r.json()["Code"] == "RequestEntityTooLarge"


def test_cli_submit_uploads_a_file_and_renders(stack: Stack, tmp_path: Any) -> None:
    project, _, out = writable_project(stack)
    path = tmp_path / "poster.jpg"
    path.write_bytes(photo(1200, 800))
    env = {
        **stack.env,
        "CROPQ_API_URL": stack.url,
        "CROPQ_ACCESS_KEY_ID": ADMIN_KEY["AccessKeyId"],
        "CROPQ_ACCESS_KEY_SECRET": ADMIN_KEY["AccessKeySecret"],
    }
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "cropq_cli.main",
            "submit",
            str(path),
            "--project",
            project,
            "--ratios",
            "1:1,16:9",
            "--render",
            f"oss://{out}/{{Stem}}/{{Ratio}}.webp",
            "--format",
            "webp",
            "--max-width",
            "400",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, run.stderr
    assert run.stdout.startswith("Succeeded") and "1200x800" in run.stdout
    assert f"oss://{out}/poster/16x9.webp" in run.stdout and f"oss://{out}/poster/1x1.webp" in run.stdout
    assert "400x225 webp" in run.stdout

"""The client package on its own: built from client/ into a fresh virtualenv whose only other code is
httpx, pydantic and their dependencies, it imports nothing of the server and drives a real stack (submit,
upload, wait with progress, list, cancel, delete, batches, typed errors). Its dependencies are linked
from the current site-packages, so nothing but the build backend (pip's cache) is fetched."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from importlib.metadata import Distribution, distribution
from pathlib import Path
from typing import Any

import cropq_client
import pytest
from packaging.requirements import Requirement

from tests.conftest import ADMIN_KEY, Stack
from tests.integration.helpers import jpeg

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
SERVER_MODULES = {"api", "worker", "fastapi", "starlette", "celery", "kombu", "redis", "numpy", "cv2", "PIL",
                  "minio", "onnxruntime", "typer", "rich", "structlog"}  # fmt: skip


def closure(*names: str) -> dict[str, Distribution]:
    """The installed distributions ``names`` need (their requirements, recursively, without extras)."""
    found: dict[str, Distribution] = {}
    todo = list(names)
    while todo:
        dist = distribution(todo.pop())
        key = dist.metadata["Name"].lower()
        if key in found:
            continue
        found[key] = dist
        for line in dist.requires or []:
            req = Requirement(line)
            if req.marker is None or req.marker.evaluate({"extra": ""}):
                todo.append(req.name)
    return found


def link_dependencies(target: Path) -> None:
    """A folder holding only the client's dependencies (symlinks into the current site-packages)."""
    target.mkdir()
    for dist in closure("httpx", "pydantic").values():
        tops = {Path(str(f)).parts[0] for f in dist.files or []}
        for top in tops - {"..", "__pycache__"}:
            source = Path(str(dist.locate_file(top)))
            if source.exists() and not (target / top).exists():
                (target / top).symlink_to(source)


@pytest.fixture(scope="module")
def fresh_python(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str]]:
    """A new virtualenv with cropq-client installed from client/, and the environment to run it in."""
    where = tmp_path_factory.mktemp("client-venv")
    subprocess.run([sys.executable, "-m", "venv", where / "venv"], check=True)
    python = where / "venv" / "bin" / "python"
    # As a user would: the new venv's own pip builds the package from its folder (isolated build).
    pip = [str(python), "-m", "pip", "--disable-pip-version-check", "--no-input", "-q"]
    subprocess.run([*pip, "install", "--no-deps", str(ROOT / "client")], check=True)
    link_dependencies(where / "deps")
    env = {"PATH": os.environ.get("PATH", ""), "PYTHONPATH": str(where / "deps"), "PYTHONNOUSERSITE": "1"}
    return python, env


def run(fresh: tuple[Path, dict[str, str]], code: str, cwd: Path, **env: str) -> Any:
    python, base = fresh
    out = subprocess.run(
        [python, "-c", textwrap.dedent(code)], env={**base, **env}, cwd=cwd, capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def test_the_package_installs_and_imports_without_the_server(
    fresh_python: tuple[Path, dict[str, str]], tmp_path: Path
) -> None:
    found = run(
        fresh_python,
        """
        import importlib.util, json, sys
        import cropq_client
        from cropq_client import AsyncCropqClient, CropqClient, models
        print(json.dumps({
            "file": cropq_client.__file__,
            "modules": sorted({m.split(".")[0] for m in sys.modules}),
            "fastapi_importable": importlib.util.find_spec("fastapi") is not None,
            "version": cropq_client.__version__,
        }))
        """,
        tmp_path,
    )
    package = Path(found["file"]).parent
    assert package.is_relative_to(fresh_python[0].parents[1]) and (package / "py.typed").is_file()
    assert {"httpx", "pydantic", "cropq_client"} <= set(found["modules"])
    assert not SERVER_MODULES & set(found["modules"]), SERVER_MODULES & set(found["modules"])
    # The environment really lacks the server's dependencies (the check above could not pass by accident).
    assert found["fastapi_importable"] is False
    assert found["version"] == cropq_client.__version__  # the installed package is this tree's


@pytest.fixture(scope="module")
def stack(make_stack: Any) -> Stack:
    s: Stack = make_stack(workers=1)
    return s


SCENARIO = """
import json, os
from cropq_client import Conflict, CropqClient, JobStatus, NotFound

project, uri = os.environ["PROJECT"], os.environ["URI"]
out = {}
with CropqClient(os.environ["URL"], os.environ["KEY_ID"], os.environ["KEY_SECRET"], timeout=30) as c:
    seen = []
    rid = c.submit(project, uri, ["1:1", "16:9"], idempotency_key="same")
    out["replayed"] = c.submit(project, uri, ["1:1", "16:9"], idempotency_key="same") == rid
    job = c.wait(project, rid, timeout=60, on_progress=lambda j: seen.append(j.Status.value))
    out["seen"], out["ratios"] = seen, [x.AspectRatio for x in job.Croppings or []]
    up = c.wait(project, c.submit_file(project, bytes.fromhex(os.environ["IMAGE"]), "upload.jpg"), timeout=60)
    out["upload"] = [up.Status.value, up.SourceURI.rsplit("/", 1)[-1], up.ImageWidth]
    try:
        c.get(project, "nope")
    except NotFound as e:
        out["missing"] = [e.status, e.code, bool(e.request_id)]
    out["listed"] = [j.RequestId for j in c.list_jobs(project, max_results=1)]
    out["succeeded"] = [j.RequestId for j in c.list_jobs(project, JobStatus.SUCCEEDED)]
    try:
        c.cancel(project, rid)
    except Conflict as e:
        out["cancel_finished"] = [e.status, e.code]
    c.delete(project, up.RequestId)
    try:
        c.get(project, up.RequestId)
    except NotFound:
        out["deleted"] = True
    out["rid"], out["up"] = rid, up.RequestId
print(json.dumps(out))
"""


def test_the_installed_client_drives_a_real_stack(
    fresh_python: tuple[Path, dict[str, str]], stack: Stack, tmp_path: Path
) -> None:
    project, bucket = stack.project()
    uri = stack.put(bucket, "shoe.jpg", jpeg(640, 480))
    keys = {"KEY_ID": str(ADMIN_KEY["AccessKeyId"]), "KEY_SECRET": str(ADMIN_KEY["AccessKeySecret"])}
    out = run(
        fresh_python,
        SCENARIO,
        tmp_path,
        URL=stack.url,
        PROJECT=project,
        URI=uri,
        IMAGE=jpeg(320, 240).hex(),
        **keys,
    )
    assert out["replayed"] is True
    assert out["seen"][-1] == "Succeeded" and set(out["seen"]) <= {"Queued", "Running", "Succeeded"}
    assert out["ratios"] == ["1:1", "16:9"]
    assert out["upload"] == ["Succeeded", "upload.jpg", 320]
    assert out["missing"] == [404, "ResourceNotFound", True]
    assert out["listed"] == [out["up"], out["rid"]]  # one a page, newest first, each once
    assert out["succeeded"] == [out["up"], out["rid"]]
    assert out["cancel_finished"][0] == 409
    assert out["deleted"] is True


BATCH_SCENARIO = """
import json, os
from cropq_client import CropqClient

project, bucket, out_bucket = os.environ["PROJECT"], os.environ["BUCKET"], os.environ["OUT"]
prefix, manifest = f"oss://{bucket}/batch/", f"oss://{out_bucket}/m.jsonl"
out = {}
with CropqClient(os.environ["URL"], os.environ["KEY_ID"], os.environ["KEY_SECRET"], timeout=30) as c:
    out["writable"] = c.put_project(project, [bucket], [out_bucket]).WritableBuckets
    fields = dict(suffixes=[".jpg"], manifest_uri=manifest, idempotency_key="b1")
    b = c.submit_batch(project, prefix, ["1:1"], **fields)
    out["replayed"] = c.submit_batch(project, prefix, ["1:1"], **fields).BatchId == b.BatchId
    seen = []
    final = c.wait_batch(
        project, b.BatchId, timeout=120, poll_interval=0.2,
        on_progress=lambda x: seen.append([x.Status.value, x.Total, x.done]),
    )
    out["seen"], out["final"] = seen, final.model_dump(mode="json")
    out["jobs"] = sorted(j.SourceURI for j in c.list_jobs(project, batch_id=b.BatchId, max_results=2))
    other = c.submit_batch(project, prefix, ["1:1"], suffixes=[".jpg"])
    c.cancel_batch(project, other.BatchId)
    ended = c.wait_batch(project, other.BatchId, timeout=60, poll_interval=0.2)
    out["cancelled"] = ended.model_dump(mode="json")
print(json.dumps(out))
"""


def test_the_installed_client_runs_a_prefix_batch(
    fresh_python: tuple[Path, dict[str, str]], stack: Stack, tmp_path: Path
) -> None:
    with stack.http() as http:
        if "/v1/projects/{ProjectName}/crop-batches" not in http.get("/openapi.json").json()["paths"]:
            pytest.skip("this server has no prefix batches yet")
    project, bucket = stack.project()
    out_bucket = f"{bucket}-out"
    stack.s3.client().make_bucket(out_bucket)
    names = [f"batch/{i}.jpg" for i in range(4)]
    for i, name in enumerate(names):
        stack.put(bucket, name, jpeg(320, 240, seed=i))
    stack.put(bucket, "batch/notes.txt", b"not an image")
    keys = {"KEY_ID": str(ADMIN_KEY["AccessKeyId"]), "KEY_SECRET": str(ADMIN_KEY["AccessKeySecret"])}
    env = {"URL": stack.url, "PROJECT": project, "BUCKET": bucket, "OUT": out_bucket, **keys}
    out = run(fresh_python, BATCH_SCENARIO, tmp_path, **env)
    assert out["writable"] == [out_bucket] and out["replayed"] is True
    final = out["final"]
    assert final["Status"] == "Succeeded" and final["Total"] == final["Succeeded"] == 4, final
    assert final["Pending"] == 0 and final["ManifestURI"] == f"oss://{out_bucket}/m.jsonl"
    done = [d for _, _, d in out["seen"]]
    assert done == sorted(done) and out["seen"][-1][0] == "Succeeded"  # progress never goes backwards
    assert out["jobs"] == [f"oss://{bucket}/{n}" for n in names]  # every object once, across pages
    cancelled = out["cancelled"]
    assert cancelled["Status"] == "Cancelled" and cancelled["Pending"] == 0
    assert cancelled["Succeeded"] + cancelled["Failed"] + cancelled["Cancelled"] == cancelled["Total"]

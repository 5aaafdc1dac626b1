"""Each role's install works on its own: a fresh environment from requirements/api.txt runs the API (no
OpenCV, onnxruntime, onnx or numpy in it, and no ONNX models), one from requirements/worker.txt runs a crop
worker, and a job submitted to that API is served by that worker, on a real Valkey and SeaweedFS.

The environments are built as deploy/Dockerfile builds the images (its lock, then the project without
dependencies, from a copy of what the image copies), offline from uv's cache, which `make install` fills;
each process runs its image's command (CMD) with only the host, port and queue made local."""

from __future__ import annotations

import io
import json
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from cropq_cli.localstack import ManagedProcess, free_port, wait_until
from tests.conftest import ADMIN_KEY, S3Server, service_env
from tests.integration.helpers import jpeg, submit, wait_done
from tests.unit.test_packaging import image_cmd

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
# What deploy/Dockerfile's build stage copies: the project's sources, nothing of the work tree besides.
IMAGE_SOURCES = ("pyproject.toml", "README.md", "api", "worker", "cropq_cli", "client/cropq_client")
# Installed size budgets of the images' environments (README, "Images"): the API's is about a quarter of
# the worker's, whose OpenCV, onnxruntime, numpy and onnx make up most of it.
SIZE_BUDGET_MB = {"api": 130, "worker": 460}
ENGINE_DISTRIBUTIONS = {"numpy", "opencv-python-headless", "opencv-python", "onnxruntime", "onnx"}


def uv() -> str:
    found = shutil.which("uv", path=str(Path(sys.executable).parent)) or shutil.which("uv")
    assert found, "uv is part of the dev install (make install)"
    return found


def build_env(role: str, where: Path, sources: Path) -> Path:
    """A venv holding requirements/<role>.txt and the project, as the image's build stage makes it."""
    venv = where / f"{role}-env"
    python = venv / "bin" / "python"
    run = [uv(), "--offline", "--quiet"]  # from the cache only: a test reaches nothing beyond loopback
    subprocess.run([*run[:1], "venv", *run[1:], "--python", sys.executable, str(venv)], check=True)
    lock = ROOT / "requirements" / f"{role}.txt"
    subprocess.run([*run, "pip", "sync", "--python", str(python), "--require-hashes", str(lock)], check=True)
    subprocess.run([*run, "pip", "install", "--python", str(python), "--no-deps", str(sources)], check=True)
    return venv


def distributions(venv: Path) -> set[str]:
    code = (
        "import importlib.metadata as m, json\n"
        "print(json.dumps([d.metadata['Name'] for d in m.distributions()]))"
    )
    out = subprocess.run(
        [str(venv / "bin" / "python"), "-c", code], capture_output=True, text=True, check=True
    )
    return {name.lower() for name in json.loads(out.stdout)}


def site_packages(venv: Path) -> Path:
    (found,) = venv.glob("lib/python3.*/site-packages")
    return found


@pytest.fixture(scope="module")
def envs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    where = tmp_path_factory.mktemp("roles")
    sources = where / "src"
    for name in IMAGE_SOURCES:
        src, dest = ROOT / name, sources / name
        if src.is_dir():
            shutil.copytree(src, dest, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest)
    started = time.monotonic()
    built = {role: build_env(role, where, sources) for role in ("api", "worker")}
    # The API image drops the engine's models (deploy/Dockerfile's build-api stage).
    shutil.rmtree(site_packages(built["api"]) / "worker" / "engine" / "models")
    print(f"role environments built in {time.monotonic() - started:.1f} s")
    return built


def role_process(
    role: str, venv: Path, argv: list[str], env: dict[str, str], workdir: Path
) -> ManagedProcess:
    """``argv`` from the image's CMD, run with the role's environment first on PATH, from a folder outside
    the work tree (so the installed project is imported, not the sources)."""
    cwd = workdir / role
    cwd.mkdir(exist_ok=True)
    env = {**env, "PATH": f"{venv / 'bin'}:{env['PATH']}", "VIRTUAL_ENV": str(venv)}
    env.pop("PYTHONPATH", None)
    return ManagedProcess(role, argv, cwd / f"{role}.log", env=env, cwd=cwd)


def with_flag(argv: list[str], name: str, value: str) -> list[str]:
    i = argv.index(name)
    return [*argv[: i + 1], value, *argv[i + 2 :]]


@dataclass
class RoleStack:
    url: str
    procs: list[ManagedProcess]


@pytest.fixture(scope="module")
def role_stack(
    envs: dict[str, Path],
    redis_url: str,
    s3_server: S3Server,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[RoleStack]:
    """The API from the api environment and one crop worker from the worker environment."""
    workdir = tmp_path_factory.mktemp("role-stack")
    port = free_port()
    env = service_env(redis_url, s3_server, f"q{uuid.uuid4().hex[:8]}")
    api_argv = image_cmd("api")
    api_argv = with_flag(with_flag(api_argv, "--host", "127.0.0.1"), "--port", str(port))
    api = role_process("api", envs["api"], api_argv, env, workdir)
    worker = role_process("worker", envs["worker"], image_cmd("worker"), env, workdir)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until(
            lambda: httpx.get(f"{url}/healthz", timeout=1).status_code == 200, 60, "API", [api, worker]
        )
        yield RoleStack(url, [api, worker])
    finally:
        for proc in (worker, api):
            proc.stop()


def finished(client: httpx.Client, project: str, rid: str) -> bool:
    job = client.get(f"/v1/projects/{project}/crop-jobs/{rid}", params={"wait": 2}).json()
    return job["Status"] in ("Succeeded", "Failed")


IMPORT_ALL = """
import importlib, json, pkgutil, sys
failed = {}
for package in sys.argv[1:]:
    path = importlib.import_module(package).__path__
    names = [package] + [m.name for m in pkgutil.walk_packages(path, package + ".")]
    for name in names:
        try:
            importlib.import_module(name)
        except Exception as e:
            failed[name] = f"{type(e).__name__}: {e}"
print(json.dumps(failed))
"""


@pytest.mark.parametrize(
    ("role", "packages"),
    [("api", ["api", "cropq_cli", "cropq_client"]), ("worker", ["worker", "cropq_cli", "cropq_client"])],
)
def test_every_module_of_a_role_imports_in_its_environment(
    envs: dict[str, Path], role: str, packages: list[str], tmp_path: Path
) -> None:
    """Catches a dependency a role's modules import but its extra does not declare."""
    env = {"PATH": f"{envs[role] / 'bin'}:/usr/bin:/bin", "CROPQ_SECRET_KEY": "x" * 40}
    python = str(envs[role] / "bin" / "python")
    out = subprocess.run(
        [python, "-c", IMPORT_ALL, *packages],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert json.loads(out.stdout) == {}


def size_mb(folder: Path) -> float:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file() and not p.is_symlink()) / 2**20


@pytest.mark.parametrize("role", sorted(SIZE_BUDGET_MB))
def test_each_role_environment_keeps_its_size_budget(envs: dict[str, Path], role: str) -> None:
    size = size_mb(envs[role])
    print(f"{role} environment: {size:.0f} MB")
    assert size <= SIZE_BUDGET_MB[role], f"{role} environment {size:.0f} MB > {SIZE_BUDGET_MB[role]} MB"


def test_the_api_environment_has_no_engine_dependencies(envs: dict[str, Path]) -> None:
    api, worker = distributions(envs["api"]), distributions(envs["worker"])
    assert "cropq" in api and "fastapi" in api
    assert not api & ENGINE_DISTRIBUTIONS, api & ENGINE_DISTRIBUTIONS
    assert not (site_packages(envs["api"]) / "worker" / "engine" / "models").exists()
    # The worker's environment is the one with the engine (and no web server).
    assert {"numpy", "opencv-python-headless", "onnxruntime", "onnx"} <= worker
    assert not {"fastapi", "uvicorn"} & worker


def test_a_job_sent_to_the_api_install_is_cropped_by_the_worker_install(
    role_stack: RoleStack, s3_server: S3Server
) -> None:
    bucket, project = f"b{uuid.uuid4().hex[:12]}", f"p{uuid.uuid4().hex[:10]}"
    s3 = s3_server.client()
    s3.make_bucket(bucket)
    data = jpeg(800, 600)
    s3.put_object(bucket, "role.jpg", io.BytesIO(data), len(data))
    auth = {"Authorization": f"Bearer {ADMIN_KEY['AccessKeyId']}:{ADMIN_KEY['AccessKeySecret']}"}
    with httpx.Client(base_url=role_stack.url, headers=auth, timeout=60) as c:
        c.put(f"/v1/projects/{project}", json={"Buckets": [bucket]}).raise_for_status()
        rid = submit(c, project, {"SourceURI": f"oss://{bucket}/role.jpg", "AspectRatios": ["1:1"]})
        # The worker may still be loading OpenCV and its models: the job waits in the queue meanwhile.
        # A process that exits (an import its environment lacks) fails the test at once, with its log.
        wait_until(lambda: finished(c, project, rid), 90, "the crop job", role_stack.procs)
        job = wait_done(c, project, rid, timeout=5)
    assert job["Status"] == "Succeeded", job
    assert job["ImageWidth"] == 800 and job["ImageHeight"] == 600
    (crop,) = job["Croppings"]
    assert crop["AspectRatio"] == "1:1" and crop["Boundary"]["Width"] == crop["Boundary"]["Height"]


def test_the_cropq_client_commands_run_from_the_api_install(
    role_stack: RoleStack, envs: dict[str, Path], s3_server: S3Server, tmp_path: Path
) -> None:
    """`cropq submit` of an API install (no engine in it) submits, waits and prints the finished job."""
    bucket, project = f"b{uuid.uuid4().hex[:12]}", f"p{uuid.uuid4().hex[:10]}"
    s3 = s3_server.client()
    s3.make_bucket(bucket)
    data = jpeg(640, 480, patch=(500, 100))
    s3.put_object(bucket, "cli.jpg", io.BytesIO(data), len(data))
    auth = {"Authorization": f"Bearer {ADMIN_KEY['AccessKeyId']}:{ADMIN_KEY['AccessKeySecret']}"}
    httpx.put(
        f"{role_stack.url}/v1/projects/{project}", json={"Buckets": [bucket]}, headers=auth, timeout=30
    ).raise_for_status()
    env = {
        "PATH": f"{envs['api'] / 'bin'}:/usr/bin:/bin",
        "CROPQ_API_URL": role_stack.url,
        "CROPQ_ACCESS_KEY_ID": str(ADMIN_KEY["AccessKeyId"]),
        "CROPQ_ACCESS_KEY_SECRET": str(ADMIN_KEY["AccessKeySecret"]),
        "CROPQ_DATA_DIR": str(tmp_path),  # no `cropq up` stack file to find
    }
    argv = [str(envs["api"] / "bin" / "cropq"), "submit", f"oss://{bucket}/cli.jpg"]
    argv += ["--project", project, "--ratios", "16:9", "--json"]
    done = subprocess.run(argv, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    job = json.loads(done.stdout)
    assert job["Status"] == "Succeeded" and job["ProjectName"] == project, job
    assert [c["AspectRatio"] for c in job["Croppings"]] == ["16:9"]

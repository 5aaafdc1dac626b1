"""Hostile images through the real stack (API -> Celery worker -> S3): each ends in ONE attempt with a
clear code (or succeeds, for legal-but-odd images), the worker child that met it is still the one that
serves the next job, and that job succeeds at once. The whole corpus runs at the engine level in
``tests/unit/engine/test_preflight_corpus.py``; here are the worst cases."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from tests.conftest import Stack
from tests.integration.helpers import jpeg, submit, wait_done
from tests.security.hostile_images import (
    IMAGE,
    TOO_COMPLEX,
    TOO_LARGE,
    Case,
    corpus,
    scan_bomb,
)
from worker.engine.errors import ImageTooComplex, ImageTooLarge, UnsupportedImage

pytestmark = pytest.mark.integration

WORST = [
    "scan bomb JPEG (3,000 scans)",
    "WebP lossless 10000x10000 (about 40 bytes)",
    "PNG RGB declaring 10000x10000 (truncated)",
    "PPM (not an accepted format)",
    "CMYK JPEG",
    "palette + alpha PNG",
    "MPO (two 6 MP pictures)",
]


@pytest.fixture(scope="module")
def stack(make_stack: object) -> Iterator[Stack]:
    # A short decode time budget, so that a decode that outlives it is met within the test's time.
    s: Stack = make_stack(workers=1, decode_time_limit_seconds="0.5")  # type: ignore[operator]
    yield s


def _children(pid: int) -> list[int]:
    try:
        return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


def _decode_servers(pid: int) -> list[int]:
    """The decode servers a worker child started (``worker.engine.sandbox``)."""
    found = []
    for child in _children(pid):
        try:
            cmdline = Path(f"/proc/{child}/cmdline").read_bytes()
        except OSError:
            continue
        if b"worker.engine.decode_server" in cmdline:
            found.append(child)
    return found


def _attempts(stack: Stack, rid: str) -> int:
    raw = redis.Redis.from_url(stack.redis_url).get(f"cropq:job:{rid}")
    assert raw is not None
    return int(json.loads(raw)["Attempts"])


def _run(stack: Stack, data: bytes, name: str) -> tuple[dict[str, object], float]:
    project, bucket = stack.project()
    uri = stack.put(bucket, f"{abs(hash(name))}.img", data)
    with stack.http() as c:
        t0 = time.monotonic()
        rid = submit(c, project, {"SourceURI": uri, "AspectRatios": ["1:1", "16:9"]})
        job = wait_done(c, project, rid, timeout=60)
        elapsed = time.monotonic() - t0
    assert _attempts(stack, rid) == 1, f"{name}: ran more than once"
    return job, elapsed


def _normal_job_succeeds(stack: Stack) -> float:
    job, elapsed = _run(stack, jpeg(), "normal")
    assert job["Status"] == "Succeeded", job
    return elapsed


def test_hostile_images_end_in_one_attempt_and_the_worker_survives(stack: Stack) -> None:
    cases: dict[str, Case] = {c.name: c for c in corpus(WORST)}
    _normal_job_succeeds(stack)
    children = _children(stack.workers[0].pid)
    assert children, "the worker has no prefork child"
    for name in WORST:
        case = cases[name]
        job, elapsed = _run(stack, case.data, name)
        outcome = None if job["Status"] == "Succeeded" else job["Code"]
        assert outcome in case.expect, f"{name}: {job}"
        assert elapsed < 20, f"{name} took {elapsed:.1f} s"
        assert _normal_job_succeeds(stack) < 10
        assert _children(stack.workers[0].pid) == children, f"{name} cost the worker its child"


def test_a_decode_over_its_time_budget_fails_once_with_a_clear_code(stack: Stack) -> None:
    _normal_job_succeeds(stack)
    children = _children(stack.workers[0].pid)
    servers = [s for c in children for s in _decode_servers(c)]
    # Under the scan limit, so it is decoded: about 1.4 s of libjpeg, killed at the 0.5 s budget.
    job, elapsed = _run(stack, scan_bomb(95), "slow scans")
    assert job["Status"] == "Failed" and job["Code"] == TOO_COMPLEX, job
    assert "time budget" in str(job["Message"])
    assert elapsed < 20
    assert _normal_job_succeeds(stack) < 10
    assert _children(stack.workers[0].pid) == children
    after = [s for c in children for s in _decode_servers(c)]
    assert len(after) == 1 and after != servers  # the killed server was replaced, not the worker child


def test_decodes_run_in_one_small_long_lived_server_per_worker_child(stack: Stack) -> None:
    _normal_job_succeeds(stack)
    (child,) = _children(stack.workers[0].pid)
    (server,) = _decode_servers(child)
    _normal_job_succeeds(stack)
    assert _decode_servers(child) == [server]  # not a process per image
    maps = Path(f"/proc/{server}/maps").read_text()
    assert "onnxruntime" not in maps and "onnxruntime" in Path(f"/proc/{child}/maps").read_text()
    status = Path(f"/proc/{server}/status").read_text()
    rss_mb = int(next(line for line in status.splitlines() if line.startswith("VmRSS:")).split()[1]) >> 10
    assert rss_mb < 300, f"the decode server holds {rss_mb} MB"


def test_the_corpus_expects_the_engine_s_codes() -> None:
    engine = (UnsupportedImage.code, ImageTooLarge.code, ImageTooComplex.code)
    assert engine == (IMAGE, TOO_LARGE, TOO_COMPLEX)

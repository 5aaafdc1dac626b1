"""The README's run command: `cropq up` starts everything, the printed curl example works, Ctrl-C stops it;
a second shell's commands find the stack with no variable set; killed hard, it leaves no process behind."""

from __future__ import annotations

import os
import re
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from cropq_cli.localstack import child_pids, free_port
from cropq_cli.stack import _sample_jpeg
from cropq_cli.stack_file import live_stack, stack_file_path

pytestmark = pytest.mark.integration


def test_cropq_up_serves_the_printed_example_and_stops_cleanly(tmp_path: Path) -> None:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("CROPQ_")}
    env.update(CROPQ_DATA_DIR=str(tmp_path / "data"), PYTHONUNBUFFERED="1")
    proc = subprocess.Popen(
        [sys.executable, "-m", "cropq_cli.main", "up", "--port", str(port), "--workers", "1"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
        start_new_session=True,
    )
    lines: list[str] = []
    try:
        assert proc.stdout is not None
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            lines.append(line)
            if "Press Ctrl-C to stop." in line:
                break
        out = "".join(lines)
        assert "Press Ctrl-C to stop." in out, out
        assert f"http://127.0.0.1:{port}" in out and "AccessKeySecret" in out
        # Run the printed curl submit (without a shell), then poll as printed.
        submit = re.search(r"curl -s -X POST .*?-d '.*?'", out.replace("\\\n", " "), re.DOTALL)
        assert submit, out
        argv = shlex.split(submit.group(0))
        result = subprocess.run(argv, capture_output=True, text=True, check=True, timeout=30)
        rid = httpx.Response(200, content=result.stdout).json()["RequestId"]
        auth = re.search(r"Bearer ([^']+)'", out)
        assert auth

        def poll(request_id: str) -> dict[str, Any]:
            """Long-poll the job as the banner prints it."""
            answer: dict[str, Any] = httpx.get(
                f"http://127.0.0.1:{port}/v1/projects/demo/crop-jobs/{request_id}",
                params={"wait": 20},
                headers={"Authorization": f"Bearer {auth.group(1)}"},
                timeout=30,
            ).json()
            return answer

        job = poll(rid)
        assert job["Status"] == "Succeeded", job
        assert [c["AspectRatio"] for c in job["Croppings"]] == ["1:1", "16:9"]

        # The embedded Valkey crashes: `cropq up` starts it again and the service heals by itself.
        redis_port = re.search(r"Redis: redis://127\.0\.0\.1:(\d+)/", out)
        assert redis_port, out
        # Valkey sets its process title to its binary and address.
        valkey = subprocess.run(
            ["pgrep", "-f", f"valkey.* 127.0.0.1:{redis_port.group(1)}"], capture_output=True, text=True
        ).stdout.split()
        assert len(valkey) == 1, valkey
        os.kill(int(valkey[0]), signal.SIGKILL)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            lines.append(line)
            if "valkey exited" in line and "starting it again" in line:
                break
        healed = None
        while time.monotonic() < deadline and healed is None:
            result = subprocess.run(argv, capture_output=True, text=True, timeout=30)
            answer = httpx.Response(200, content=result.stdout).json()
            if "Status" in answer:
                healed = answer["RequestId"]
            else:
                assert answer["Code"] == "ServiceUnavailable", answer  # while it restarts
                time.sleep(0.5)
        assert healed, "".join(lines)
        job = poll(healed)
        assert job["Status"] == "Succeeded", job
    finally:
        os.killpg(proc.pid, signal.SIGINT)  # what Ctrl-C in a terminal does
        code = proc.wait(timeout=60)
    assert code == 0, "".join(lines) + (proc.stdout.read() if proc.stdout else "")
    assert not stack_file_path(tmp_path / "data").exists()  # a stopped stack is found by no second shell
    # Nothing of the stack is left running.
    time.sleep(0.5)
    leftover = subprocess.run(["pgrep", "-f", str(tmp_path)], capture_output=True, text=True).stdout.split()
    assert leftover == []


def without_cropq_variables() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("CROPQ_")} | {"PYTHONUNBUFFERED": "1"}


def start_up(cwd: Path, port: int) -> tuple[subprocess.Popen[str], str]:
    """`cropq up` in ``cwd`` with no CROPQ_ variable but the port; its output up to the banner's end."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "cropq_cli.main", "up", "--port", str(port), "--workers", "1"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=without_cropq_variables(),
        cwd=cwd,
        start_new_session=True,
    )
    assert proc.stdout is not None
    lines: list[str] = []
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and "Press Ctrl-C to stop." not in "".join(lines[-1:]):
        line = proc.stdout.readline()
        if not line:
            break
        lines.append(line)
    return proc, "".join(lines)


def process_tree(pid: int) -> set[int]:
    """``pid``'s descendants, however deep (a Celery worker's prefork children and their decode servers)."""
    found: set[int] = set()
    todo = [pid]
    while todo:
        for child in child_pids(todo.pop()):
            if child not in found:
                found.add(child)
                todo.append(child)
    return found


def running(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.rindex(")") + 2] != "Z"  # a zombie has ended; only its parent's reaping is left


def second_shell(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """A `cropq` command from another terminal in the same folder: no CROPQ_ variable at all."""
    return subprocess.run(
        [sys.executable, "-m", "cropq_cli.main", *args],
        capture_output=True,
        text=True,
        env=without_cropq_variables(),
        cwd=cwd,
        timeout=60,
    )


def test_a_second_shell_reaches_the_stack_and_a_killed_stack_leaves_no_process(tmp_path: Path) -> None:
    proc, out = start_up(tmp_path, free_port())
    tree: set[int] = set()
    try:
        assert "Press Ctrl-C to stop." in out, out
        data = tmp_path / ".cropq"
        assert stack_file_path(data).stat().st_mode & 0o777 == 0o600
        image = tmp_path / "photo.jpg"
        image.write_bytes(_sample_jpeg())

        submitted = second_shell(tmp_path, "submit", str(image), "--project", "demo", "--ratios", "1:1")
        assert submitted.returncode == 0, submitted.stderr
        assert submitted.stdout.startswith("Succeeded"), submitted.stdout
        keys = second_shell(tmp_path, "keys", "list")  # Redis and the secret key come from the file too
        assert keys.returncode == 0 and "LTAIdev" in keys.stdout, keys.stderr
        uploaded = second_shell(tmp_path, "upload", str(image), "--bucket", "demo", "--prefix", "second/")
        assert uploaded.stdout.strip() == "oss://demo/second/photo.jpg", uploaded.stderr

        tree = process_tree(proc.pid)
        # Valkey, SeaweedFS, the API, a crop worker and a callback worker, with prefork children.
        assert len(tree) >= 7, tree
    finally:
        os.kill(proc.pid, signal.SIGKILL)  # only `cropq up` itself: nothing gets to stop its children
        proc.wait(timeout=10)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and any(running(p) for p in tree):
        time.sleep(0.2)
    assert [p for p in tree if running(p)] == []
    # The file outlives a SIGKILL, but names a process that is gone: the second shell no longer uses it.
    assert stack_file_path(tmp_path / ".cropq").exists() and live_stack(tmp_path / ".cropq") is None
    orphaned = second_shell(tmp_path, "jobs", "list", "--project", "demo")
    assert orphaned.returncode == 2 and "cropq up" in orphaned.stderr, orphaned.stderr

"""The README's run command: `cropq up` starts everything, the printed curl example works, Ctrl-C stops it."""

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

from cropq_cli.localstack import free_port

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
    # Nothing of the stack is left running.
    time.sleep(0.5)
    leftover = subprocess.run(["pgrep", "-f", str(tmp_path)], capture_output=True, text=True).stdout.split()
    assert leftover == []

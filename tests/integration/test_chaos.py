"""The chaos script at a small scale: jobs submitted before and during worker-child SIGKILLs, a Valkey
restart, a storage outage and a callback receiver answering 500 then 410 all end Succeeded, each result
stored once, each callback delivered at most once, and the API answers 503 with an IMM body while
Redis is away."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
SMALL_SCALE = {
    "--jobs": "24",
    "--jobs-before": "8",
    "--fault-seconds": "14",
    "--kill-every": "2",
    "--redis-at": "2",
    "--redis-down": "3",
    "--s3-at": "6",
    "--s3-down": "6",
    "--callback-500": "4",
    "--callback-410": "8",
    "--wait-minutes": "3",
    # A message lost with a killed child or the Valkey restart is sent again by the orphan sweeper after
    # 2 x the visibility timeout + 5 s: 25 s here rather than the default's 125 s.
    "--set": "visibility_timeout=10",
}


@pytest.mark.timeout(420)
def test_chaos_at_small_scale_loses_and_duplicates_nothing(tmp_path: Path) -> None:
    figures = tmp_path / "chaos.json"
    argv = [sys.executable, str(ROOT / "bench" / "chaos.py"), "--json", str(figures)]
    argv += [part for flag, value in SMALL_SCALE.items() for part in (flag, value)]
    proc = subprocess.run(
        argv,
        cwd=ROOT,
        env={**os.environ, "TMPDIR": str(tmp_path)},  # the stack's folder lands in the test's own
        capture_output=True,
        text=True,
        timeout=400,
    )
    out = f"exit {proc.returncode}\n{proc.stdout[-4000:]}\n{proc.stderr[-3000:]}"
    assert figures.exists(), f"bench/chaos.py wrote no figures:\n{out}"
    f = json.loads(figures.read_text())
    assert f["accepted"] >= 24 and f["not_accepted"] == 0, out
    assert f["lost"] == 0, out
    assert f["failed"] == 0 and f["succeeded"] == f["accepted"], out
    assert f["duplicated_results"] == 0, out
    assert f["duplicate_callbacks"] == 0 and f["callbacks_unsettled"] == 0, out
    assert f["exited_processes"] == {}, out  # workers and callback workers ride out every fault
    assert f["kills"] >= 5, out  # the faults really happened
    assert f["outage_requests"] >= 5 and f["outage_all_503_imm"], out
    assert f["outage_max_seconds"] <= 6, out
    assert f["other_5xx"] == 0, out
    assert proc.returncode == 0, out

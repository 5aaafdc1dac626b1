"""bench/hostile_bench.py still runs and prints its tables (on two cases; its figures are not judged)."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[3] / "bench" / "hostile_bench.py"


def test_hostile_bench_prints_a_row_per_case_and_the_sandbox_overhead(
    capsys: pytest.CaptureFixture[str],
) -> None:
    spec = importlib.util.spec_from_file_location("bench_hostile", BENCH)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    cases = ["scan bomb JPEG (3,000 scans)", "palette + alpha PNG"]
    assert module.main(["--only", *cases, "--repeat", "1", "--normal-side", "800"]) == 0
    out = capsys.readouterr().out
    assert "vector extensions:" in out
    assert re.search(
        r"^\| scan bomb JPEG \(3,000 scans\) \| [\d.]+ kB \| InvalidArgument.ImageTooComplex \|", out, re.M
    )
    assert re.search(r"^\| palette \+ alpha PNG \| [\d.]+ kB \| Succeeded \| [\d.]+ \| \d+ \|", out, re.M)
    assert re.search(
        r"^\| sandboxed \(decode server \+ limits \+ pipes\) \| [\d.]+ \| -?[\d.]+ \| [\d.]+ \|$", out, re.M
    )

"""The benchmark scripts still run and print their tables (on tiny inputs; their figures are not judged)."""

from __future__ import annotations

import importlib.util
import json
import re
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
from numpy.typing import NDArray

from tests.unit.engine.engine_helpers import ASTRONAUT_FACE, encode

BENCH = Path(__file__).resolve().parents[3] / "bench"


def _load(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"bench_{name}", BENCH / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_engine_bench_prints_every_row_with_its_ratio(
    tmp_path: Path, astronaut: NDArray[np.uint8], capsys: pytest.CaptureFixture[str]
) -> None:
    image = tmp_path / "a.jpg"
    image.write_bytes(encode(astronaut, "JPEG", quality=90))
    assert _load("engine_bench").main([str(image), "--repeat", "1", "--no-peers"]) == 0
    out = capsys.readouterr().out
    row = re.compile(r"^\| ([^|]+?) \| [\d.]+ \| [\d.]+ \| ([\d.]+) \|$", re.M)
    rows = {name: float(ratio) for name, ratio in row.findall(out)}
    assert rows["decode floor (1/8 JPEG)"] == 1.0
    assert {name for name in rows if name.startswith("cropq")} == {
        "cropq (default: faces + objects and people)",
        "cropq (default, object detector in int8)",
        "cropq (object detection on hint only)",
        "cropq (hint only, faces from 3.3%: face detection at 640)",
    }
    assert all(ratio > 0 for ratio in rows.values())
    assert "object model with CROPQ_OBJECT_PRECISION=int8: onnxruntime" in out and ", int8" in out


def test_face_scale_counts_the_faces_it_finds(
    tmp_path: Path, astronaut: NDArray[np.uint8], capsys: pytest.CaptureFixture[str]
) -> None:
    faces = tmp_path / "data" / "faces"
    (faces / "images").mkdir(parents=True)
    (faces / "images" / "a.png").write_bytes(encode(astronaut))
    (faces / "images" / "flat.png").write_bytes(encode(np.full((300, 400, 3), 90, dtype=np.uint8)))
    x0, y0, x1, y1 = ASTRONAUT_FACE
    manifest = [
        {"image": "images/a.png", "boxes": [[x0, y0, x1 - x0, y1 - y0, "face"]]},
        {"image": "images/flat.png", "boxes": [[10, 10, 10, 10, "face"]]},  # nothing to find there
    ]
    (faces / "manifest.jsonl").write_text("\n".join(json.dumps(m) for m in manifest) + "\n")
    assert _load("face_scale").main(["--eval-dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    # The astronaut's face (112 px, 56 px at half size) is found at both sizes; the 10-px box (5 px at
    # half size) on a flat image is not.
    assert "| 48 px and more | 2 | 1.00 |" in out
    assert "| 8-11 px | 1 | 0.00 |" in out and "| 0-7 px | 1 | 0.00 |" in out

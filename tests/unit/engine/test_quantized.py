"""The detectors' precision setting: fp32 by default, int8 when asked and shipped, fp32 (one log line)
when asked and not shipped."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
from numpy.typing import NDArray

from worker.engine import detectors
from worker.engine.config import EngineConfig, InvalidEngineConfig


@pytest.mark.parametrize("field", ["face_precision", "object_precision"])
def test_an_unknown_precision_is_refused_when_the_config_is_built(field: str) -> None:
    with pytest.raises(InvalidEngineConfig, match=field):
        EngineConfig(**{field: "int4"})  # type: ignore[arg-type]


def test_fp32_is_the_default_precision_of_both_detectors(chelsea: NDArray[np.uint8]) -> None:
    obj = detectors.ObjectDetector()
    assert obj.detect(chelsea)
    assert [s.precision for s in obj._sessions._loaded.values()] == ["fp32"]
    assert obj._precisions._int8 is None  # the int8 graph is not even read


def test_int8_asked_but_not_shipped_runs_fp32_with_one_log_line(
    tmp_path: Path,
    chelsea: NDArray[np.uint8],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.setattr(detectors, "_warned_precision", set())
    face = detectors.CenterFace(int8_path=str(tmp_path / "absent.onnx"))
    obj = detectors.ObjectDetector(int8_path=str(tmp_path / "absent.onnx"))
    cfg = EngineConfig(face_precision="int8", object_precision="int8")
    with caplog.at_level(logging.WARNING, logger="worker.engine.detectors"):
        for _ in range(3):
            assert face.detect(chelsea, cfg) == face.detect(chelsea)
            assert obj.detect(chelsea, cfg) == obj.detect(chelsea)
    messages = [r.getMessage() for r in caplog.records]
    assert len(messages) == 2 and all("runs in fp32" in m for m in messages), messages


# --- the shipped int8 NanoDet ---------------------------------------------------------------------------
# Measured on scikit-image's photos (tools/quantize_detectors.py's graph against fp32): the same objects,
# boxes at IoU 0.97 or more, scores within 0.05. The tolerances leave room for another CPU's int8 kernels
# and stay far below what would change a crop: an IoU of 0.9 moves a 400-px box edge by a few pixels,
# and the engine's thresholds (0.3-0.45) are 0.1 apart.
SCORE_TOLERANCE = 0.08
IOU_FLOOR = 0.9


@pytest.mark.parametrize("photo", ["astronaut", "chelsea", "coffee", "rocket"])
def test_int8_nanodet_finds_what_fp32_finds(photo: str) -> None:
    from skimage import data

    obj = detectors.ObjectDetector()
    rgb = np.asarray(getattr(data, photo)())
    fp32 = obj.detect(rgb)
    int8 = obj.detect(rgb, EngineConfig(object_precision="int8"))
    floor = EngineConfig().object_candidate_threshold + SCORE_TOLERANCE  # surely above the cut in both
    for ref in (b for b in fp32 if b.score >= floor):
        twin = max((b for b in int8 if b.label == ref.label), key=lambda b: detectors.iou(ref, b))
        assert detectors.iou(ref, twin) >= IOU_FLOOR, (ref, twin)
        assert abs(twin.score - ref.score) <= SCORE_TOLERANCE, (ref, twin)
    for extra in (b for b in int8 if b.score >= floor):
        assert any(b.label == extra.label and detectors.iou(b, extra) >= IOU_FLOOR for b in fp32), extra


def test_object_precision_int8_runs_the_int8_graph(chelsea: NDArray[np.uint8]) -> None:
    obj = detectors.ObjectDetector()
    blob = obj.blob(np.ascontiguousarray(chelsea[:288, :416]))  # sides multiples of 32, as detect makes them
    int8 = obj._precisions.get("int8").get("onnxruntime")
    fp32 = obj._precisions.get("fp32").get("onnxruntime")
    assert (int8.precision, fp32.precision) == ("int8", "fp32")
    out_int8, out_fp32 = int8.run(blob), fp32.run(blob)
    # Another graph: close (the class logits within a few tenths), never the same bits.
    assert all(a.shape == b.shape for a, b in zip(out_int8, out_fp32, strict=True))
    assert max(float(np.abs(a - b).max()) for a, b in zip(out_int8, out_fp32, strict=True)) > 1e-3
    # And the detector takes it when the config says so.
    obj.detect(chelsea, EngineConfig(object_precision="int8", object_runtime="onnxruntime"))
    assert obj._precisions._int8 is not None and "onnxruntime" in obj._precisions._int8._loaded


def test_the_int8_graph_records_where_it_came_from() -> None:
    import hashlib
    import json

    record = json.loads(Path(detectors.OBJECT_MODEL_INT8).with_suffix(".json").read_text())
    assert record["source_sha256"] == hashlib.sha256(Path(detectors.OBJECT_MODEL).read_bytes()).hexdigest()
    assert record["sha256"] == hashlib.sha256(Path(detectors.OBJECT_MODEL_INT8).read_bytes()).hexdigest()
    assert record["calibration_images"] > 100 and len(record["calibration_file_list_sha256"]) == 64


def test_int8_on_a_cpu_without_vnni_says_its_quality_is_unmeasured_there(
    chelsea: NDArray[np.uint8], monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(detectors, "cpu_has_vnni", lambda: False)
    obj = detectors.ObjectDetector()
    with caplog.at_level(logging.WARNING, logger="worker.engine.detectors"):
        for _ in range(2):
            assert obj.detect(chelsea, EngineConfig(object_precision="int8"))
    messages = [r.getMessage() for r in caplog.records]
    assert len(messages) == 1 and "no VNNI" in messages[0], messages

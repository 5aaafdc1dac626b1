"""Inference back ends: the choice (auto, by name, fallbacks) and the same outputs on both runtimes."""

from __future__ import annotations

import logging
from typing import Any

import cv2
import numpy as np
import pytest
from numpy.typing import NDArray
from skimage import data

from tests.unit.engine.test_detector_graphs import REFERENCE, assert_same_detections, detections_in_pixels
from worker.engine import detectors, runtimes
from worker.engine.config import EngineConfig, InvalidEngineConfig

needs_openvino = pytest.mark.skipif(not runtimes.is_available("openvino"), reason="openvino is not installed")


@pytest.fixture
def installed(monkeypatch: pytest.MonkeyPatch) -> Any:
    """Pretend only the given runtimes are installed."""

    def pretend(*names: str) -> None:
        monkeypatch.setattr(runtimes, "is_available", lambda runtime: runtime in names)

    return pretend


@pytest.mark.parametrize("avx512", [True, False])
def test_auto_takes_the_measured_best_when_installed(
    installed: Any, monkeypatch: pytest.MonkeyPatch, avx512: bool
) -> None:
    monkeypatch.setattr(runtimes, "cpu_has_avx512", lambda: avx512)
    installed("onnxruntime", "openvino")
    for model in ("face", "object"):
        assert runtimes.resolve("auto", model) == runtimes.AUTO_CHOICE[model][avx512]
    installed("onnxruntime")
    assert {runtimes.resolve("auto", m) for m in ("face", "object")} == {"onnxruntime"}


def test_a_runtime_named_but_absent_falls_back_to_onnxruntime_with_one_log_line(
    installed: Any, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(runtimes, "_warned", set())
    installed("onnxruntime")
    with caplog.at_level(logging.WARNING, logger="worker.engine.runtimes"):
        assert [runtimes.resolve("openvino", "object") for _ in range(3)] == ["onnxruntime"] * 3
    assert len(caplog.records) == 1 and "openvino is not installed" in caplog.records[0].getMessage()
    installed("onnxruntime", "openvino")
    assert runtimes.resolve("openvino", "object") == "openvino"
    assert runtimes.resolve("onnxruntime", "face") == "onnxruntime"


def test_onednn_isa_cap_counts_as_no_avx512(monkeypatch: pytest.MonkeyPatch) -> None:
    runtimes.cpu_has_avx512.cache_clear()
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX2")
    try:
        assert runtimes.cpu_has_avx512() is False
    finally:
        runtimes.cpu_has_avx512.cache_clear()


@pytest.mark.parametrize("field", ["face_runtime", "object_runtime"])
def test_config_refuses_an_unknown_runtime(field: str) -> None:
    with pytest.raises(InvalidEngineConfig, match=field):
        EngineConfig(**{field: "tensorrt"})  # type: ignore[arg-type]
    assert getattr(EngineConfig(**{field: "openvino"}), field) == "openvino"  # type: ignore[arg-type]


def test_the_detectors_run_on_the_runtime_the_config_names(installed: Any) -> None:
    installed("onnxruntime")  # openvino "absent": both names end on onnxruntime, loaded once
    obj = detectors.ObjectDetector()
    rgb = np.asarray(data.chelsea())
    a = obj.detect(rgb, EngineConfig(object_runtime="openvino"))
    b = obj.detect(rgb, EngineConfig(object_runtime="onnxruntime"))
    assert a == b and a and a[0].label == "cat"
    assert list(obj._sessions._loaded) == ["onnxruntime"]


# --- both runtimes, same outputs ---------------------------------------------------------------------
@needs_openvino
@pytest.mark.parametrize("case", [pytest.param(c, id=c["image"]) for c in REFERENCE["images"]])
def test_nanodet_on_openvino_reproduces_the_original_graph(case: dict[str, Any]) -> None:
    # Another runtime sums in another order: a few float32 ulps of a ~400-px coordinate (~1e-4 px).
    assert_same_detections(detections_in_pixels(case, "openvino"), case["detections"], box_atol=1e-3)


@needs_openvino
def test_both_runtimes_give_the_same_raw_outputs() -> None:
    face, obj = detectors.CenterFace(), detectors.ObjectDetector()
    blobs: list[tuple[Any, NDArray[np.float32]]] = []
    for name, long_side in (("astronaut", 416), ("coffee", 320)):
        rgb = np.asarray(getattr(data, name)())
        h, w = rgb.shape[:2]
        s = long_side / max(h, w)
        small = np.asarray(cv2.resize(rgb, (round(w * s / 32) * 32, round(h * s / 32) * 32)), dtype=np.uint8)
        blobs.append((obj, obj.blob(small)))
        blobs.append((face, np.ascontiguousarray(small.transpose(2, 0, 1)[None], dtype=np.float32)))
    for det, blob in blobs:
        ort_out = det._sessions.get("onnxruntime").run(blob)
        ov_out = det._sessions.get("openvino").run(blob)
        assert det._sessions.get("openvino").runtime == "openvino"
        for a, b in zip(ort_out, ov_out, strict=True):
            assert a.shape == b.shape
            # Logits of magnitude up to ~20: float32 sums in another order differ in the last bits.
            np.testing.assert_allclose(b, a, rtol=1e-4, atol=1e-4)


@needs_openvino
def test_faces_are_the_same_on_both_runtimes(astronaut: NDArray[np.uint8]) -> None:
    face = detectors.CenterFace()
    on_ort = face.detect(astronaut, EngineConfig(face_runtime="onnxruntime"))
    on_ov = face.detect(astronaut, EngineConfig(face_runtime="openvino"))
    assert len(on_ort) == len(on_ov) >= 1
    for a, b in zip(on_ort, on_ov, strict=True):
        assert a.label == b.label
        np.testing.assert_allclose(
            [b.x0, b.y0, b.x1, b.y1, b.score], [a.x0, a.y0, a.x1, a.y1, a.score], atol=1e-5
        )

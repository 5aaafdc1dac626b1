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

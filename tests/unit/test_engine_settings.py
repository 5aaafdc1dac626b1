"""The engine settings: one mapping from `CROPQ_*` variables to the engine, for workers and the CLI."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any, get_args

import numpy as np
import pytest
from pydantic import ValidationError

from cropq_cli.crop import run_crop_cli
from tests.unit.engine.engine_helpers import encode
from worker.engine.config import EngineConfig, ObjectDetection
from worker.settings import Settings, engine_config, get_settings


@pytest.fixture
def fresh_settings() -> Iterator[None]:
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


def test_engine_config_follows_the_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CROPQ_FACE_DETECT_LONG_SIDE", "640")
    monkeypatch.setenv("CROPQ_OBJECT_DETECTION", "hint")
    monkeypatch.setenv("CROPQ_MAX_IMAGE_PIXELS", "5000000")
    cfg = engine_config(Settings())
    assert (cfg.detect_long_side, cfg.object_detection, cfg.max_pixels) == (640, "hint", 5_000_000)
    assert cfg.analysis_long_side == EngineConfig().analysis_long_side  # the rest is the engine's own


def test_the_settings_offer_exactly_the_engine_modes() -> None:
    annotation = Settings.model_fields["object_detection"].annotation
    assert get_args(annotation) == get_args(ObjectDetection)


@pytest.mark.parametrize(
    "values",
    [
        {
            "face_detect_long_side": 160,
            "max_image_pixels": 1,
            "decode_memory_mb": 64,
            "decode_time_limit_seconds": 0.001,
            "render_max_side": 16,
            "render_time_limit_seconds": 0.001,
            "object_detection": "off",
        },
        {
            "face_detect_long_side": 1280,
            "decode_time_limit_seconds": 300,
            "render_max_side": 16384,
            "render_time_limit_seconds": 300,
            "object_detection": "no_faces",
        },
    ],
)
def test_every_value_the_settings_accept_makes_a_valid_engine_config(values: dict[str, Any]) -> None:
    # EngineConfig checks its ranges when built: none of them may be narrower than the settings' own.
    cfg = engine_config(Settings(**values))
    assert cfg.detect_long_side == values["face_detect_long_side"]
    assert cfg.render_max_side == values["render_max_side"]
    assert cfg.object_detection == values["object_detection"]


@pytest.mark.parametrize("value", ["100", "5000", "big"])
def test_face_detection_size_out_of_range_is_refused(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv("CROPQ_FACE_DETECT_LONG_SIDE", value)
    with pytest.raises(ValidationError, match="face_detect_long_side"):
        Settings()


def test_cli_crops_with_the_workers_settings(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fresh_settings: None, capsys: pytest.CaptureFixture[str]
) -> None:
    image = tmp_path / "a.png"
    image.write_bytes(encode(np.full((60, 90, 3), 128, dtype=np.uint8)))
    monkeypatch.setenv("CROPQ_MAX_IMAGE_PIXELS", "5000")  # the 60 x 90 image is 5400 pixels
    assert run_crop_cli([str(image)], "1:1", None, None) == 1
    line = json.loads(capsys.readouterr().out)
    assert line["Code"] == "InvalidArgument.ImageTooLarge", line


def test_cli_refuses_invalid_settings_with_a_clear_message(
    monkeypatch: pytest.MonkeyPatch, fresh_settings: None, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("CROPQ_FACE_DETECT_LONG_SIDE", "99999")
    assert run_crop_cli(["whatever.jpg"], "1:1", None, None) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and "invalid CROPQ_ settings" in captured.err
    assert "face_detect_long_side" in captured.err

"""The engine skips work that cannot change a crop, and reports the stages it runs (issue 16).

Detectors are replaced by counting stubs: the object stub finds one confident person at the left edge,
which pulls every crop that can move towards it, so a skipped call that mattered would show.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator

import numpy as np
import pytest
from numpy.typing import NDArray

from worker.engine import detectors
from worker.engine.config import EngineConfig
from worker.engine.detectors import Box, Detector
from worker.engine.pipeline import detect_crops_array
from worker.engine.stages import reporting_stages

PERSON = Box(0.0, 0.1, 0.2, 0.9, 0.95, "person")
FULL = EngineConfig(skip_objects_for_whole_image=False)


class Counting:
    """A detector that records the size of every image it is given and returns fixed boxes."""

    def __init__(self, name: str, boxes: list[Box]) -> None:
        self.name = name
        self.boxes = boxes
        self.shapes: list[tuple[int, int]] = []
        self.input_sides: list[int] = []

    def detect(self, rgb: NDArray[np.uint8], config: EngineConfig = FULL) -> list[Box]:
        self.shapes.append((rgb.shape[1], rgb.shape[0]))
        self.input_sides.append(config.object_input_long_side)
        return list(self.boxes)


def _factory(stub: Counting) -> Callable[[], Detector]:
    return lambda: stub


@pytest.fixture
def stubs() -> Iterator[dict[str, Counting]]:
    made = {"face": Counting("face", []), "object": Counting("object", [PERSON])}
    originals = {name: detectors._FACTORIES[name] for name in made}
    for name, stub in made.items():
        detectors.register_detector(name, _factory(stub))
    try:
        yield made
    finally:
        for name, factory in originals.items():
            detectors.register_detector(name, factory)


def _image(width: int, height: int) -> NDArray[np.uint8]:
    rng = np.random.default_rng(7)
    im = rng.integers(0, 40, (height, width, 3), dtype=np.uint8)
    im[height // 3 : 2 * height // 3, 2 * width // 3 : width - 4] = 230  # a bright patch on the right
    return im


def _crops(rgb: NDArray[np.uint8], ratios: list[str], cfg: EngineConfig) -> list[tuple[object, float]]:
    return [(c.rect, c.confidence) for c in detect_crops_array(rgb, ratios, config=cfg).croppings]


@pytest.mark.parametrize(
    ("size", "ratios"),
    [((400, 300), ["4:3", "8:6"]), ((600, 600), ["1:1"]), ((1920, 1080), ["16:9"]), ((300, 500), ["3:5"])],
)
def test_the_object_detector_is_skipped_when_every_crop_is_the_whole_image(
    stubs: dict[str, Counting], size: tuple[int, int], ratios: list[str]
) -> None:
    rgb = _image(*size)
    skipped = detect_crops_array(rgb, ratios)
    assert stubs["object"].shapes == []
    assert stubs["face"].shapes  # faces still run: they are reported and may match a hint
    full = detect_crops_array(rgb, ratios, config=FULL)
    assert len(stubs["object"].shapes) == 1
    assert [(c.rect, c.confidence) for c in skipped.croppings] == [
        (c.rect, c.confidence) for c in full.croppings
    ]
    assert all(c.rect.width == size[0] and c.rect.height == size[1] for c in skipped.croppings)
    # What differs: the skipped detector's people are not reported.
    assert [d.kind for d in full.detections] == ["person"] and skipped.detections == []


def test_the_stub_person_moves_a_crop_that_can_move(stubs: dict[str, Counting]) -> None:
    """The equality above is not vacuous: where a window can slide, the stub's person pulls it left."""
    rgb = _image(400, 300)
    with_person = _crops(rgb, ["1:1"], EngineConfig())
    stubs["object"].boxes = []
    without = _crops(rgb, ["1:1"], EngineConfig())
    assert with_person != without
    assert with_person[0][0].left < without[0][0].left  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("size", "ratios"),
    [
        ((1001, 750), ["4:3"]),  # 1000 x 750: one pixel of play, so the detector can still move it
        ((400, 300), ["4:3", "1:1"]),  # one ratio of the image's own is not enough
        ((400, 300), ["4:3", "auto"]),  # auto chooses among ratios by what the crops keep
    ],
)
def test_the_object_detector_runs_when_a_crop_can_move(
    stubs: dict[str, Counting], size: tuple[int, int], ratios: list[str]
) -> None:
    detect_crops_array(_image(*size), ratios)
    assert len(stubs["object"].shapes) == 1


def test_a_hint_naming_a_coco_class_still_runs_the_detector(stubs: dict[str, Counting]) -> None:
    result = detect_crops_array(_image(400, 300), ["4:3"], ["person"])
    assert len(stubs["object"].shapes) == 1
    assert result.matched_hints == ["person"]


def test_modes_that_never_run_it_stay_off(stubs: dict[str, Counting]) -> None:
    for mode in ("off", "hint"):
        detect_crops_array(_image(400, 300), ["1:1"], config=EngineConfig(object_detection=mode))
    assert stubs["object"].shapes == []


def test_a_small_photo_is_upscaled_for_faces_by_at_most_the_cap(stubs: dict[str, Counting]) -> None:
    rgb = _image(200, 150)
    detect_crops_array(rgb, ["1:1"], config=EngineConfig(detect_max_upscale=2.0))
    detect_crops_array(rgb, ["1:1"], config=EngineConfig(detect_max_upscale=16.0))
    detect_crops_array(_image(500, 400), ["1:1"], config=EngineConfig(detect_max_upscale=2.0))
    assert stubs["face"].shapes == [(400, 300), (640, 480), (640, 512)]


def test_a_small_photo_is_upscaled_for_objects_by_at_most_the_cap(stubs: dict[str, Counting]) -> None:
    capped = EngineConfig(object_max_upscale=1.0)
    for width, height in ((256, 256), (300, 200), (500, 400), (4000, 3000)):
        detect_crops_array(_image(width, height), ["16:9"], config=capped)
    detect_crops_array(_image(256, 256), ["16:9"], config=EngineConfig(object_max_upscale=16.0))
    # The source's long side rounded up to NanoDet's stride of 32, never above object_input_long_side.
    assert stubs["object"].input_sides == [256, 320, 416, 416, 416]


def test_the_engine_reports_its_stages(stubs: dict[str, Counting]) -> None:
    seen: list[tuple[str, int, int]] = []
    with reporting_stages(lambda name, start, end: seen.append((name, start, end))):
        detect_crops_array(_image(400, 300), ["1:1", "16:9"])
    names = [name for name, _, _ in seen]
    assert set(names) == {
        "decode",
        "detect.face",
        "detect.object",
        "detect",
        "score.maps",
        "score.windows",
        "score",
    }
    assert names.index("decode") < names.index("detect") < names.index("score.windows")
    assert all(end >= start for _, start, end in seen)
    spans = {name: (start, end) for name, start, end in seen}
    # Each detector's time lies inside the detect stage.
    for inner in ("detect.face", "detect.object"):
        assert spans["detect"][0] <= spans[inner][0] <= spans[inner][1] <= spans["detect"][1]


def test_the_skip_can_be_turned_off_per_config(stubs: dict[str, Counting]) -> None:
    cfg = dataclasses.replace(EngineConfig(), skip_objects_for_whole_image=False)
    detect_crops_array(_image(400, 300), ["4:3"], config=cfg)
    assert len(stubs["object"].shapes) == 1

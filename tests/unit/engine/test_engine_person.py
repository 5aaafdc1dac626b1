"""The shipped SSDLite person detector and the (opt-in) dominant-blob constraint."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from numpy.typing import NDArray
from skimage import data as skdata

from tests.unit.engine.engine_helpers import assert_valid, encode
from worker.engine.config import EngineConfig
from worker.engine.decode import from_array
from worker.engine.detectors import PERSON_MODEL, get_detector
from worker.engine.pipeline import analyse, detect_crops, dominant_blob

ALWAYS = EngineConfig(person_detector="always")


def test_model_ships_with_its_licence() -> None:
    import os

    assert os.path.getsize(PERSON_MODEL) > 1_000_000
    notice = os.path.join(os.path.dirname(PERSON_MODEL), "pedestrian_ssdlite.LICENSE")
    with open(notice, encoding="utf-8") as fh:
        assert "MIT License" in fh.read()


def test_finds_the_astronaut(astronaut: NDArray[np.uint8]) -> None:
    people = get_detector("person").detect(astronaut)
    assert people, "the astronaut is a person"
    best = people[0]
    assert best.label == "person" and best.score > 0.5
    # Her face (180..270 x 64..176 of 512) lies inside the box.
    assert best.x0 * 512 <= 180 and best.x1 * 512 >= 270 and best.y0 * 512 <= 64 + 8 and best.y1 * 512 >= 176


def test_no_person_in_coffee() -> None:
    coffee = np.asarray(skdata.coffee())  # type: ignore[no-untyped-call]
    assert get_detector("person").detect(coffee) == []


def test_tiny_and_flat_inputs() -> None:
    det = get_detector("person")
    assert det.detect(np.zeros((4, 4, 3), dtype=np.uint8)) == []
    assert det.detect(np.full((50, 900, 3), 128, dtype=np.uint8)) == []


def test_deterministic(astronaut: NDArray[np.uint8]) -> None:
    det = get_detector("person")
    assert det.detect(astronaut) == det.detect(astronaut.copy())


@pytest.mark.parametrize(
    ("mode", "hints", "runs"),
    [("always", (), True), ("hint", (), False), ("hint", ("行人",), True), ("off", ("person",), False)],
)
def test_when_the_detector_runs(
    astronaut: NDArray[np.uint8], mode: str, hints: tuple[str, ...], runs: bool
) -> None:
    cfg = EngineConfig(person_detector=mode)
    ana = analyse(from_array(astronaut, cfg), hints, cfg)
    assert bool(ana.persons) is runs


def test_no_faces_mode_skips_when_a_face_was_found(astronaut: NDArray[np.uint8]) -> None:
    cfg = EngineConfig(person_detector="no_faces")
    ana = analyse(from_array(astronaut, cfg), (), cfg)
    assert ana.faces and not ana.persons


def test_always_keeps_the_person_in_wide_crops(astronaut: NDArray[np.uint8]) -> None:
    ratios = ["1:1", "4:3", "3:4", "16:9", "9:16"]
    res = detect_crops(encode(astronaut, "JPEG"), ratios, config=ALWAYS)
    assert_valid(res, ratios)
    again = detect_crops(encode(astronaut, "JPEG"), ratios, config=ALWAYS)
    assert res == again


def test_person_hint_matches_the_detected_person(astronaut: NDArray[np.uint8]) -> None:
    res = detect_crops(encode(astronaut, "PNG"), ["1:1"], ["people"])
    assert res.matched_hints == ["people"]


# ------------------------------------------------------------------------------------ dominant blob
BLOB = dataclasses.replace(EngineConfig(), blob_share=0.8, blob_contrast=3.0, blob_level=0.6)


def _map(h: int = 90, w: int = 160) -> NDArray[np.float32]:
    return np.full((h, w), 1e-4, dtype=np.float32)


def test_blob_gate_is_off_by_default() -> None:
    m = _map()
    m[30:60, 100:140] = 1.0
    assert dominant_blob(m, EngineConfig()) is None


def test_one_compact_object_becomes_a_target() -> None:
    m = _map()
    m[30:60, 100:140] = 1.0
    t = dominant_blob(m, BLOB)
    assert t is not None
    assert (t.x0, t.y0, t.x1, t.y1) == (100.0, 30.0, 140.0, 60.0)
    assert t.reward > 0 and t.group == "blob"


def test_clutter_and_flat_maps_get_no_target() -> None:
    rng = np.random.default_rng(0)
    clutter = _map()
    for _ in range(12):
        y, x = int(rng.integers(0, 80)), int(rng.integers(0, 150))
        clutter[y : y + 8, x : x + 8] = 1.0
    assert dominant_blob(clutter, BLOB) is None
    assert dominant_blob(np.ones((90, 160), dtype=np.float32), BLOB) is None
    assert dominant_blob(np.zeros((90, 160), dtype=np.float32), BLOB) is None


def test_blob_on_crops_stays_valid() -> None:
    img = np.full((300, 600, 3), (90, 110, 100), dtype=np.uint8)
    img[100:220, 420:560] = (250, 30, 30)
    ratios = ["1:1", "9:16", "1:2"]
    res = detect_crops(encode(img, "PNG"), ratios, config=BLOB)
    assert_valid(res, ratios)
    for c in res.croppings[:1]:
        assert c.rect.left <= 420 and c.rect.left + c.rect.width >= 560

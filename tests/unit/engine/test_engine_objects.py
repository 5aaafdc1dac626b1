"""The shipped NanoDet object detector (people and the other COCO classes) and how the engine uses it."""

from __future__ import annotations

import os

import numpy as np
import pytest
from numpy.typing import NDArray
from skimage import data as skdata

from tests.unit.engine.engine_helpers import ASTRONAUT_FACE, assert_valid, encode
from worker.engine.config import EngineConfig, ObjectDetection
from worker.engine.decode import from_array
from worker.engine.detectors import OBJECT_MODEL, Box, ObjectDetector, get_detector
from worker.engine.pipeline import _targets, analyse, detect_crops
from worker.engine.scoring import Scene

ALWAYS = EngineConfig(object_detection="always")


@pytest.fixture(scope="module")
def coffee() -> NDArray[np.uint8]:
    return np.asarray(skdata.coffee())  # type: ignore[no-untyped-call]


def test_model_ships_with_its_licence() -> None:
    assert os.path.getsize(OBJECT_MODEL) > 1_000_000
    notice = os.path.join(os.path.dirname(OBJECT_MODEL), "nanodet.LICENSE")
    with open(notice, encoding="utf-8") as fh:
        assert "Apache License" in fh.read()


def test_finds_the_astronaut(astronaut: NDArray[np.uint8]) -> None:
    people = [b for b in get_detector("object").detect(astronaut) if b.label == "person"]
    assert people, "the astronaut is a person"
    best = people[0]
    assert best.score > 0.5
    x0, y0, x1, y1 = ASTRONAUT_FACE  # her face lies inside the box
    assert best.x0 * 512 <= x0 and best.x1 * 512 >= x1 and best.y0 * 512 <= y0 + 8 and best.y1 * 512 >= y1


def test_finds_the_cat_and_the_cup(chelsea: NDArray[np.uint8], coffee: NDArray[np.uint8]) -> None:
    cats = [b for b in get_detector("object").detect(chelsea) if b.label == "cat"]
    assert cats and cats[0].score > 0.4 and cats[0].area > 0.5
    found = get_detector("object").detect(coffee)
    assert any(b.label == "cup" for b in found)
    assert not any(b.label == "person" and b.score >= EngineConfig().person_threshold for b in found)


def test_the_detector_returns_nothing_below_its_candidate_threshold(astronaut: NDArray[np.uint8]) -> None:
    # The engine's lowest score (hint_object_threshold) is the default candidate threshold, which
    # EngineConfig refuses to go under.
    cfg = EngineConfig()
    assert cfg.object_candidate_threshold == cfg.hint_object_threshold
    strict = EngineConfig(
        object_candidate_threshold=0.6, person_threshold=0.6, object_threshold=0.6, hint_object_threshold=0.6
    )
    found = get_detector("object").detect(astronaut, strict)
    assert found and min(b.score for b in found) >= 0.6
    assert len(found) < len(get_detector("object").detect(astronaut, cfg))


def test_boxes_are_fractions_sorted_by_score(astronaut: NDArray[np.uint8]) -> None:
    found = get_detector("object").detect(astronaut)
    assert [b.score for b in found] == sorted((b.score for b in found), reverse=True)
    for b in found:
        assert 0.0 <= b.x0 < b.x1 <= 1.0 and 0.0 <= b.y0 < b.y1 <= 1.0
        assert isinstance(b.x0, float) and isinstance(b.score, float)


def test_input_is_the_training_normalisation() -> None:
    # BGR planes of (v - mean) / std, exactly as the training pipeline fed the network.
    img = np.random.default_rng(3).integers(0, 256, (32, 48, 3), dtype=np.uint8)
    mean, std = np.array([103.53, 116.28, 123.675]), np.array([57.375, 57.12, 58.395])
    expected = ((img[:, :, ::-1] - mean) / std).transpose(2, 0, 1)[None]
    got = ObjectDetector.blob(img)
    assert got.dtype == np.float32 and got.flags.c_contiguous and got.shape == (1, 3, 32, 48)
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-6)


def test_tiny_flat_and_extreme_inputs() -> None:
    det = get_detector("object")
    assert det.detect(np.zeros((4, 4, 3), dtype=np.uint8)) == []
    assert det.detect(np.full((50, 900, 3), 128, dtype=np.uint8)) == []
    assert det.detect(np.full((9, 3000, 3), 60, dtype=np.uint8)) == []


def test_deterministic(astronaut: NDArray[np.uint8]) -> None:
    det = get_detector("object")
    assert det.detect(astronaut) == det.detect(astronaut.copy())


@pytest.mark.parametrize(
    ("mode", "hints", "runs"),
    [
        ("always", (), True),
        ("hint", (), False),
        ("hint", ("行人",), True),
        ("hint", ("chair",), True),
        ("hint", ("face",), False),
        ("off", ("person",), False),
    ],
)
def test_when_the_detector_runs(
    astronaut: NDArray[np.uint8], mode: ObjectDetection, hints: tuple[str, ...], runs: bool
) -> None:
    cfg = EngineConfig(object_detection=mode)
    ana = analyse(from_array(astronaut, cfg), hints, cfg)
    assert bool(ana.persons) is runs


def test_no_faces_mode_skips_when_a_face_was_found(astronaut: NDArray[np.uint8]) -> None:
    cfg = EngineConfig(object_detection="no_faces")
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


@pytest.mark.parametrize("hint", ["cat", "猫", "kittens"])
def test_cat_hint_matches_the_whole_cat(chelsea: NDArray[np.uint8], hint: str) -> None:
    # The cat fills the picture: only a crop as wide as the image can hold all of it.
    res = detect_crops(encode(chelsea, "JPEG"), ["3:2"], [hint])
    assert res.matched_hints == [hint]


@pytest.mark.parametrize("hint", ["cup", "杯子", "coffee cups"])
def test_object_hint_in_english_and_chinese(coffee: NDArray[np.uint8], hint: str) -> None:
    res = detect_crops(encode(coffee, "JPEG"), ["3:2", "1:1"], [hint])
    assert_valid(res, ["3:2", "1:1"])
    assert res.matched_hints == [hint]


def test_object_hint_without_such_object_matches_nothing(coffee: NDArray[np.uint8]) -> None:
    res = detect_crops(encode(coffee, "JPEG"), ["1:1"], ["giraffe"])
    assert res.matched_hints == []


def _box(x0: float, y0: float, x1: float, y1: float, label: str) -> Box:
    return Box(x0, y0, x1, y1, 0.9, label)


def test_a_big_object_is_the_subject_a_small_one_is_context() -> None:
    cfg = EngineConfig()
    big = _box(0.5, 0.2, 0.95, 0.9, "dog")  # 0.32 of the image
    small = _box(0.0, 0.5, 0.2, 0.7, "car")  # 0.04
    targets = _targets([], [], [big, small], {}, 160, 120, cfg)
    assert [(t.group, t.reward, t.cut_cost) for t in targets] == [("object", cfg.largest_object_bonus, 0.0)]
    assert (targets[0].x0, targets[0].x1) == (0.5 * 160, 0.95 * 160)
    assert _targets([], [], [small], {}, 160, 120, cfg) == []


def test_no_object_target_when_a_person_is_larger() -> None:
    cfg = EngineConfig()
    person = _box(0.1, 0.0, 0.8, 1.0, "person")
    bike = _box(0.3, 0.4, 0.9, 1.0, "bicycle")
    groups = [t.group for t in _targets([], [person], [bike], {}, 160, 120, cfg)]
    assert "object" not in groups and groups.count("person") == 1


def test_the_subject_target_moves_the_crop_onto_the_object() -> None:
    # Importance leans left (a busy region); a big object sits right. Without the target, 1:1 and 3:4
    # crops follow the importance; with it, they keep the object whole.
    cfg = EngineConfig()
    imp = np.full((100, 200), 1.0, dtype=np.float32)
    imp[20:80, 10:70] = 3.0
    imp /= imp.sum()
    obj = _box(120 / 200, 0.2, 180 / 200, 0.8, "tv")  # 0.18 of the image
    (target,) = _targets([], [], [obj], {}, 200, 100, cfg)
    for rw, rh in ((1, 1), (3, 4)):
        plain = Scene(imp, 600, 300, [], cfg).best(rw, rh).rect
        kept = Scene(imp, 600, 300, [target], cfg).best(rw, rh).rect
        assert plain.right < 540, (rw, rh, plain)
        assert kept.left <= 360 and kept.right >= 540, (rw, rh, kept)


def test_crops_still_come_when_the_detector_package_is_missing(
    astronaut: NDArray[np.uint8], caplog: pytest.LogCaptureFixture
) -> None:
    from worker.engine import detectors

    def missing() -> detectors.Detector:
        raise ImportError("No module named 'onnxruntime'")

    original = detectors._FACTORIES["object"]
    detectors.register_detector("object", missing)
    try:
        with caplog.at_level("WARNING", logger="worker.engine.detectors"):
            res = detect_crops(encode(astronaut, "PNG"), ["1:1", "9:16"], ["people"])
    finally:
        detectors.register_detector("object", original)
    assert "object detection disabled" in caplog.text and "onnxruntime" in caplog.text
    assert_valid(res, ["1:1", "9:16"])
    # People then come from the face: the body grown from it fits the square crop.
    assert res.matched_hints == ["people"]

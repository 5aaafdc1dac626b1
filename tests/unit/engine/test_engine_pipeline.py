"""The public entry point on images whose right answer is known."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
from numpy.typing import NDArray

from tests.unit.engine.engine_helpers import ASTRONAUT_FACE, assert_valid, encode
from worker.engine import detectors
from worker.engine.config import EngineConfig
from worker.engine.decode import decode
from worker.engine.errors import InvalidAspectRatio
from worker.engine.pipeline import analyse, detect_crops, detect_crops_array
from worker.engine.preview import place_labels, write_preview
from worker.engine.ratios import AUTO_CANDIDATES

ALL = ["1:1", "4:3", "3:4", "16:9", "9:16"]
EXTREMES = ["2:1", "1:2", "3:2", "2:3"]


def _contains(rect_ltwh: tuple[int, int, int, int], box: tuple[int, int, int, int], tol: int = 1) -> bool:
    left, top, w, h = rect_ltwh
    x0, y0, x1, y1 = box
    return left <= x0 + tol and top <= y0 + tol and left + w >= x1 - tol and top + h >= y1 - tol


def _ltwh(res_crop: object) -> tuple[int, int, int, int]:
    r = res_crop.rect  # type: ignore[attr-defined]
    return (r.left, r.top, r.width, r.height)


def test_salient_patch_is_kept() -> None:
    canvas = np.full((300, 600, 3), 128, dtype=np.uint8)
    canvas[40:90, 470:530] = (250, 30, 30)  # a small red patch near the top-right
    res = detect_crops_array(canvas, ["1:1", "3:4", "9:16"])
    for c in res.croppings:
        assert _contains(_ltwh(c), (470, 40, 530, 90))


def test_face_pasted_off_centre_is_inside_every_crop(face_patch: NDArray[np.uint8]) -> None:
    canvas = np.full((600, 900, 3), (95, 110, 120), dtype=np.uint8)
    rng = np.random.default_rng(3)
    canvas = np.clip(canvas + rng.normal(0, 6, canvas.shape), 0, 255).astype(np.uint8)
    fh, fw = face_patch.shape[:2]
    x, y = 720, 360  # bottom-right, far from the centre
    canvas[y : y + fh, x : x + fw] = face_patch
    ratios = ALL
    res = detect_crops(encode(canvas, "JPEG", quality=92), ratios)
    assert_valid(res, ratios)
    for c in res.croppings:
        assert _contains(_ltwh(c), (x + 10, y + 10, x + fw - 10, y + fh - 10)), c


def test_astronaut_face_kept_in_every_ratio(astronaut: NDArray[np.uint8]) -> None:
    for group in (ALL, EXTREMES):
        res = detect_crops(encode(astronaut, "JPEG"), group, ["face"])
        assert_valid(res, group)
        for c in res.croppings:
            assert _contains(_ltwh(c), ASTRONAUT_FACE, tol=2), c
        assert res.matched_hints == ["face"]


@pytest.mark.parametrize("hint", ["cat", "猫", "kitten"])
def test_chelsea_with_cat_hint(chelsea: NDArray[np.uint8], hint: str) -> None:
    ratios = ["1:1", "9:16", "1:2"]
    res = detect_crops(encode(chelsea, "JPEG"), ratios, [hint])
    assert_valid(res, ratios)
    eyes = (150, 80, 340, 150)  # both eyes of the cat
    assert _contains(_ltwh(res.croppings[0]), eyes, tol=4)
    # The cat is wider than these crops; each holds as much of it as a crop of its size can.
    assert res.matched_hints == [hint]


def test_an_object_longer_than_the_crop_is_held_when_the_crop_lies_within_it() -> None:
    from worker.engine.pipeline import _inside
    from worker.engine.types import Rect

    tol = EngineConfig().hint_match_tolerance
    wide = detectors.Box(0.1, 0.2, 0.9, 0.6, 0.9, "cat")  # 800 x 400 px of a 1000 x 1000 image
    assert _inside(wide, Rect(300, 150, 500, 500), 1000, 1000, tol)  # inside its width, all its height
    assert not _inside(wide, Rect(50, 150, 500, 500), 1000, 1000, tol)  # runs past its left edge
    assert not _inside(wide, Rect(300, 250, 500, 500), 1000, 1000, tol)  # cuts its top, which would fit
    assert _inside(wide, Rect(0, 0, 1000, 1000), 1000, 1000, tol)  # the whole of it
    small = detectors.Box(0.4, 0.4, 0.5, 0.5, 0.9, "face")
    assert _inside(small, Rect(300, 300, 300, 300), 1000, 1000, tol)
    assert not _inside(small, Rect(450, 300, 300, 300), 1000, 1000, tol)  # half of it


@pytest.mark.parametrize("hint", ["person", "人", "行人", "people"])
def test_person_hint_reaches_face_based_people(astronaut: NDArray[np.uint8], hint: str) -> None:
    # The body grown from the face is wider than a 9:16 crop, so only the 1:1 crop can hold it.
    res = detect_crops(encode(astronaut, "PNG"), ["9:16", "1:1"], [hint])
    assert_valid(res, ["9:16", "1:1"])
    assert res.matched_hints == [hint]


def test_unknown_hint_is_no_error(astronaut: NDArray[np.uint8]) -> None:
    data = encode(astronaut, "JPEG")
    plain = detect_crops(data, ["16:9"])
    unknown = detect_crops(data, ["16:9"], ["zeppelin"])
    assert unknown.matched_hints == []
    assert unknown.croppings == plain.croppings


def test_hint_that_matches_nothing(astronaut: NDArray[np.uint8]) -> None:
    res = detect_crops(encode(astronaut, "JPEG"), ["1:1"], ["车牌"])
    assert res.matched_hints == []


def test_text_hint_keeps_the_sign() -> None:
    import cv2

    canvas = np.full((400, 800, 3), (70, 120, 60), dtype=np.uint8)
    cv2.rectangle(canvas, (20, 300), (300, 370), (250, 250, 250), -1)
    cv2.putText(canvas, "OPEN 24H", (30, 352), cv2.FONT_HERSHEY_SIMPLEX, 1.5, (10, 10, 10), 4)
    canvas[150:250, 450:550] = (240, 30, 200)  # a competing salient patch on the right
    res = detect_crops_array(canvas, ["1:1"], ["招牌"])
    assert res.matched_hints == ["招牌"]
    assert res.croppings[0].rect.left <= 30


def test_auto_reports_a_common_ratio(astronaut: NDArray[np.uint8]) -> None:
    wide = np.ascontiguousarray(np.concatenate([astronaut, np.full((512, 512, 3), 200, np.uint8)], axis=1))
    res = detect_crops(encode(wide, "PNG"), ["auto", "1:1"])
    assert_valid(res, ["auto", "1:1"])
    assert res.croppings[0].aspect_ratio in AUTO_CANDIDATES
    # Half of the picture is a flat grey: auto throws it away rather than keeping the 2:1 frame.
    assert res.croppings[0].aspect_ratio != "2:1"


def test_request_order_and_duplicates(astronaut: NDArray[np.uint8]) -> None:
    ratios = ["9:16", "1:1", "9:16", "auto", "2:1"]
    res = detect_crops(encode(astronaut, "PNG"), ratios)
    assert [c.aspect_ratio for c in res.croppings][:3] == ["9:16", "1:1", "9:16"]
    assert res.croppings[0] == res.croppings[2]


def test_deterministic(astronaut: NDArray[np.uint8]) -> None:
    data = encode(astronaut, "JPEG")
    first = detect_crops(data, ALL, ["face"])
    for _ in range(2):
        assert detect_crops(data, ALL, ["face"]) == first


def test_confidence_rises_with_importance_kept() -> None:
    canvas = np.full((300, 900, 3), 128, dtype=np.uint8)
    canvas[120:180, 420:480] = (255, 0, 0)
    easy = detect_crops_array(canvas, ["16:9"]).croppings[0].confidence  # keeps almost everything
    hard = detect_crops_array(canvas, ["1:2"]).croppings[0].confidence  # a narrow strip
    assert 0.0 <= hard < easy <= 1.0


@pytest.mark.parametrize("bad", [[], ["4.1:3"], ["3:1"], ["1:1"] * 6, ["0:1"], ["a:b"]])
def test_invalid_ratios(bad: list[str], astronaut: NDArray[np.uint8]) -> None:
    with pytest.raises(InvalidAspectRatio):
        detect_crops(encode(astronaut[:64, :64], "PNG"), bad)


def test_missing_detector_package_logs_and_degrades(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, astronaut: NDArray[np.uint8]
) -> None:
    def broken() -> detectors.Detector:
        raise ImportError("No module named 'onnxruntime'")

    monkeypatch.setitem(detectors._FACTORIES, "face", broken)
    detectors.get_detector.cache_clear()
    try:
        with caplog.at_level(logging.WARNING):
            res = detect_crops(encode(astronaut, "JPEG"), ["1:1"], ["face"])
        assert_valid(res, ["1:1"])
        assert res.matched_hints == []
        lines = [r for r in caplog.records if "face detection disabled" in r.getMessage()]
        assert len(lines) == 1
    finally:
        monkeypatch.undo()
        detectors.get_detector.cache_clear()


def test_preview_png(tmp_path: Path, astronaut: NDArray[np.uint8]) -> None:
    data = encode(astronaut, "JPEG")
    res = detect_crops(data, ["1:1", "16:9"])
    out = write_preview(data, res, tmp_path / "p.png")
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_preview_labels_never_cover_each_other() -> None:
    # Crops of several ratios often share a top-left corner; their labels must all stay readable.
    anchors = [(3.0, 3.0), (3.0, 3.0), (3.0, 10.0), (200.0, 3.0), (40.0, 3.0)]
    sizes = [(60.0, 18.0)] * len(anchors)
    spots = place_labels(anchors, sizes)
    for i, a in enumerate(spots):
        assert a[0] == anchors[i][0] and a[1] >= anchors[i][1]  # only ever moved down
        for b in spots[:i]:
            assert not (a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]), (a, b)
    assert spots[0][1] == 3.0 and spots[3][1] == 3.0  # nothing in their way: left where they were


def test_largest_face_wins_over_a_small_one() -> None:
    """Faces found by a stub detector: one large face at the left, a small one (with its body box) at
    the right. A narrow crop cannot hold both; it keeps the large face (the subject), which the small
    face plus its body would outweigh without the largest-face bonus."""

    class Stub:
        name = "face"

        def detect(
            self, rgb: NDArray[np.uint8], config: EngineConfig = detectors.DEFAULT_CONFIG
        ) -> list[detectors.Box]:
            small = detectors.Box(0.80, 0.2, 0.84, 0.26, 0.9, "face")
            return [detectors.Box(0.10, 0.3, 0.24, 0.6, 0.9, "face"), small]

    original = detectors._FACTORIES["face"]
    detectors.register_detector("face", Stub)
    try:
        canvas = np.full((400, 1000, 3), 120, dtype=np.uint8)
        res = detect_crops_array(canvas, ["1:1", "9:16"])
    finally:
        detectors.register_detector("face", original)
    for c in res.croppings:
        assert _contains(_ltwh(c), (100, 120, 240, 240)), c


def test_centre_prior_peaks_at_the_mean_fixation() -> None:
    from worker.engine.features import centre_prior

    cfg = EngineConfig()
    prior = centre_prior(120, 160, cfg)
    iy, ix = np.unravel_index(int(np.argmax(prior)), prior.shape)
    assert abs((ix + 0.5) / 160 - (0.5 + cfg.centre_mean_x)) <= 1 / 160
    assert abs((iy + 0.5) / 120 - (0.5 + cfg.centre_mean_y)) <= 1 / 120


def test_detected_people_draw_importance_where_they_stand() -> None:
    from worker.engine.features import saliency

    rng = np.random.default_rng(3)
    texture = rng.integers(90, 160, size=(120, 160, 3), dtype=np.uint8)  # even clutter, no subject
    person = (0.05, 0.2, 0.25, 0.9, 0.9)  # a standing person at the left edge, far from the centre
    box = (slice(24, 108), slice(8, 40))
    plain = saliency(texture, None, EngineConfig())
    with_person = saliency(texture, None, EngineConfig(), persons=[person])
    off = saliency(texture, None, EngineConfig(person_attention=0.0), persons=[person])
    assert float(with_person[box].sum()) > 1.2 * float(plain[box].sum())
    np.testing.assert_allclose(off, plain, rtol=1e-6)
    for m in (plain, with_person):
        assert abs(float(m.sum()) - 1.0) < 1e-4


def test_surroundedness_marks_enclosed_figures_not_border_regions() -> None:
    from worker.engine.features import surroundedness

    lab = np.zeros((60, 80, 3), dtype=np.float32)
    lab[20:35, 30:45, 0] = 80.0  # an enclosed bright square
    lab[0:60, 0:12, 0] = 80.0  # an equally bright band that touches the border
    m = surroundedness(lab, 16)
    square, band = m[20:35, 30:45], m[5:55, 2:10]
    assert float(square.min()) > 0.0
    assert float(band.max()) == 0.0
    # Only the enclosed square is a figure (its complement touches the border everywhere).
    assert float(m.sum()) == pytest.approx(float(square.sum()), rel=1e-6)


def test_surroundedness_adds_importance_to_an_enclosed_object() -> None:
    """A faint plain object on a plain ground: being enclosed draws importance beyond its contrast."""
    from worker.engine.features import saliency

    img = np.full((80, 160, 3), 120, dtype=np.uint8)
    img[30:50, 110:130] = (135, 120, 105)
    around = (slice(26, 54), slice(106, 134))
    without = saliency(img, None, EngineConfig(surround_weight=0.0))
    with_it = saliency(img, None, EngineConfig())
    assert float(with_it[around].sum()) > float(without[around].sum()) + 0.05


@pytest.mark.parametrize("shape", [(1, 500), (500, 1), (2, 3000)])
def test_flat_strips_crop_near_the_centre(shape: tuple[int, int]) -> None:
    """Degenerate shapes: with nothing to see, the crop sits where the centre prior peaks."""
    h, w = shape
    res = detect_crops_array(np.full((h, w, 3), 128, dtype=np.uint8), ["1:1", "16:9"])
    assert_valid(res, ["1:1", "16:9"])
    for c in res.croppings:
        cx, cy = c.rect.left + c.rect.width / 2, c.rect.top + c.rect.height / 2
        assert abs(cx / w - 0.5) <= 0.1 and abs(cy / h - 0.5) <= 0.1


def test_small_faces_on_a_large_photo_need_a_larger_detection_copy(astronaut: NDArray[np.uint8]) -> None:
    # A 12 MP photo with a head whose face (brow to chin) is 6% of the short side: about 14 px on the
    # default 320-px detection copy, below the ~16 px from which CenterFace finds faces. 640 finds it,
    # and every crop then keeps it (object detection off: nothing else points at the head).
    import cv2

    width, height = 4000, 3000
    canvas = cv2.resize(astronaut[300:, 300:], (width, height), interpolation=cv2.INTER_CUBIC)
    head = astronaut[30:200, 150:300]  # the face with hair and neck around it
    scale = 0.06 * height / (ASTRONAUT_FACE[3] - ASTRONAUT_FACE[1])
    hh, hw = int(head.shape[0] * scale), int(head.shape[1] * scale)
    x, y = 3000, 600
    canvas[y : y + hh, x : x + hw] = cv2.resize(head, (hw, hh), interpolation=cv2.INTER_AREA)
    data = encode(canvas, "JPEG", quality=90)
    # the face itself, in full-size pixels
    fx0, fy0 = x + (ASTRONAUT_FACE[0] - 150) * scale, y + (ASTRONAUT_FACE[1] - 30) * scale
    fx1, fy1 = x + (ASTRONAUT_FACE[2] - 150) * scale, y + (ASTRONAUT_FACE[3] - 30) * scale
    face = (round(fx0), round(fy0), round(fx1), round(fy1))

    def faces_at(side: int) -> list[detectors.Box]:
        cfg = EngineConfig(object_detection="off", detect_long_side=side)
        return analyse(decode(data, cfg), [], cfg).faces

    cx, cy = (fx0 + fx1) / 2 / width, (fy0 + fy1) / 2 / height
    assert not any(f.x0 <= cx <= f.x1 and f.y0 <= cy <= f.y1 for f in faces_at(320))
    found = [f for f in faces_at(640) if f.x0 <= cx <= f.x1 and f.y0 <= cy <= f.y1]
    assert found and found[0].score >= EngineConfig().face_threshold
    res = detect_crops(data, ALL, config=EngineConfig(object_detection="off", detect_long_side=640))
    assert_valid(res, ALL)
    for c in res.croppings:
        assert _contains(_ltwh(c), face, tol=2), c

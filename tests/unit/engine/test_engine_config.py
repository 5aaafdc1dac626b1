"""EngineConfig: every field is read by the engine, bad values fail when the config is built, and each
group of knobs changes what the engine does (observed, not just assigned)."""

from __future__ import annotations

import ast
import dataclasses
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
from numpy.typing import NDArray

from worker.engine import detectors, features
from worker.engine.config import _RANGES, EngineConfig, InvalidEngineConfig
from worker.engine.decode import from_array
from worker.engine.detectors import Box, get_detector, persons_from_faces
from worker.engine.pipeline import _inside, _targets, analyse, detect_crops_array
from worker.engine.scoring import Scene, Target

ENGINE = Path(detectors.__file__).parent


# --- no dead field ---------------------------------------------------------------------------------
def _config_reads() -> set[str]:
    """Attributes read from a config anywhere in the engine but its own module: ``cfg.x``,
    ``config.x``, ``self.config.x`` and the Haar tuning lambdas' ``c.x``."""
    reads: set[str] = set()
    for path in ENGINE.glob("*.py"):
        if path.name == "config.py":
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if (
                isinstance(node, ast.Attribute)
                and isinstance(node.ctx, ast.Load)
                and ast.unparse(node.value) in {"cfg", "config", "self.config", "c"}
            ):
                reads.add(node.attr)
    return reads


def test_every_field_is_read_by_the_engine() -> None:
    fields = {f.name for f in dataclasses.fields(EngineConfig)}
    dead = sorted(fields - _config_reads())
    assert not dead, f"EngineConfig fields no engine module reads: {dead}"


def test_the_removed_dead_options_are_gone() -> None:
    names = {f.name for f in dataclasses.fields(EngineConfig)}
    assert not names & {"scales", "area_weight"}


# --- validation ------------------------------------------------------------------------------------
def test_defaults_are_valid_and_every_number_has_a_range() -> None:
    cfg = EngineConfig()
    numeric = {f.name for f in dataclasses.fields(cfg) if f.type in ("int", "float")}
    assert numeric - set(_RANGES) == set(), "a numeric field without a range rule"
    assert set(_RANGES) <= numeric, "a range rule for a field that does not exist"


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"face_threshold": 1.5}, "face_threshold"),
        ({"person_threshold": -0.1}, "person_threshold"),
        ({"face_nms_iou": 0.0}, "face_nms_iou"),
        ({"object_nms_iou": 1.2}, "object_nms_iou"),
        ({"object_input_long_side": 16}, "object_input_long_side"),
        ({"detect_long_side": 0}, "detect_long_side"),
        ({"analysis_long_side": 100_000}, "analysis_long_side"),
        ({"edge_weight": -1.0}, "edge_weight"),
        ({"edge_weight": float("nan")}, "edge_weight"),
        ({"centre_sigma_x": 0.0}, "centre_sigma_x"),
        ({"edge_band": 0.7}, "edge_band"),
        ({"haar_scale_factor": 1.0}, "haar_scale_factor"),
        ({"eye_neighbours": -1}, "eye_neighbours"),
        ({"max_faces": 2.5}, "max_faces"),
        ({"surround_step": True}, "surround_step"),
        ({"decode_isolated": 1}, "decode_isolated"),
        ({"target_keep_exponent": 0}, "target_keep_exponent"),
        ({"object_detection": "sometimes"}, "object_detection"),
        ({"contrast_scales": ()}, "contrast_scales"),
        ({"contrast_scales": ((0.2, 0.1),)}, "contrast_scales"),
        ({"contrast_scales": (0.01, 0.05)}, "contrast_scales"),
        ({"text_min_fill": 0.8, "text_max_fill": 0.5}, "text_min_fill"),
        ({"face_threshold": 0.2}, "face_threshold"),  # under face_candidate_threshold (0.3)
        ({"hint_object_threshold": 0.25}, "hint_object_threshold"),  # under object_candidate_threshold
    ],
)
def test_a_bad_value_fails_when_the_config_is_built(changes: dict[str, Any], field: str) -> None:
    with pytest.raises(InvalidEngineConfig, match=rf"EngineConfig\.{field}\b"):
        EngineConfig(**changes)
    with pytest.raises(ValueError):  # what callers that know nothing of the engine catch
        dataclasses.replace(EngineConfig(), **changes)


def test_the_error_names_the_allowed_modes() -> None:
    with pytest.raises(InvalidEngineConfig, match="always, no_faces, hint, off"):
        EngineConfig(object_detection="sometimes")  # type: ignore[arg-type]


# --- detector thresholds ---------------------------------------------------------------------------
def test_a_face_threshold_above_a_face_drops_it(astronaut: NDArray[np.uint8]) -> None:
    cfg = EngineConfig(object_detection="off")
    faces = analyse(from_array(astronaut, cfg), [], cfg).faces
    assert faces
    strict = dataclasses.replace(cfg, face_threshold=min(1.0, faces[0].score + 0.01))
    assert analyse(from_array(astronaut, strict), [], strict).faces == faces[1:]


def test_face_candidate_threshold_and_nms_reach_centerface(astronaut: NDArray[np.uint8]) -> None:
    face = get_detector("face")
    default = face.detect(astronaut, EngineConfig())
    # Without suppression every heat-map cell of the face is a box of its own.
    assert len(face.detect(astronaut, EngineConfig(face_nms_iou=1.0))) > len(default)
    best = default[0].score
    assert face.detect(astronaut, EngineConfig(face_candidate_threshold=best, face_threshold=best)) == []


def test_object_candidate_threshold_and_nms_reach_nanodet(astronaut: NDArray[np.uint8]) -> None:
    objects = get_detector("object")
    default = objects.detect(astronaut, EngineConfig())
    assert len(objects.detect(astronaut, EngineConfig(object_nms_iou=1.0))) > len(default)
    high = max(b.score for b in default) - 0.01
    strict = EngineConfig(
        object_candidate_threshold=high,
        person_threshold=high,
        object_threshold=high,
        hint_object_threshold=high,
    )
    found = objects.detect(astronaut, strict)
    assert found and all(b.score >= high for b in found) and len(found) < len(default)


class _CascadeSpy:
    """Stands in for a cv2.CascadeClassifier and records what detectMultiScale3 was asked."""

    def __init__(self) -> None:
        self.calls: list[dict[str, Any]] = []

    def detectMultiScale3(self, gray: Any, **kw: Any) -> tuple[Any, Any, Any]:
        self.calls.append(kw)
        return np.zeros((0, 4), dtype=np.int32), None, np.zeros(0)


@pytest.mark.parametrize(
    ("name", "size_field", "neighbours_field"),
    [
        ("cat", "cat_face_min_size", "cat_face_neighbours"),
        ("eye", "eye_min_size", "eye_neighbours"),
        ("smile", "smile_min_size", "smile_neighbours"),
        ("plate", "plate_min_size", "plate_neighbours"),
    ],
)
def test_haar_tuning_reaches_each_cascade(
    monkeypatch: pytest.MonkeyPatch, name: str, size_field: str, neighbours_field: str
) -> None:
    detector = get_detector(name)
    spy = _CascadeSpy()
    monkeypatch.setattr(detector, "_cascade", spy)
    img = np.zeros((200, 400, 3), dtype=np.uint8)
    tuning: dict[str, Any] = {size_field: 0.5, neighbours_field: 7}
    detector.detect(img, EngineConfig(**tuning, haar_scale_factor=1.3))
    detector.detect(img, EngineConfig())
    tuned, default = spy.calls
    assert tuned["minSize"] == (100, 100) and tuned["minNeighbors"] == 7 and tuned["scaleFactor"] == 1.3
    assert default["minSize"] != (100, 100) and default["minNeighbors"] == getattr(
        EngineConfig(), neighbours_field
    )


def test_text_shape_rules_decide_what_counts_as_text() -> None:
    sign = np.full((200, 600, 3), 255, dtype=np.uint8)
    cv2.putText(sign, "CROPQ SIGN", (30, 120), cv2.FONT_HERSHEY_SIMPLEX, 2, (0, 0, 0), 5)
    text = get_detector("text")
    assert text.detect(sign, EngineConfig())
    assert text.detect(sign, EngineConfig(text_min_aspect=50.0)) == []  # no line is 50x wider than tall
    assert text.detect(sign, EngineConfig(text_min_fill=0.95, text_max_fill=1.0)) == []


# --- input sizes -----------------------------------------------------------------------------------
class _SessionSpy:
    """Wraps a detector's inference session and records the shape of every input it runs on."""

    def __init__(self, session: Any) -> None:
        self._session = session
        self.shapes: list[tuple[int, ...]] = []

    def run(self, blob: NDArray[np.float32]) -> Any:
        self.shapes.append(tuple(blob.shape))
        return self._session.run(blob)


@pytest.fixture
def spies(monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, _SessionSpy]]:
    out = {}
    for name in ("face", "object"):
        sessions = get_detector(name)._sessions  # type: ignore[attr-defined]
        spy = _SessionSpy(sessions.get("onnxruntime"))
        monkeypatch.setattr(sessions, "get", lambda runtime, spy=spy: spy)
        out[name] = spy
    yield out


def test_object_input_long_side_is_what_nanodet_runs_at(
    spies: dict[str, _SessionSpy], astronaut: NDArray[np.uint8]
) -> None:
    cfg = EngineConfig(object_input_long_side=224)
    analyse(from_array(astronaut, cfg), [], cfg)
    analyse(from_array(astronaut, EngineConfig()), [], EngineConfig())
    assert [max(s[2:]) for s in spies["object"].shapes] == [224, 416]


def test_detection_sizes_are_what_centerface_runs_at(
    spies: dict[str, _SessionSpy], astronaut: NDArray[np.uint8]
) -> None:
    large = np.asarray(cv2.resize(astronaut, (1024, 1024)), dtype=np.uint8)  # 1 MP: not small
    for cfg in (
        EngineConfig(object_detection="off"),
        EngineConfig(object_detection="off", detect_long_side=480),
    ):
        analyse(from_array(large, cfg), [], cfg)
    # A 512 x 512 source is small (at most small_image_pixels), so it is upscaled to detect_long_side_small,
    # unless the small-image limit says otherwise.
    small = EngineConfig(object_detection="off", detect_long_side_small=576)
    analyse(from_array(astronaut, small), [], small)
    not_small = dataclasses.replace(small, small_image_pixels=100_000)
    analyse(from_array(astronaut, not_small), [], not_small)
    assert [max(s[2:]) for s in spies["face"].shapes] == [320, 480, 576, 320]


def test_analysis_and_surround_sizes(monkeypatch: pytest.MonkeyPatch, astronaut: NDArray[np.uint8]) -> None:
    seen: list[tuple[tuple[int, ...], int]] = []
    real = features.surroundedness

    def spy(lab: NDArray[np.float32], step: int) -> NDArray[np.float32]:
        seen.append((lab.shape[:2], step))
        return real(lab, step)

    monkeypatch.setattr(features, "surroundedness", spy)
    cfg = EngineConfig(object_detection="off", analysis_long_side=96, surround_long_side=48, surround_step=64)
    scene = analyse(from_array(astronaut, cfg), [], cfg).scene
    assert (scene.w, scene.h) == (96, 96) and seen == [((48, 48), 64)]


# --- importance map --------------------------------------------------------------------------------
def test_contrast_and_edge_knobs_change_the_maps(astronaut: NDArray[np.uint8]) -> None:
    rgb = np.asarray(cv2.resize(astronaut, (128, 128), interpolation=cv2.INTER_AREA), dtype=np.uint8)
    lab = np.asarray(cv2.cvtColor(rgb.astype(np.float32) / 255.0, cv2.COLOR_RGB2Lab), dtype=np.float32)
    default = features.colour_contrast(lab, EngineConfig())
    no_mean = features.colour_contrast(lab, EngineConfig(mean_colour_weight=0.0))
    assert np.all(no_mean <= default + 1e-4) and float((default - no_mean).max()) > 1.0
    one_scale = features.colour_contrast(lab, EngineConfig(contrast_scales=((0.01, 0.05),)))
    assert float(np.abs(one_scale - default).max()) > 1.0
    lum = np.ascontiguousarray(lab[:, :, 0])
    # A wider blur spreads the same gradients: a lower peak.
    assert features.edge_density(lum, 0.08).max() < features.edge_density(lum, 0.0).max()
    assert not np.allclose(
        features.saliency(rgb, None, EngineConfig(edge_blur=0.08)),
        features.saliency(rgb, None, EngineConfig()),
    )


# --- window search ---------------------------------------------------------------------------------
def _scene(cfg: EngineConfig, targets: list[Target], importance: NDArray[np.float32] | None = None) -> Scene:
    imp = np.full((40, 40), 1.0 / 1600, dtype=np.float32) if importance is None else importance
    return Scene(imp, 400, 400, targets, cfg)


def test_keep_exponent_and_confidence_share() -> None:
    # A target 20 px wide whose right half a 1:2 crop at the left edge keeps.
    half_in = [Target(15.0, 0.0, 25.0, 40.0, 1.0, 0.0)]
    tops, lefts = np.zeros(1), np.zeros(1)
    for k in (1, 2, 8):
        gain, _, avail = _scene(EngineConfig(target_keep_exponent=k), half_in)._targets(
            tops, lefts, 40.0, 20.0
        )
        assert avail == 1.0 and gain[0, 0] == pytest.approx(0.5**k)
    target = [Target(0.0, 0.0, 10.0, 10.0, 1.0, 0.0)]
    only_kept = _scene(EngineConfig(confidence_target_share=0.0), target).best(1, 2)
    only_targets = _scene(EngineConfig(confidence_target_share=1.0), target).best(1, 2)
    assert only_kept.rect == only_targets.rect
    assert only_kept.confidence == pytest.approx(only_kept.kept)
    assert only_targets.confidence == pytest.approx(1.0)  # the target is kept whole


def test_edge_band_widens_the_cut_cost() -> None:
    # Importance only in a column at x = 20..22 of a 40-px map; a full-height crop 18 px wide from
    # x = 17 holds it 3 px inside its left edge: a band of half a pixel misses it, a wide band (capped at
    # a quarter of the crop, 4.5 px) reaches it.
    imp = np.zeros((40, 40), dtype=np.float32)
    imp[:, 20:22] = 1.0 / 80
    tops, lefts = np.zeros(1), np.array([17.0])

    def edge_mass(band: float) -> float:
        scene = _scene(EngineConfig(edge_band=band), [], imp)
        rows = scene._span(scene.sat, tops, 40.0, 0)
        return float(scene._edge_mass(rows, tops, lefts, 40.0, 18.0)[0, 0])

    assert edge_mass(0.0) == 0.0 < edge_mass(0.25)
    assert edge_mass(0.02) == 0.0  # the default: 0.8 px


def test_auto_importance_weight_trades_area_for_importance() -> None:
    # A wide image with a salient patch in the middle: counting importance lost hardly at all, auto
    # takes the ratio that drops the most area; weighting it heavily, the one that keeps the patch.
    canvas = np.full((300, 600, 3), 120, dtype=np.uint8)
    canvas[100:200, 250:350] = (255, 0, 0)
    canvas[20:60, 20:580:40] = (0, 0, 255)  # a row of dots along the top, near both ends
    cheap = detect_crops_array(canvas, ["auto"], config=EngineConfig(auto_importance_weight=0.0))
    dear = detect_crops_array(canvas, ["auto"], config=EngineConfig(auto_importance_weight=50.0))
    area = [c.rect.width * c.rect.height for c in (cheap.croppings[0], dear.croppings[0])]
    assert cheap.croppings[0].aspect_ratio != dear.croppings[0].aspect_ratio and area[0] < area[1]


def test_hint_match_tolerance() -> None:
    from worker.engine.types import Rect

    box = Box(0.1, 0.1, 0.5, 0.5, 0.9, "cat")  # 40..200 px of 400
    crop = Rect(43, 40, 200, 200)  # 3 px short on the left
    assert not _inside(box, crop, 400, 400, 1.0)
    assert _inside(box, crop, 400, 400, 3.0)


# --- targets -------------------------------------------------------------------------------------
def test_face_and_body_geometry() -> None:
    big, small = Box(0.1, 0.2, 0.3, 0.5, 0.9, "face"), Box(0.6, 0.2, 0.65, 0.275, 0.9, "face")

    def face_targets(cfg: EngineConfig) -> list[Target]:
        return [t for t in _targets([big, small], [], [], {}, 100, 100, cfg) if t.group == "face"]

    default = face_targets(EngineConfig())
    flat = face_targets(EngineConfig(face_size_share=0.0, largest_face_bonus=0.0))
    assert flat[0].reward == flat[1].reward == EngineConfig().face_weight  # size makes no difference
    assert default[1].reward < EngineConfig().face_weight  # the small face counts for less
    no_hair = face_targets(EngineConfig(face_hair_margin=1.0))
    assert no_hair[0].y0 - default[0].y0 == pytest.approx(0.5 * 0.1 * 0.3 * 100)
    body = persons_from_faces([big], EngineConfig(body_width=2.0, body_head_room=0.0, body_length=2.0))[0]
    assert (body.x0, body.y0, body.x1, body.y1) == pytest.approx((0.0, 0.2, 0.4, 0.8))
    assert persons_from_faces([big])[0].y1 == pytest.approx(min(1.0, 0.2 + 6.7 * 0.3))

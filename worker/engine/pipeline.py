"""The engine's public entry point, shared by the worker and the CLI.

bytes -> decode once (DCT-scaled) -> detect faces, people and objects -> importance map once ->
for each requested ratio the best window -> integer rectangles of the displayed full image.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import cv2
import numpy as np
from numpy.typing import NDArray

from worker.engine.config import EngineConfig, ObjectDetection
from worker.engine.decode import Decoded, decode, from_array, shrink
from worker.engine.detectors import COCO_CLASSES, DETECTOR_NAMES, Box, get_detector, persons_from_faces
from worker.engine.features import saliency
from worker.engine.hints import detector_for_hint
from worker.engine.ratios import AUTO_CANDIDATES, AspectRatio, parse_ratio, parse_ratios
from worker.engine.scoring import Scene, Target, Window, window_size
from worker.engine.stages import stage
from worker.engine.types import CropResult, CropSuggestion, Detected, Rect

log = logging.getLogger(__name__)

# One OpenCV thread per worker process (workers scale by processes).
cv2.setNumThreads(1)

_DEFAULT_CONFIG = EngineConfig()
_AUTO_RATIOS: tuple[AspectRatio, ...] = tuple(r for r in map(parse_ratio, AUTO_CANDIDATES) if r is not None)


@dataclass(frozen=True, slots=True)
class Analysis:
    """Everything computed once per image and reused for every ratio (also drawn by the preview)."""

    scene: Scene
    faces: list[Box]
    persons: list[Box]
    """People found by the object detector (empty when it did not run)."""
    objects: list[Box]
    """Everything else it found (COCO classes), most confident first."""
    hinted: dict[str, list[Box]]
    """Per hint (as given): the objects its detector found, most confident first."""


def detect_crops(
    data: bytes,
    aspect_ratios: Sequence[str],
    inclusion_hints: Sequence[str] = (),
    config: EngineConfig | None = None,
) -> CropResult:
    """Crop suggestions for an encoded image (JPEG, PNG, WebP, GIF, BMP, TIFF, HEIC/AVIF if supported).

    Raises :class:`~worker.engine.errors.InvalidAspectRatio`, :class:`~worker.engine.errors.UnsupportedImage`
    or :class:`~worker.engine.errors.ImageTooLarge`.
    """
    cfg = config or _DEFAULT_CONFIG
    parsed = parse_ratios(list(aspect_ratios))
    with stage("decode"):
        decoded = decode(data, cfg)
    return _crop(decoded, list(aspect_ratios), parsed, inclusion_hints, cfg)


def detect_crops_array(
    rgb: NDArray[np.uint8],
    aspect_ratios: Sequence[str],
    inclusion_hints: Sequence[str] = (),
    config: EngineConfig | None = None,
) -> CropResult:
    """The same for an H x W x 3 RGB (or RGBA, or grayscale) array; coordinates are in its pixels."""
    cfg = config or _DEFAULT_CONFIG
    parsed = parse_ratios(list(aspect_ratios))
    with stage("decode"):
        decoded = from_array(rgb, cfg)
    return _crop(decoded, list(aspect_ratios), parsed, inclusion_hints, cfg)


def analyse(
    decoded: Decoded, inclusion_hints: Sequence[str], cfg: EngineConfig, *, whole_image_crops: bool = False
) -> Analysis:
    """Detections, importance map and targets of an image. ``whole_image_crops``: every crop asked for is
    the whole image, so the object detector's boxes could not move one (``skip_objects_for_whole_image``)."""
    det = decoded.rgb
    ana = shrink(det, cfg.analysis_long_side)
    alpha = decoded.alpha
    if alpha is not None and alpha.shape != ana.shape[:2]:
        alpha = np.asarray(
            cv2.resize(alpha, (ana.shape[1], ana.shape[0]), interpolation=cv2.INTER_AREA), dtype=np.float32
        )
    with stage("detect"):
        faces, persons, objects, hinted = _detect(
            det, (decoded.width, decoded.height), inclusion_hints, cfg, whole_image_crops
        )
    with stage("score"), stage("score.maps"):
        importance = saliency(
            ana,
            alpha,
            cfg,
            faces=[(b.x0, b.y0, b.x1, b.y1, b.score) for b in faces],
            persons=[(b.x0, b.y0, b.x1, b.y1, b.score) for b in persons],
            objects=[(b.x0, b.y0, b.x1, b.y1, b.score) for b in objects],
        )
        h, w = importance.shape
        targets = _targets(faces, persons, objects, hinted, w, h, cfg)
    return Analysis(
        Scene(importance, decoded.width, decoded.height, targets, cfg), faces, persons, objects, hinted
    )


def _run(name: str, rgb: NDArray[np.uint8], cfg: EngineConfig) -> list[Box]:
    """One detector's boxes, timed as its own stage ("detect.face", "detect.object", ...)."""
    with stage(f"detect.{name}"):
        return get_detector(name).detect(rgb, cfg)


def _detect(
    det: NDArray[np.uint8],
    source: tuple[int, int],
    inclusion_hints: Sequence[str],
    cfg: EngineConfig,
    whole_image_crops: bool,
) -> tuple[list[Box], list[Box], list[Box], dict[str, list[Box]]]:
    """(faces, persons, other objects, each hint's objects) on the working copy ``det`` of a source of
    ``source`` (width, height) pixels."""
    det_img = _detection_copy(det, source[0] * source[1], cfg)
    source_long = max(source)
    faces = [b for b in _run("face", det_img, cfg) if b.score >= cfg.face_threshold][: cfg.max_faces]
    kinds = {hint: detector_for_hint(hint) for hint in inclusion_hints}
    found: list[Box] = []
    if _objects_wanted(cfg, faces, kinds.values(), whole_image_crops):
        # The working copy (320 px for a large source, up to 640 for a small one), which the detector
        # resizes to ``object_input_long_side`` (416): on COCO photos blown up to 12 MP, upsampling from
        # 320 found people and the largest object as well as decoding at 416 did.
        found = _run("object", det, _object_config(cfg, source_long))
    persons = [b for b in found if b.label == "person" and b.score >= cfg.person_threshold][: cfg.max_persons]
    objects = [b for b in found if b.label != "person" and b.score >= cfg.object_threshold][
        : cfg.max_detected_objects
    ]
    hinted: dict[str, list[Box]] = {}
    for hint, kind in kinds.items():
        if kind is None:
            hinted[hint] = []
        elif kind == "face":
            hinted[hint] = faces[: cfg.max_objects]
        elif kind == "person":
            hinted[hint] = (persons or persons_from_faces(faces, cfg))[: cfg.max_objects]
        else:
            boxes = [b for b in found if b.label == kind and b.score >= cfg.hint_object_threshold]
            if kind in DETECTOR_NAMES:  # a detector of its own (cat faces, eyes, smiles, plates, text)
                boxes += _run(kind, det_img, cfg)
            hinted[hint] = sorted(boxes, key=lambda b: -b.score)[: cfg.max_objects]
    return faces, persons, objects, hinted


def _objects_wanted(
    cfg: EngineConfig, faces: list[Box], kinds: Iterable[str | None], whole_image_crops: bool
) -> bool:
    """Whether the object detector runs: per ``EngineConfig.object_detection`` unless every crop is the
    whole image, and for any hint that names one of its classes unless it is "off"."""
    mode: ObjectDetection = cfg.object_detection
    if mode == "off":
        return False
    if any(k in COCO_CLASSES for k in kinds):  # MatchedInclusionHints needs the hint's objects
        return True
    if whole_image_crops and cfg.skip_objects_for_whole_image:
        return False
    return mode == "always" or (mode == "no_faces" and not faces)


def _targets(
    faces: list[Box],
    persons: list[Box],
    objects: list[Box],
    hinted: dict[str, list[Box]],
    w: int,
    h: int,
    cfg: EngineConfig,
) -> list[Target]:
    out: list[Target] = []
    largest = max((f.area for f in faces), default=0.0)
    for f in faces:
        # Every face counts; larger faces a little more (they are what a viewer notices first).
        size = float(np.sqrt(f.area / largest)) if largest > 0 else 1.0
        weight = cfg.face_weight * ((1.0 - cfg.face_size_share) + cfg.face_size_share * size)
        if f.area >= largest:
            weight += cfg.largest_face_bonus
        # A margin around the detector's tight box: hair, ears and chin belong to the face (thumbor
        # shifts its face boxes up for the same reason).
        mx, my = cfg.face_margin * (f.x1 - f.x0), cfg.face_margin * (f.y1 - f.y0)
        out.append(
            Target(
                max(0.0, f.x0 - mx) * w,
                max(0.0, f.y0 - cfg.face_hair_margin * my) * h,
                min(1.0, f.x1 + mx) * w,
                min(1.0, f.y1 + my) * h,
                weight,
                cfg.face_cut_penalty * weight,
                "face",
            )
        )
    for p in persons_from_faces(faces, cfg):
        out.append(Target(p.x0 * w, p.y0 * h, p.x1 * w, p.y1 * h, cfg.person_weight, 0.0, "person"))
    largest_p = max((p.area for p in persons), default=0.0)
    for p in persons:
        weight = cfg.person_det_weight + (cfg.largest_person_bonus if p.area >= largest_p else 0.0)
        out.append(
            Target(p.x0 * w, p.y0 * h, p.x1 * w, p.y1 * h, weight, cfg.person_cut_penalty * weight, "person")
        )
    # The largest object is the subject when it is big and not a person (people have their own bonus):
    # keep it whole. Small objects only add attention (a parked car at the edge of a street scene is
    # context, not the subject).
    top = max(objects + persons, key=lambda b: b.area, default=None)
    if top is not None and top.label != "person" and top.area >= cfg.object_min_area:
        reward = cfg.largest_object_bonus
        out.append(Target(top.x0 * w, top.y0 * h, top.x1 * w, top.y1 * h, reward, 0.0, "object"))
    for hint, boxes in hinted.items():
        for b in boxes:
            out.append(
                Target(
                    b.x0 * w,
                    b.y0 * h,
                    b.x1 * w,
                    b.y1 * h,
                    cfg.hint_weight,
                    cfg.face_cut_penalty * cfg.hint_weight,
                    hint,
                )
            )
    return out


def _crop(
    decoded: Decoded,
    requested: list[str],
    parsed: list[AspectRatio | None],
    inclusion_hints: Sequence[str],
    cfg: EngineConfig,
) -> CropResult:
    hints = [h for h in inclusion_hints if h.strip()]
    whole = all(
        r is not None
        and window_size(decoded.width, decoded.height, r.w, r.h) == (decoded.width, decoded.height)
        for r in parsed
    )
    analysis = analyse(decoded, hints, cfg, whole_image_crops=whole)
    scene = analysis.scene
    croppings: list[CropSuggestion] = []
    cache: dict[AspectRatio, Window] = {}

    def best_for(r: AspectRatio) -> Window:
        if r not in cache:
            cache[r] = scene.best(r.w, r.h)
        return cache[r]

    with stage("score"), stage("score.windows"):
        for text, ratio in zip(requested, parsed, strict=True):
            if ratio is None:
                ratio, win = _auto(best_for, cfg.auto_importance_weight)
                croppings.append(CropSuggestion(str(ratio), win.rect, round(win.confidence, 4)))
            else:
                win = best_for(ratio)
                croppings.append(CropSuggestion(text, win.rect, round(win.confidence, 4)))
    matched = [
        hint
        for hint, boxes in analysis.hinted.items()
        if any(
            _inside(b, c.rect, decoded.width, decoded.height, cfg.hint_match_tolerance)
            for b in boxes
            for c in croppings
        )
    ]
    return CropResult(
        decoded.width, decoded.height, croppings, matched, detections(analysis, decoded.width, decoded.height)
    )


def detections(analysis: Analysis, width: int, height: int) -> list[Detected]:
    """What the analysis found, in pixels of the displayed image: faces, people, other objects, then each
    hint's own objects (a hint naming faces or people repeats those boxes under the hint's name)."""

    def pixels(b: Box, kind: str, label: str) -> Detected:
        x0, y0 = round(max(0.0, b.x0) * width), round(max(0.0, b.y0) * height)
        x1, y1 = round(min(1.0, b.x1) * width), round(min(1.0, b.y1) * height)
        rect = Rect(x0, y0, max(1, x1 - x0), max(1, y1 - y0))
        return Detected(kind, label, rect, round(min(1.0, max(0.0, float(b.score))), 4))

    found = [pixels(b, "face", "face") for b in analysis.faces]
    found += [pixels(b, "person", "person") for b in analysis.persons]
    found += [pixels(b, "object", b.label) for b in analysis.objects]
    for hint, boxes in analysis.hinted.items():
        found += [pixels(b, "hint", hint) for b in boxes]
    return found


def _auto(best_for: Callable[[AspectRatio], Window], importance_weight: float) -> tuple[AspectRatio, Window]:
    """`auto`: the common ratio whose crop throws away the most area per unit of importance lost,
    i.e. the largest (area lost - importance_weight x importance lost); ties go to the larger crop."""
    scored: list[tuple[float, float, int, AspectRatio, Window]] = []
    for i, r in enumerate(_AUTO_RATIOS):
        win = best_for(r)
        gain = (1.0 - win.area_frac) - (1.0 - win.kept) * importance_weight
        scored.append((gain, win.area_frac, -i, r, win))
    scored.sort(key=lambda t: (t[0], t[1], t[2]), reverse=True)
    _, _, _, ratio, win = scored[0]
    return ratio, win


def _inside(b: Box, rect: Rect, width: int, height: int, tol: float) -> bool:
    """Whether the crop holds the object (within ``tol`` px): whole, or, on an axis where the object is
    longer than the crop, as much of it as a crop of that size can (a close-up cat is wider than its
    square crop)."""

    def holds(lo: float, hi: float, start: int, end: int) -> bool:
        if hi - lo <= end - start + tol:
            return start <= lo + tol and end >= hi - tol
        return start >= lo - tol and end <= hi + tol

    return holds(b.x0 * width, b.x1 * width, rect.left, rect.right) and holds(
        b.y0 * height, b.y1 * height, rect.top, rect.bottom
    )


def _object_config(cfg: EngineConfig, source_long: int) -> EngineConfig:
    """``cfg`` with NanoDet's input no larger than ``object_max_upscale`` times the source's long side
    (rounded up to its stride of 32): a thumbnail is not blown up to 416 px."""
    cap = -(-math.ceil(source_long * cfg.object_max_upscale) // 32) * 32
    if cap >= cfg.object_input_long_side:
        return cfg
    return _with_object_input(cfg, max(32, cap))


@functools.lru_cache(maxsize=64)
def _with_object_input(cfg: EngineConfig, long_side: int) -> EngineConfig:
    return dataclasses.replace(cfg, object_input_long_side=long_side)


def _detection_copy(rgb: NDArray[np.uint8], source_pixels: int, cfg: EngineConfig) -> NDArray[np.uint8]:
    """The detector's input: capped for large sources (speed), upscaled for small ones (tiny faces)."""
    if source_pixels > cfg.small_image_pixels:
        return shrink(rgb, cfg.detect_long_side)
    h, w = rgb.shape[:2]
    scale = min(cfg.detect_long_side_small / max(h, w), cfg.detect_max_upscale)
    if scale <= 1.0:
        return shrink(rgb, cfg.detect_long_side_small)
    size = (round(w * scale), round(h * scale))
    return np.asarray(cv2.resize(rgb, size, interpolation=cv2.INTER_LINEAR), dtype=np.uint8)

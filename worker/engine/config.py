"""Every tunable of the crop engine in one frozen dataclass (smartcrop.js keeps its defaults the same way).

The worker and the CLI build one ``EngineConfig`` (or use the defaults) and pass it in; nothing in the
engine reads settings or the environment. Every number that changes a crop lives here (the detectors
read theirs from the config passed to ``detect``); a bad value fails when the config is built
(:class:`InvalidEngineConfig`), not in the middle of a job. Units: px are pixels, fractions are of the
image (or of the map named), weights are relative to the importance map, which sums to 1.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Literal, get_args

ObjectDetection = Literal["always", "no_faces", "hint", "off"]
"""When the object detector runs (see :attr:`EngineConfig.object_detection`)."""

Runtime = Literal["auto", "onnxruntime", "openvino"]
"""A detector's inference back end (see :attr:`EngineConfig.face_runtime`, ``worker.engine.runtimes``)."""

Precision = Literal["fp32", "int8"]
"""A detector's arithmetic: its float graph, or the int8 graph quantised from it (``face_precision``)."""

ContrastScales = tuple[tuple[float, float], ...]


class InvalidEngineConfig(ValueError):
    """An ``EngineConfig`` value out of its range; the message names the field, the value and the range."""


@dataclass(frozen=True, slots=True)
class EngineConfig:
    # --- decoding -------------------------------------------------------------------------------------
    max_pixels: int = 100_000_000
    """Refuse images whose header announces more pixels than this (decompression-bomb guard)."""
    max_jpeg_scans: int = 100
    """Refuse JPEGs with more scans (SOS markers of the main image) than this. Each scan of a progressive
    JPEG is a pass over every coefficient of the image, so a small file of thousands of empty scans keeps
    a decoder busy for minutes (libjpeg-turbo's answer is a scan limit: djpeg ``-maxscans``). Real
    encoders write 10 (libjpeg's default script, 6 for grey) to a few dozen (mozjpeg's optimised
    scans)."""
    decode_memory_bytes: int = 4 * 1024 * 1024 * 1024
    """Budget of one decode, estimated from the header before any pixel is decoded (see
    ``preflight.estimate_decode_bytes``) and, when the decode is isolated, enforced as the decode process's
    address-space limit above its own size. Generous for library use (the memory benchmark measures
    100 MP images the service refuses); workers and ``cropq crop`` take ``CROPQ_DECODE_MEMORY_MB`` (640)."""
    decode_time_limit: float = 8.0
    """Seconds one isolated decode may take (wall clock, and CPU through ``RLIMIT_CPU``)."""
    decode_isolated: bool = False
    """Decode in the sandbox's long-lived decode process (``sandbox.py``: an address-space limit, a CPU
    limit per image, killed at the time limit and replaced after any failure); the workers and ``cropq
    crop`` set this, the library default decodes in-process."""
    render_time_limit: float = 30.0
    """Seconds one isolated render may take (wall clock, and CPU through ``RLIMIT_CPU``): the decode, the
    resize and the encoding of every crop of the image together. Longer than a decode's budget because
    it does more (five 4096-px outputs of a 100 MP PNG took 18-19 s on one core), and within the
    job's own time limit (60 s by default)."""
    render_max_side: int = 4096
    """Longest side of a rendered output, px (``Render``): a crop larger than this, with no MaxWidth or
    MaxHeight, is scaled down to it, so a 100 MP source never makes a 100 MP output. Workers take
    ``CROPQ_RENDER_MAX_SIDE``."""
    render_max_output_bytes: int = 128 * 1024 * 1024
    """The encoded outputs of one render together (up to five) may come to at most this many bytes. Five
    4096-px PNGs of a detailed photo are about 5 x 25 MB; a noise image that would make 5 x 67 MB PNGs
    is refused (ImageTooLarge) instead of filling the worker and the bucket. The decode server's answer
    is capped by it too (``decode_server.render_body_cap``)."""
    analysis_long_side: int = 160
    """Feature maps and window search run on a copy whose long side is at most this many pixels (human
    fixations spread over ~3% of the long side, so finer maps add cost, not accuracy)."""
    detect_long_side: int = 320
    """Face detection runs on a copy of at most this long side. CenterFace finds faces from about 16 px
    tall (``bench/face_scale.py`` on the faces dev set, at native and half size: 0.35 of faces 12-15 px
    tall, 0.60 at 16-19, 0.78 at 20-23, 0.86 and more from 24 px), so on a 4:3 photo 320 finds faces
    from about 7% of the short side (10% at 0.8 recall) and 640 from about 3.3% (5%). Against 320, a
    12 MP JPEG costs about 0.2x its decode floor more at 416, 0.4x at 480 and 1.2x at 640 (which needs a
    1/4-scale decode). 320 keeps the 1.5x speed target (object detection on hint); smaller people are
    kept by the object detector's person boxes (``object_detection="always"``)."""
    detect_long_side_small: int = 640
    """...except for small sources (at most ``small_image_pixels``): their decode is nearly free and their
    faces are few pixels wide, so they are upscaled to this long side for the detector."""
    small_image_pixels: int = 600_000
    """Sources of at most this many pixels count as small (``detect_long_side_small``)."""
    object_input_long_side: int = 416
    """Long side the object detector (NanoDet) runs at, px, rounded to multiples of 32 (its coarsest
    stride); the image keeps its aspect ratio. The network was trained at 416."""
    detect_max_upscale: float = 2.0
    """A small source is upscaled for the face detector by at most this factor (``detect_long_side_small``
    is the most it gets). CenterFace finds faces from about 16 px, so past 2x the faces gained are under
    8 px in the source, and the detector's time grows with the area: a 256-px thumbnail goes to 512
    instead of 640 px. On the dev sets: faces and COCO unchanged, fixations kept 0.9577 / 0.9559 ->
    0.9577 / 0.9570 (even / odd half); 1.0 (no upscale) lost faces (0.930 / 0.920 -> 0.923 / 0.911)."""
    object_max_upscale: float = 1.0
    """A small source is upscaled for the object detector by at most this factor (``object_input_long_side``
    is the most it gets; rounded up to a multiple of 32): a 256-px thumbnail runs NanoDet at 256 instead
    of 416 px, 2.6x fewer pixels. On the dev sets, with ``detect_max_upscale`` 2: fixations kept 0.9577 /
    0.9570 -> 0.9575 / 0.9567 (even / odd half; 0.9577 / 0.9559 before either cap), confidence rho 0.59 ->
    0.61, COCO and faces unchanged."""
    skip_objects_for_whole_image: bool = True
    """Skip the object detector when every requested ratio's crop is the whole image (its own ratio to the
    pixel, no ``auto``): then its boxes cannot move any crop or change a confidence. It still runs for a
    hint naming one of its classes. The job's Detections then list no people or other objects."""

    # --- importance map -------------------------------------------------------------------------------
    saliency_weight: float = 1.0
    """Colour contrast's weight in the importance map (the other weights are relative to it)."""
    contrast_scales: ContrastScales = ((0.01, 0.05), (0.02, 0.1), (0.04, 0.2))
    """Colour contrast: (centre blur, surround blur) pairs, fractions of the long side; each pair adds
    the Lab distance of the two blurs. The first centre blur also serves the mean-colour term."""
    mean_colour_weight: float = 0.5
    """Weight of the distance to the image's mean colour within colour contrast (frequency-tuned
    saliency), relative to one centre-surround scale."""
    edge_blur: float = 0.02
    """Edge density: blur of the gradient magnitude, fraction of the long side."""
    edge_weight: float = 1.2
    """Edge density relative to colour contrast (a maximum-likelihood fit of the fixation density on the
    scene dev set put it at 0.85-2.5; with the centre weight below, 1.2 keeps the most fixation mass in
    crops on both of its halves, 1.5-2.0 being as good within 0.0002)."""
    surround_weight: float = 1.5
    """Surroundedness (Boolean Map Saliency: enclosed regions are figures) relative to colour contrast.
    On the dev sets it raised fixations kept on both halves of the scene set (0.9560 / 0.9539 -> 0.9566 /
    0.9593, p10 0.864 -> 0.884) and COCO persons and largest object on both halves; faces unchanged.
    1.0 and 2.5 were within 0.0008 on scene."""
    surround_long_side: int = 80
    """Surroundedness runs on a copy of at most this long side (160 gave the same scores at 4x the cost;
    64 was 0.001 worse on scene)."""
    surround_step: int = 32
    """Threshold step on each 0..255 channel: 8 levels x 3 channels x (map, complement) = 48 maps, about
    1.5 ms per image. A step of 16 (96 maps) scored within the noise of the threshold placement (scene
    +0.0007, COCO largest -0.005) at twice the cost."""
    importance_blur: float = 0.03
    """Gaussian blur of the summed saliency, as a fraction of the long side: the spread of a fixation (the
    eval scores fixations as Gaussians of 3%). 0.01-0.05 were measured: less blur helps one half of a
    set and hurts the other, more blur hurts the scene set."""
    face_attention: float = 0.2
    """Fixation mass put on detected faces, relative to colour contrast (people look at faces and people
    more than their contrast predicts). A maximum-likelihood fit of the fixation density on each half of
    the scene dev set gave faces 0.01-0.13 and persons 0.17-0.22 against contrast + edges alone (0.12 and
    0.18 were used then: scene 0.95487 -> 0.95494, COCO persons 0.8025 -> 0.804, largest object 0.605 ->
    0.610). With surroundedness added, both were scaled by the same 1.68 to keep their share of the map
    (COCO persons 0.8119 -> 0.8123; 2.5x gave 0.815, scene unchanged either way)."""
    person_attention: float = 0.3
    """The same for detected people."""
    centre_sigma_x: float = 0.26
    """Centre prior: anisotropic Gaussian, sigma as a fraction of width (fitted to free-viewing data)."""
    centre_sigma_y: float = 0.24
    centre_mean_x: float = 0.035
    centre_mean_y: float = 0.015
    """Where the prior peaks, offset from the image centre as a fraction of width / height: the mean
    free-viewing fixation of the scene dev set (x +0.035, y +0.013..0.016 on both halves)."""
    centre_weight: float = 0.9
    """Blend: importance = saliency * (1 - w + w * prior) + prior * w * floor. 0.9 (0.85-0.95 is a plateau)
    keeps more fixation mass than 0.8 on both halves of the scene set."""
    centre_floor: float = 0.25
    border_penalty: float = 0.6
    """How much salient mass lying right on a crop edge costs (cutting a subject at the frame border)."""
    edge_band: float = 0.02
    """Width of that edge band, fraction of the analysis map's width (or height); at least half an
    analysis pixel and at most a quarter of the window."""

    # --- detectors ------------------------------------------------------------------------------------
    face_threshold: float = 0.45
    """CenterFace's score from which a face counts (faces kept / largest face on the faces dev set: 0.35
    gives 0.928 / 0.858, 0.45 gives 0.925 / 0.868, 0.55 gives 0.921 / 0.863)."""
    face_weight: float = 1.0
    """Reward for keeping a whole face, relative to all the saliency of the image (which sums to 1)."""
    largest_face_bonus: float = 1.5
    """Extra reward for keeping the largest face whole: it is the subject, worth more than several small
    faces in the crowd behind it (faces kept / largest face: 1.0 gives 0.929 / 0.849, 2.0 gives 0.922 /
    0.879)."""
    face_cut_penalty: float = 1.5
    """Cost of cutting through a face, per unit face weight (a hard-ish constraint)."""
    face_size_share: float = 0.4
    """Share of a face's reward that grows with its size: weight = face_weight x (1 - share + share x
    sqrt(area / largest face's area)); larger faces are what a viewer notices first."""
    face_margin: float = 0.1
    """Faces are kept with this margin (fraction of the box; ``face_hair_margin`` times it above)."""
    face_hair_margin: float = 1.5
    """The margin above a face, in units of ``face_margin``: hair belongs to the face."""
    body_width: float = 3.5
    """A person grown from a face (when the object detector did not find them): width in face widths,
    centred on the face."""
    body_head_room: float = 0.3
    """...its top, in face heights above the top of the face box (the head)."""
    body_length: float = 6.7
    """...its bottom, in face heights below the top of the face box (about 7 heads tall in all)."""
    person_weight: float = 0.7
    """Reward for keeping a whole person box grown from a face (0 gives faces kept / largest face 0.920 /
    0.891 and COCO persons 0.824; 0.35 gives 0.924 / 0.880 and 0.832; 0.7: 0.925 / 0.868 and 0.837)."""
    object_detection: ObjectDetection = "always"
    """When the object detector (NanoDet, the 80 COCO classes: people and everything else) runs:
    "always" (against "hint" on the dev sets: COCO persons kept/best 0.73 -> 0.84, largest object 0.60 ->
    0.72, faces 0.929 -> 0.925, fixations kept 0.9584 -> 0.9568; about 0.6-0.8 of a JPEG decode more per
    image; COCO gains are optimistic, those images being from NanoDet's training split), "no_faces"
    (only when no face was found), "hint" (only for a hint that names one of its classes; keeps the 1.5x
    speed target) or "off" (never; the person hint then uses bodies grown from faces). Default "always":
    keeping people and the subject is worth the time (still about 7x faster than smartcrop.py);
    deployments can trade it back."""
    person_threshold: float = 0.45
    """NanoDet's person score from which a person counts (0.3 found more people but cost fixations in
    scenes, where the extra boxes were small background figures)."""
    person_det_weight: float = 0.3
    """Reward for keeping a whole detected person box (the detector's, not grown from a face)."""
    largest_person_bonus: float = 0.3
    """Extra reward for keeping the largest detected person whole (the subject). 0.3 rather than 0.5:
    in crowd photos a strong person term competes with the faces."""
    person_cut_penalty: float = 0.5
    """Cost of cutting through a detected person, per unit of its weight."""
    max_persons: int = 12
    """Detected people used at most (the most confident first)."""
    object_threshold: float = 0.4
    """NanoDet's score from which any other object counts (0.3: COCO largest object 0.718 -> 0.723 but
    fixations kept 0.9568 -> 0.9533; 0.5: 0.707 and 0.9590)."""
    hint_object_threshold: float = 0.3
    """The same for objects a hint names: the caller asked for them, so a weaker detection still counts
    (the cup of scikit-image's ``coffee`` scores 0.37). At least ``object_candidate_threshold``, under
    which the detector returns nothing."""
    object_attention: float = 0.3
    """Fixation mass put on detected objects, relative to colour contrast: people look at objects. On
    the scene dev set (no COCO images, so not fitted to the detector's training data) fixations kept rose
    on both halves (0.9575 / 0.9582 -> 0.9584 / 0.9597)."""
    object_min_area: float = 0.1
    """The largest detected object (when it is not a person) becomes a target kept whole only from this
    share of the image: big objects are the subject, small ones are context (kept whole, parked cars cost
    street scenes 0.004 of fixations; from 0.1 up the cost is under 0.001)."""
    largest_object_bonus: float = 0.4
    """Reward for keeping that object whole (no cost for cutting it: a cut costs scenes more than it
    keeps)."""
    max_detected_objects: int = 12
    """Other detected objects used at most (the most confident first)."""
    hint_weight: float = 2.0
    """Reward per hinted object kept whole (dominates saliency: hints are what the user asked for)."""
    max_objects: int = 10
    """Hinted objects that crops try to include (the most confident first)."""
    max_faces: int = 24
    """Faces used at most (the most confident first)."""

    face_runtime: Runtime = "auto"
    """What runs CenterFace: "onnxruntime", "openvino" (the optional extra ``cropq[openvino]``) or "auto",
    the runtime measured fastest on this kind of CPU among those installed (README "Runtimes"). Both give
    the same faces to within float rounding; a runtime that is not installed falls back to onnxruntime."""
    object_runtime: Runtime = "auto"
    """The same for NanoDet."""
    face_precision: Precision = "fp32"
    """CenterFace's graph: "fp32" (as published) or "int8" (static int8 quantisation of it, made by
    ``tools/quantize_detectors.py``; README "Runtimes" gives its speed and quality). A precision whose
    graph is not installed runs in fp32, with one log line."""
    object_precision: Precision = "fp32"
    """The same for NanoDet."""

    # --- detector internals ---------------------------------------------------------------------------
    face_candidate_threshold: float = 0.3
    """CenterFace heat-map score from which a cell is decoded into a box at all (at most
    ``face_threshold``: weaker boxes are dropped after NMS anyway, this only saves work)."""
    face_nms_iou: float = 0.3
    """Two faces overlapping this much or more (intersection over union) are one face."""
    object_candidate_threshold: float = 0.3
    """NanoDet class score from which a cell is decoded into a box at all: the lowest score the engine
    uses (``hint_object_threshold``). Weaker cells would only be decoded and suppressed for nothing
    (NMS keeps higher scores first, so nothing above it changes), and in crowds they made NMS cost up
    to 9 ms."""
    object_nms_iou: float = 0.5
    """Two boxes of one COCO class overlapping this much or more are one object."""
    haar_scale_factor: float = 1.1
    """Haar cascades (cat faces, eyes, smiles, plates): size step between the scanned scales."""
    haar_nms_iou: float = 0.3
    """Two Haar boxes overlapping this much or more are one object."""
    cat_face_min_size: float = 0.05
    """Smallest cat face looked for, fraction of the image's short side (at least 8 px)."""
    cat_face_neighbours: int = 3
    """Overlapping raw detections a cat face needs (OpenCV ``minNeighbors``: higher is stricter)."""
    eye_min_size: float = 0.02
    """The same for eyes."""
    eye_neighbours: int = 6
    smile_min_size: float = 0.05
    """The same for smiles."""
    smile_neighbours: int = 20
    plate_min_size: float = 0.03
    """The same for licence plates."""
    plate_neighbours: int = 4
    text_min_aspect: float = 1.5
    """Text lines: a region counts only when at least this many times wider than tall."""
    text_min_fill: float = 0.1
    """Share of a text region's pixels that must be strokes at least (a sign's outline encloses its
    letters: sparse)..."""
    text_max_fill: float = 0.9
    """...and at most (but not a solid block)."""
    text_nms_iou: float = 0.3
    """Two text regions overlapping this much or more are one."""

    # --- window search and answer ----------------------------------------------------------------------
    target_keep_exponent: int = 8
    """A target's reward is its kept fraction to this power: whole objects count, half a face nearly
    nothing."""
    confidence_target_share: float = 0.5
    """Confidence blends the importance kept with the share of the targets' reward kept, this much the
    latter (when there are targets)."""
    auto_importance_weight: float = 2.0
    """``auto`` picks the ratio with the largest (area dropped - this x importance dropped)."""
    hint_match_tolerance: float = 1.0
    """A hinted object counts as matched by a crop within this many px of its edges."""

    def __post_init__(self) -> None:
        _validate(self)


def _validate(config: EngineConfig) -> None:
    """Refuse a config a job could only fail on later, or that would silently do nothing."""
    for f in dataclasses.fields(config):
        _check_type(f.name, f.type, getattr(config, f.name))
    for name, (lo, hi, lo_open) in _RANGES.items():
        value = getattr(config, name)
        if (value <= lo if lo_open else value < lo) or value > hi:
            low = f"above {lo}" if lo_open else f"at least {lo}"
            high = "" if math.isinf(hi) else f" and at most {hi}"
            raise InvalidEngineConfig(f"EngineConfig.{name} = {value!r}: it must be {low}{high}")
    modes = get_args(ObjectDetection)
    if config.object_detection not in modes:
        raise InvalidEngineConfig(
            f"EngineConfig.object_detection = {config.object_detection!r}: it is one of {', '.join(modes)}"
        )
    for name in ("face_runtime", "object_runtime"):
        if (value := getattr(config, name)) not in get_args(Runtime):
            raise InvalidEngineConfig(
                f"EngineConfig.{name} = {value!r}: it is one of {', '.join(get_args(Runtime))}"
            )
    for name in ("face_precision", "object_precision"):
        if (value := getattr(config, name)) not in get_args(Precision):
            raise InvalidEngineConfig(
                f"EngineConfig.{name} = {value!r}: it is one of {', '.join(get_args(Precision))}"
            )
    if not _valid_scales(config.contrast_scales):
        raise InvalidEngineConfig(
            f"EngineConfig.contrast_scales = {config.contrast_scales!r}: give at least one (centre, surround)"
            " pair of fractions with 0 < centre < surround <= 1"
        )
    if config.text_min_fill > config.text_max_fill:
        raise InvalidEngineConfig(
            f"EngineConfig.text_min_fill = {config.text_min_fill!r} is above text_max_fill"
            f" = {config.text_max_fill!r}"
        )
    # A count threshold under its detector's candidate threshold would silently count nothing more.
    for name, floor in (
        ("face_threshold", "face_candidate_threshold"),
        ("person_threshold", "object_candidate_threshold"),
        ("object_threshold", "object_candidate_threshold"),
        ("hint_object_threshold", "object_candidate_threshold"),
    ):
        if getattr(config, name) < getattr(config, floor):
            raise InvalidEngineConfig(
                f"EngineConfig.{name} = {getattr(config, name)!r} is below {floor} = "
                f"{getattr(config, floor)!r}: the detector returns nothing under that, lower both"
            )


def _valid_scales(scales: object) -> bool:
    if not isinstance(scales, tuple) or not scales:
        return False
    pairs = [p for p in scales if isinstance(p, tuple) and len(p) == 2]
    return len(pairs) == len(scales) and all(
        isinstance(c, int | float) and isinstance(s, int | float) and 0 < c < s <= 1 for c, s in pairs
    )


def _check_type(name: str, annotation: object, value: object) -> None:
    # Annotations are strings (postponed evaluation); the scalar ones are checked, the rest by rule.
    wanted = {"int": (int,), "float": (int, float), "bool": (bool,)}.get(str(annotation))
    if wanted is None:
        return
    if (isinstance(value, bool) and annotation != "bool") or not isinstance(value, wanted):
        raise InvalidEngineConfig(f"EngineConfig.{name} = {value!r}: it must be {annotation}")
    if isinstance(value, float) and not math.isfinite(value):
        raise InvalidEngineConfig(f"EngineConfig.{name} = {value!r}: it must be a finite number")


_INF = math.inf
# name -> (lowest, highest, lowest excluded)
_RANGES: dict[str, tuple[float, float, bool]] = {
    **dict.fromkeys(
        (
            "max_pixels",
            "max_jpeg_scans",
            "decode_memory_bytes",
            "render_max_side",
            "render_max_output_bytes",
            "small_image_pixels",
        ),
        (1, _INF, False),
    ),
    **dict.fromkeys(("decode_time_limit", "render_time_limit"), (0, _INF, True)),
    # Sizes of working copies, px: below 16 the detectors and maps find nothing.
    **dict.fromkeys(
        ("analysis_long_side", "detect_long_side", "detect_long_side_small", "surround_long_side"),
        (16, 8192, False),
    ),
    "object_input_long_side": (32, 4096, False),
    **dict.fromkeys(("detect_max_upscale", "object_max_upscale"), (1, 16, False)),
    "surround_step": (1, 255, False),
    # Weights, rewards and costs: relative, never negative (0 switches a term off).
    **dict.fromkeys(
        (
            "saliency_weight",
            "mean_colour_weight",
            "edge_weight",
            "surround_weight",
            "face_attention",
            "person_attention",
            "object_attention",
            "centre_floor",
            "border_penalty",
            "face_weight",
            "largest_face_bonus",
            "face_cut_penalty",
            "face_margin",
            "face_hair_margin",
            "person_weight",
            "person_det_weight",
            "largest_person_bonus",
            "person_cut_penalty",
            "largest_object_bonus",
            "hint_weight",
            "auto_importance_weight",
            "hint_match_tolerance",
            "body_head_room",
            "text_min_aspect",
        ),
        (0, _INF, False),
    ),
    **dict.fromkeys(("body_width", "body_length"), (0, _INF, True)),
    # Fractions and scores.
    **dict.fromkeys(
        (
            "centre_weight",
            "face_threshold",
            "person_threshold",
            "object_threshold",
            "hint_object_threshold",
            "object_min_area",
            "face_size_share",
            "face_candidate_threshold",
            "object_candidate_threshold",
            "confidence_target_share",
            "text_min_fill",
            "text_max_fill",
        ),
        (0, 1, False),
    ),
    **dict.fromkeys(("face_nms_iou", "object_nms_iou", "haar_nms_iou", "text_nms_iou"), (0, 1, True)),
    **dict.fromkeys(("importance_blur", "edge_blur"), (0, 1, False)),
    "edge_band": (0, 0.5, False),
    **dict.fromkeys(("centre_sigma_x", "centre_sigma_y"), (0, _INF, True)),
    **dict.fromkeys(("centre_mean_x", "centre_mean_y"), (-0.5, 0.5, False)),
    **dict.fromkeys(("cat_face_min_size", "eye_min_size", "smile_min_size", "plate_min_size"), (0, 1, True)),
    **dict.fromkeys(
        ("cat_face_neighbours", "eye_neighbours", "smile_neighbours", "plate_neighbours"), (0, 1000, False)
    ),
    "haar_scale_factor": (1, 4, True),
    **dict.fromkeys(("max_faces", "max_persons", "max_detected_objects", "max_objects"), (0, 1000, False)),
    "target_keep_exponent": (1, 64, False),
}

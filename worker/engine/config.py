"""Every tunable of the crop engine in one frozen dataclass (smartcrop.js keeps its defaults the same way).

The worker and the CLI build one ``EngineConfig`` (or use the defaults) and pass it in; nothing in the
engine reads settings or the environment.
"""

from __future__ import annotations

from dataclasses import dataclass


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

    # --- importance map -------------------------------------------------------------------------------
    saliency_weight: float = 1.0
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
    face_margin: float = 0.1
    """Faces are kept with this margin (fraction of the box; 1.5x above for hair)."""
    person_weight: float = 0.7
    """Reward for keeping a whole person box grown from a face (0 gives faces kept / largest face 0.920 /
    0.891 and COCO persons 0.824; 0.35 gives 0.924 / 0.880 and 0.832; 0.7: 0.925 / 0.868 and 0.837)."""
    object_detection: str = "always"
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
    object_threshold: float = 0.4
    """NanoDet's score from which any other object counts (0.3: COCO largest object 0.718 -> 0.723 but
    fixations kept 0.9568 -> 0.9533; 0.5: 0.707 and 0.9590)."""
    hint_object_threshold: float = 0.3
    """The same for objects a hint names: the caller asked for them, so a weaker detection still counts
    (the cup of scikit-image's ``coffee`` scores 0.37). The detector drops cells below 0.3, so values
    under that have no effect."""
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
    hint_weight: float = 2.0
    """Reward per hinted object kept whole (dominates saliency: hints are what the user asked for)."""
    max_objects: int = 10
    """Hinted objects that crops try to include (the most confident first)."""
    max_faces: int = 24

    # --- candidate search -----------------------------------------------------------------------------
    scales: tuple[float, ...] = (1.0,)
    """Window sizes tried, as a fraction of the largest window of the ratio that fits. Only the largest by
    default: a smaller window almost never won, and is judged (and used) at full size anyway."""
    area_weight: float = 0.5
    """Preference for larger windows: the score loses this much per unit of lost area (full size = 0)."""

"""Feature maps on the analysis copy: where people look.

Saliency = colour contrast (centre-surround differences in Lab at several scales, and distance from the
image's mean colour) + edge density + surroundedness (regions enclosed by others, as in Boolean Map
Saliency: objects are figures on a ground) + the faces and people found by the detectors (they draw the
eye whatever their contrast), each normalised, summed, blurred to the scale at which human fixations
spread. A centre prior (anisotropic Gaussian) multiplies it: free viewing is centre-biased whatever the
content. All maps are float32, computed once per image and reused for every ratio.
"""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np
from numpy.typing import NDArray

from worker.engine.config import EngineConfig
from worker.engine.decode import area_shrink

FloatMap = NDArray[np.float32]


def _normalise(m: FloatMap) -> FloatMap:
    """Scale to sum 1 (a flat map stays flat rather than dividing by ~0)."""
    total = float(m.sum())
    if total <= 1e-12:
        return np.full(m.shape, 1.0 / m.size, dtype=np.float32)
    return (m / total).astype(np.float32)


def _blur(m: FloatMap, sigma: float) -> FloatMap:
    """Gaussian blur; wide ones run on a shrunken copy (same result to within interpolation, 10x cheaper)."""
    if sigma <= 0.3:
        return m
    h, w = m.shape[:2]
    k = int(sigma // 3)
    if k >= 2 and min(h, w) // k >= 4:
        small = cv2.resize(m, (max(1, w // k), max(1, h // k)), interpolation=cv2.INTER_AREA)
        small = cv2.GaussianBlur(small, (0, 0), sigma / k, borderType=cv2.BORDER_REPLICATE)
        return np.asarray(cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR), dtype=np.float32)
    return np.asarray(cv2.GaussianBlur(m, (0, 0), sigma, borderType=cv2.BORDER_REPLICATE), dtype=np.float32)


def colour_contrast(lab: FloatMap, config: EngineConfig) -> FloatMap:
    """Multi-scale centre-surround contrast in Lab (``contrast_scales``) plus distance to the mean colour
    (frequency-tuned, ``mean_colour_weight``)."""
    h, w = lab.shape[:2]
    long_side = max(h, w)
    out = np.zeros((h, w), dtype=np.float32)
    finest = config.contrast_scales[0][0]
    fine = _blur(lab, finest * long_side)
    for centre, surround in config.contrast_scales:
        c = fine if centre == finest else _blur(lab, centre * long_side)
        s = _blur(lab, surround * long_side)
        out += np.sqrt(((c - s) ** 2).sum(axis=2))
    mean = lab.reshape(-1, 3).mean(axis=0)
    out += config.mean_colour_weight * np.sqrt(((fine - mean) ** 2).sum(axis=2))
    return out


def edge_density(lum: FloatMap, blur: float) -> FloatMap:
    """Gradient magnitude blurred by ``blur`` (a fraction of the long side)."""
    gx = cv2.Sobel(lum, cv2.CV_32F, 1, 0, ksize=3)
    gy = cv2.Sobel(lum, cv2.CV_32F, 0, 1, ksize=3)
    mag = np.sqrt(gx * gx + gy * gy)
    return _blur(np.asarray(mag, dtype=np.float32), blur * max(lum.shape))


def surroundedness(lab: FloatMap, step: int) -> FloatMap:
    """Boolean Map Saliency (Zhang & Sclaroff, ICCV 2013): each Lab channel, scaled to 0..255, is
    thresholded every ``step`` levels; in each boolean map (and its complement) the regions that do not
    touch the image border are figures. Each map's figure counts with weight 1/its area (small enclosed
    regions stand out more), summed over all maps. A 4-connected flood fill from a one-pixel frame marks
    everything that reaches the border."""
    h, w = lab.shape[:2]
    acc = np.zeros((h, w), dtype=np.float32)
    framed = np.empty((h + 2, w + 2), dtype=np.uint8)
    for c in range(lab.shape[2]):
        ch = lab[:, :, c]
        lo, hi = float(ch.min()), float(ch.max())
        if hi - lo < 1e-6:
            continue
        levels = ((ch - lo) * (255.0 / (hi - lo))).astype(np.uint8)
        for t in range(step // 2, 256, step):
            above = levels > t
            for figure in (above, ~above):
                framed.fill(1)
                framed[1:-1, 1:-1] = figure
                cv2.floodFill(framed, None, (0, 0), 2, flags=4)
                enclosed = framed[1:-1, 1:-1] == 1
                n = int(np.count_nonzero(enclosed))
                if n:
                    acc += enclosed * np.float32(1.0 / n)
    return acc


def _surround_map(lab: FloatMap, config: EngineConfig) -> FloatMap:
    """Surroundedness on a copy of at most ``surround_long_side``, brought back to the map's size."""
    h, w = lab.shape[:2]
    small = area_shrink(lab, config.surround_long_side)
    out = surroundedness(small, config.surround_step)
    if small.shape[:2] == (h, w):
        return out
    return np.asarray(cv2.resize(out, (w, h), interpolation=cv2.INTER_LINEAR), dtype=np.float32)


def centre_prior(h: int, w: int, config: EngineConfig) -> FloatMap:
    ys = (np.arange(h, dtype=np.float32) + 0.5) / h - 0.5 - config.centre_mean_y
    xs = (np.arange(w, dtype=np.float32) + 0.5) / w - 0.5 - config.centre_mean_x
    gy = np.exp(-0.5 * (ys / config.centre_sigma_y) ** 2)
    gx = np.exp(-0.5 * (xs / config.centre_sigma_x) ** 2)
    return np.asarray(np.outer(gy, gx), dtype=np.float32)


def box_map(boxes: Sequence[tuple[float, float, float, float, float]], h: int, w: int) -> FloatMap:
    """Boxes (x0, y0, x1, y1 as fractions of the image, weight) painted as filled rectangles."""
    m = np.zeros((h, w), dtype=np.float32)
    for x0, y0, x1, y1, weight in boxes:
        c0, r0 = int(x0 * w), int(y0 * h)
        c1, r1 = max(c0 + 1, int(np.ceil(x1 * w))), max(r0 + 1, int(np.ceil(y1 * h)))
        m[r0:r1, c0:c1] += weight
    return m


def saliency(
    rgb: NDArray[np.uint8],
    alpha: FloatMap | None,
    config: EngineConfig,
    faces: Sequence[tuple[float, float, float, float, float]] = (),
    persons: Sequence[tuple[float, float, float, float, float]] = (),
    objects: Sequence[tuple[float, float, float, float, float]] = (),
) -> FloatMap:
    """Importance (sum 1) including the centre prior; transparent pixels count for nothing.

    ``faces`` and ``persons`` are detections as (x0, y0, x1, y1 in fractions, score): people attract
    fixations beyond what their contrast predicts, so they add mass where they are.
    """
    h, w = rgb.shape[:2]
    lab = np.asarray(
        cv2.cvtColor(rgb.astype(np.float32) * (1.0 / 255.0), cv2.COLOR_RGB2Lab), dtype=np.float32
    )
    sal = config.saliency_weight * _normalise(colour_contrast(lab, config))
    sal += config.edge_weight * _normalise(edge_density(np.ascontiguousarray(lab[:, :, 0]), config.edge_blur))
    if config.surround_weight > 0:
        sal += config.surround_weight * _normalise(_surround_map(lab, config))
    for boxes, weight in (
        (faces, config.face_attention),
        (persons, config.person_attention),
        (objects, config.object_attention),
    ):
        if boxes and weight > 0:
            sal += weight * _normalise(box_map(boxes, h, w))
    sal = _blur(_normalise(sal), config.importance_blur * max(h, w))
    prior = centre_prior(h, w, config)
    cw = config.centre_weight
    imp = sal * ((1.0 - cw) + cw * prior) + (cw * config.centre_floor / (h * w)) * prior
    if alpha is not None:
        imp = imp * alpha
    return _normalise(imp)

"""Window search: every window of an exact ratio, over several scales, scored with summed-area tables.

Windows live in full-image integer pixels (so the ratio is exact to the pixel); their scores are read
from the analysis-size maps through a summed-area table sampled with bilinear interpolation, which is
exact for a piecewise-constant map, so no position is favoured by rounding. One :class:`Scene` holds the
maps of an image and is reused for every ratio.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from worker.engine.config import EngineConfig
from worker.engine.types import Rect

F64 = NDArray[np.float64]


@dataclass(frozen=True, slots=True)
class Target:
    """An object the crop should keep whole: box in analysis pixels, reward if kept, cost if cut."""

    x0: float
    y0: float
    x1: float
    y1: float
    reward: float
    cut_cost: float
    group: str = ""
    """Hint (or detector) it belongs to; used for MatchedInclusionHints."""


@dataclass(frozen=True, slots=True)
class Window:
    rect: Rect
    score: float
    confidence: float
    kept: float
    """Importance kept (the map sums to 1)."""
    area_frac: float
    """Area relative to the whole image."""


class Scene:
    """Summed-area table of the importance map plus the targets, for one image."""

    def __init__(self, importance: NDArray[np.float32], width: int, height: int,
                 targets: list[Target], config: EngineConfig) -> None:
        self.h, self.w = importance.shape
        self.width, self.height = width, height
        sat = np.zeros((self.h + 1, self.w + 1), dtype=np.float64)
        sat[1:, 1:] = importance.astype(np.float64).cumsum(0).cumsum(1)
        self.sat = sat
        self.total = float(sat[-1, -1]) or 1.0
        self.targets = targets
        self.config = config
        self.sx = self.w / width  # full pixels -> analysis pixels
        self.sy = self.h / height

    # -- summed-area lookups on a grid of windows (rows: tops, columns: lefts) -------------------------
    def _interp(self, coords: F64, size: int) -> tuple[NDArray[np.intp], NDArray[np.intp], F64]:
        c = np.clip(coords, 0.0, float(size))
        i0 = np.minimum(np.floor(c).astype(np.intp), size - 1 if size > 0 else 0)
        i0 = np.maximum(i0, 0)
        frac = c - i0
        return i0, np.minimum(i0 + 1, size), frac

    def _sat_at(self, ys: F64, xs: F64) -> F64:
        """Integral of the map over [0, y) x [0, x) for every (y in ys) x (x in xs)."""
        y0, y1, fy = self._interp(ys, self.h)
        x0, x1, fx = self._interp(xs, self.w)
        s = self.sat
        top = s[y0][:, x0] * (1 - fx)[None] + s[y0][:, x1] * fx[None]
        bot = s[y1][:, x0] * (1 - fx)[None] + s[y1][:, x1] * fx[None]
        return np.asarray(top * (1 - fy)[:, None] + bot * fy[:, None], dtype=np.float64)

    def mass(self, tops: F64, lefts: F64, hh: float, ww: float) -> F64:
        """Map mass inside every window (analysis units), tops x lefts grid."""
        return (self._sat_at(tops + hh, lefts + ww) - self._sat_at(tops, lefts + ww)
                - self._sat_at(tops + hh, lefts) + self._sat_at(tops, lefts))

    def _edge_mass(self, tops: F64, lefts: F64, hh: float, ww: float) -> F64:
        """Importance lying on the window's inner edges (a band), for edges not on the image border:
        a crop edge through a salient region cuts it."""
        band_x = max(0.5, 0.02 * self.w)
        band_y = max(0.5, 0.02 * self.h)
        out = np.zeros((tops.size, lefts.size), dtype=np.float64)
        eps = 1e-6
        # Left / right edges: vertical strips, weighted by whether the edge is inside the image.
        left_in = (lefts > eps).astype(np.float64)[None]
        right_in = (lefts + ww < self.w - eps).astype(np.float64)[None]
        top_in = (tops > eps).astype(np.float64)[:, None]
        bot_in = (tops + hh < self.h - eps).astype(np.float64)[:, None]
        out += left_in * self.mass(tops, lefts, hh, band_x)
        out += right_in * self.mass(tops, lefts + ww - band_x, hh, band_x)
        out += top_in * self.mass(tops, lefts, band_y, ww)
        out += bot_in * self.mass(tops + hh - band_y, lefts, band_y, ww)
        return out

    def _targets(self, tops: F64, lefts: F64, hh: float, ww: float) -> tuple[F64, F64, F64]:
        """(reward kept, cut cost, reward available) over the grid."""
        gain = np.zeros((tops.size, lefts.size), dtype=np.float64)
        cost = np.zeros_like(gain)
        total = 0.0
        for t in self.targets:
            bw, bh = max(t.x1 - t.x0, 1e-6), max(t.y1 - t.y0, 1e-6)
            ox = np.clip(np.minimum(lefts + ww, t.x1) - np.maximum(lefts, t.x0), 0, bw) / bw
            oy = np.clip(np.minimum(tops + hh, t.y1) - np.maximum(tops, t.y0), 0, bh) / bh
            f = oy[:, None] * ox[None]
            gain += t.reward * f**4
            cost += t.cut_cost * (4.0 * f * (1.0 - f))
            total += t.reward
        return gain, cost, np.asarray(total, dtype=np.float64)

    # -- the search ---------------------------------------------------------------------------------
    def window_sizes(self, rw: int, rh: int) -> list[tuple[int, int, float]]:
        """(width, height, scale) in full pixels: the largest window of ratio rw:rh, then smaller ones."""
        width, height = self.width, self.height
        r = rw / rh
        out: list[tuple[int, int, float]] = []
        for s in self.config.scales:
            if width / height >= r:
                h = max(1, min(height, round(height * s)))
                w = max(1, min(width, round(h * r)))
            else:
                w = max(1, min(width, round(width * s)))
                h = max(1, min(height, round(w / r)))
            if (w, h) not in [(a, b) for a, b, _ in out]:
                out.append((w, h, s))
        return out

    def best(self, rw: int, rh: int) -> Window:
        cfg = self.config
        best: Window | None = None
        for cw, ch, scale in self.window_sizes(rw, rh):
            lefts_full = _positions(self.width - cw, self.w)
            tops_full = _positions(self.height - ch, self.h)
            lefts = lefts_full * self.sx
            tops = tops_full * self.sy
            ww, hh = cw * self.sx, ch * self.sy
            kept = self.mass(tops, lefts, hh, ww) / self.total
            edge = self._edge_mass(tops, lefts, hh, ww) / self.total
            gain, cost, avail = self._targets(tops, lefts, hh, ww)
            area = (cw * ch) / (self.width * self.height)
            score = kept - cfg.border_penalty * edge + gain - cost - cfg.area_weight * (1.0 - scale * scale)
            k = int(np.argmax(score))
            iy, ix = np.unravel_index(k, score.shape)
            conf = float(kept[iy, ix])
            if float(avail) > 0:
                conf = 0.5 * conf + 0.5 * float(gain[iy, ix] / avail)
            cand = Window(
                rect=Rect(int(lefts_full[ix]), int(tops_full[iy]), cw, ch),
                score=float(score[iy, ix]),
                confidence=min(1.0, max(0.0, conf)),
                kept=float(kept[iy, ix]),
                area_frac=area,
            )
            if best is None or cand.score > best.score + 1e-12:
                best = cand
        assert best is not None  # window_sizes always yields at least one size
        return best


def _positions(span: int, analysis_size: int) -> F64:
    """Integer left/top positions 0..span, about one per analysis pixel, always including both ends."""
    if span <= 0:
        return np.zeros(1, dtype=np.float64)
    n = min(span + 1, max(2, analysis_size + 1))
    return np.unique(np.round(np.linspace(0, span, n))).astype(np.float64)

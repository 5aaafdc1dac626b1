"""Window search: every position of the largest window of an exact ratio, scored with summed-area tables.

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

    def __init__(
        self,
        importance: NDArray[np.float32],
        width: int,
        height: int,
        targets: list[Target],
        config: EngineConfig,
    ) -> None:
        self.h, self.w = importance.shape
        self.width, self.height = width, height
        sat = np.zeros((self.h + 1, self.w + 1), dtype=np.float64)
        sat[1:, 1:] = importance.astype(np.float64).cumsum(0).cumsum(1)
        self.sat = sat
        self.total = float(sat[-1, -1]) or 1.0
        self.targets = targets
        self._boxes = np.array(
            [[t.x0, t.y0, t.x1, t.y1, t.reward, t.cut_cost] for t in targets], dtype=np.float64
        ).reshape(-1, 6)
        self.config = config
        self.sx = self.w / width  # full pixels -> analysis pixels
        self.sy = self.h / height

    # -- summed-area lookups on a grid of windows (rows: tops, columns: lefts) -------------------------
    # Sampling the table at fractional coordinates is linear interpolation (exact for a map that is
    # constant within each pixel). Rows first, then columns: two gathers per axis, no BLAS involved.
    @staticmethod
    def _lerp(table: F64, coords: F64, axis: int) -> F64:
        size = table.shape[axis] - 1
        c = np.clip(coords, 0.0, float(size))
        i0 = np.minimum(np.floor(c).astype(np.intp), max(size - 1, 0))
        frac = c - i0
        i1 = np.minimum(i0 + 1, size)
        if axis == 0:
            return np.asarray(table[i0] * (1.0 - frac)[:, None] + table[i1] * frac[:, None])
        return np.asarray(table[:, i0] * (1.0 - frac)[None] + table[:, i1] * frac[None])

    def _span(self, table: F64, starts: F64, length: float, axis: int) -> F64:
        return self._lerp(table, starts + length, axis) - self._lerp(table, starts, axis)

    def _edge_mass(self, rows: F64, tops: F64, lefts: F64, hh: float, ww: float) -> F64:
        """Importance on the window's inner edges (a band), for edges not on the image border: a crop
        edge through a salient region cuts it. ``rows`` is the row span of the table for ``tops``/``hh``
        (:meth:`best` reads the windows' mass from it too)."""
        # At most a quarter of the window: on extreme shapes (a 1-pixel strip) a wider band would make
        # every window but the ones at the ends all edge.
        band = self.config.edge_band
        band_x = min(max(0.5, band * self.w), ww / 4)
        band_y = min(max(0.5, band * self.h), hh / 4)
        eps = 1e-6
        out = np.zeros((tops.size, lefts.size), dtype=np.float64)
        # Edges lying on the image border cut nothing; the largest window of a ratio spans the whole
        # image on one axis, so two of its four edges are skipped without a lookup.
        inner_left = lefts > eps
        if inner_left.any():
            out += self._span(rows, lefts, band_x, 1) * inner_left[None]
        inner_right = lefts + ww < self.w - eps
        if inner_right.any():
            out += self._span(rows, lefts + ww - band_x, band_x, 1) * inner_right[None]
        inner_top = tops > eps
        inner_bottom = tops + hh < self.h - eps
        if inner_top.any() or inner_bottom.any():
            top = self._span(self.sat, tops, band_y, 0) * inner_top[:, None]
            bottom = self._span(self.sat, tops + hh - band_y, band_y, 0) * inner_bottom[:, None]
            out += self._span(top + bottom, lefts, ww, 1)
        return out

    def _targets(self, tops: F64, lefts: F64, hh: float, ww: float) -> tuple[F64, F64, float]:
        """(reward kept, cut cost, reward available) over the grid, all targets at once."""
        if not self.targets:
            z = np.zeros((tops.size, lefts.size), dtype=np.float64)
            return z, z, 0.0
        b = self._boxes
        bw = np.maximum(b[:, 2] - b[:, 0], 1e-6)[:, None]
        bh = np.maximum(b[:, 3] - b[:, 1], 1e-6)[:, None]
        ox = np.clip(np.minimum(lefts[None] + ww, b[:, 2:3]) - np.maximum(lefts[None], b[:, 0:1]), 0, bw) / bw
        oy = np.clip(np.minimum(tops[None] + hh, b[:, 3:4]) - np.maximum(tops[None], b[:, 1:2]), 0, bh) / bh
        f = oy[:, :, None] * ox[:, None, :]  # (targets, tops, lefts): fraction of each box kept
        # Whole objects count (f ** target_keep_exponent); a crop edge through one costs most when it
        # keeps nearly all of it (sqrt keeps the cost steep near f = 1, where a few pixels decide "kept"
        # or "cut"; the 2 makes a half-cut box cost its full cut_cost).
        gain = np.einsum("t,tyx->yx", b[:, 4], f**self.config.target_keep_exponent)
        cost = np.einsum("t,tyx->yx", b[:, 5], 2.0 * np.sqrt(f * (1.0 - f)))
        return gain, cost, float(b[:, 4].sum())

    # -- the search ---------------------------------------------------------------------------------
    def window_size(self, rw: int, rh: int) -> tuple[int, int]:
        """(width, height) in full pixels of the largest window of ratio rw:rh (:func:`window_size`)."""
        return window_size(self.width, self.height, rw, rh)

    def best(self, rw: int, rh: int) -> Window:
        """The best position of the largest window of ratio rw:rh: it slides along one axis at full
        analysis resolution."""
        cfg = self.config
        cw, ch = self.window_size(rw, rh)
        lefts_full = _positions(self.width - cw, self.w)
        tops_full = _positions(self.height - ch, self.h)
        lefts = lefts_full * self.sx
        tops = tops_full * self.sy
        ww, hh = cw * self.sx, ch * self.sy
        rows = self._span(self.sat, tops, hh, 0)
        kept = self._span(rows, lefts, ww, 1) / self.total
        edge = self._edge_mass(rows, tops, lefts, hh, ww) / self.total
        gain, cost, avail = self._targets(tops, lefts, hh, ww)
        score = kept - cfg.border_penalty * edge + gain - cost
        iy, ix = np.unravel_index(int(np.argmax(score)), score.shape)
        conf = float(kept[iy, ix])
        if avail > 0:
            share = cfg.confidence_target_share
            conf = (1.0 - share) * conf + share * float(gain[iy, ix] / avail)
        return Window(
            rect=Rect(int(lefts_full[ix]), int(tops_full[iy]), cw, ch),
            score=float(score[iy, ix]),
            confidence=min(1.0, max(0.0, conf)),
            kept=float(kept[iy, ix]),
            area_frac=(cw * ch) / (self.width * self.height),
        )


def window_size(width: int, height: int, rw: int, rh: int) -> tuple[int, int]:
    """(width, height) in full pixels of the largest window of ratio rw:rh in a width x height image.
    Smaller windows are not searched: they almost never won, and are judged (and used) at full size
    anyway."""
    r = rw / rh
    if width / height >= r:
        h = height
        w = max(1, min(width, round(h * r)))
    else:
        w = width
        h = max(1, min(height, round(w / r)))
    return w, h


def _positions(span: int, analysis_size: int) -> F64:
    """Integer left/top positions 0..span, about one per analysis pixel, always including both ends."""
    if span <= 0:
        return np.zeros(1, dtype=np.float64)
    n = min(span + 1, max(2, analysis_size + 1))
    return np.unique(np.round(np.linspace(0, span, n))).astype(np.float64)

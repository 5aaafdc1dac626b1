"""Cost of a rendered crop, side by side with Pillow's and libvips' own crop + resize + encode, in ONE run.

    python bench/render_bench.py [--repeat 7] [--sizes 12 24]

Builds a detailed ~12 MP (4000x3000) and ~24 MP (6000x4000) JPEG (scikit-image photos, upscaled, with
noise), then for jpeg and webp outputs of 1200 px (quality 82) times, per output:
- cropq ``render_crops`` in this process (DCT-scaled decode, linear-light Lanczos, progressive JPEG);
- the same in the decode server (``decode_isolated``, as the workers run it), with its peak RSS;
- cropq with five crops in one call (the whole image and four centred ratios: one decode serves
  them all), per output;
- Pillow's straightforward way: full decode (no draft), crop, ``resize(LANCZOS)``, encode (and its
  five crops from one decode);
- libvips ``thumbnail_buffer`` (shrink-on-load, then its lanczos3) when pyvips is importable.
Methods are interleaved per run so that machine noise hits all alike; medians and the ratio to Pillow.
"""

from __future__ import annotations

import argparse
import dataclasses
import io
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from hostile_bench import machine

from worker.engine import sandbox
from worker.engine.config import EngineConfig
from worker.engine.render import RenderOptions, render_crops
from worker.engine.types import Rect

OUTPUT = 1200
QUALITY = 82
SIZES = {12: (4000, 3000), 24: (6000, 4000)}


def make_jpeg(width: int, height: int, seed: int = 0) -> bytes:
    import cv2
    from skimage import data

    src = np.asarray(data.coffee() if seed % 2 == 0 else data.astronaut())  # type: ignore[no-untyped-call]
    big = cv2.resize(src, (width, height), interpolation=cv2.INTER_CUBIC).astype(np.float32)
    big = np.clip(big + np.random.default_rng(seed).normal(0, 6, big.shape), 0, 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(big).save(buf, "JPEG", quality=90)
    return buf.getvalue()


def five_rects(width: int, height: int) -> list[Rect]:
    """The whole image and four centred crops of the usual ratios."""
    rects = [Rect(0, 0, width, height)]
    for w, h in ((1, 1), (16, 9), (9, 16), (3, 2)):
        cw, ch = (height * w // h, height) if width * h >= height * w else (width, width * h // w)
        cw, ch = min(cw, width), min(ch, height)
        rects.append(Rect((width - cw) // 2, (height - ch) // 2, cw, ch))
    return rects


Method = Callable[[bytes, list[Rect]], int]
"""Renders every rectangle of the image; returns how many outputs it made."""


def pillow_way(fmt: str) -> Method:
    def run(data: bytes, rects: list[Rect]) -> int:
        im = Image.open(io.BytesIO(data)).convert("RGB")
        for rect in rects:
            crop = im.crop((rect.left, rect.top, rect.right, rect.bottom))
            scale = min(OUTPUT / rect.width, OUTPUT / rect.height, 1.0)
            size = (max(1, round(rect.width * scale)), max(1, round(rect.height * scale)))
            out = crop.resize(size, Image.Resampling.LANCZOS)
            buf = io.BytesIO()
            if fmt == "jpeg":
                out.save(buf, "JPEG", quality=QUALITY, optimize=True, progressive=True)
            else:
                out.save(buf, "WEBP", quality=QUALITY, method=4)
        return len(rects)

    return run


def vips_way(fmt: str) -> Method | None:
    try:
        import pyvips
    except (ImportError, OSError):
        return None
    suffix = f".jpg[Q={QUALITY},optimize_coding,interlace]" if fmt == "jpeg" else f".webp[Q={QUALITY}]"

    def run(data: bytes, rects: list[Rect]) -> int:
        for rect in rects:
            if (rect.left, rect.top) == (0, 0):  # the whole image: shrink-on-load, then lanczos3
                thumb = pyvips.Image.thumbnail_buffer(data, OUTPUT, height=OUTPUT)
            else:
                im = pyvips.Image.new_from_buffer(data, "").crop(rect.left, rect.top, rect.width, rect.height)
                thumb = im.resize(min(OUTPUT / rect.width, OUTPUT / rect.height, 1.0), kernel="lanczos3")
            thumb.write_to_buffer(suffix)
        return len(rects)

    return run


def cropq_way(fmt: str, config: EngineConfig) -> Method:
    options = RenderOptions(format=fmt, quality=QUALITY, max_width=OUTPUT, max_height=OUTPUT)  # type: ignore[arg-type]

    def run(data: bytes, rects: list[Rect]) -> int:
        return len(render_crops(data, rects, options, config))

    return run


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeat", type=int, default=7, help="runs per image, format and method")
    ap.add_argument("--sizes", type=int, nargs="*", default=[12, 24], choices=sorted(SIZES), help="MP")
    ap.add_argument("--formats", nargs="*", default=["jpeg", "webp"], choices=["jpeg", "webp"])
    a = ap.parse_args(argv)
    here = EngineConfig()
    isolated = dataclasses.replace(here, decode_isolated=True, decode_memory_bytes=640 << 20)
    out = sys.stdout
    out.write(f"{machine()}\n")
    vips_available = vips_way("jpeg") is not None
    if not vips_available:
        out.write("pyvips is not importable here: the libvips rows are skipped\n")
    out.write(f"\n{a.repeat} runs each; outputs fit {OUTPUT}x{OUTPUT}, quality {QUALITY}\n\n")
    out.write("| source | format | method | ms/output median | x Pillow |\n|---|---|---|---|---|\n")
    for mp in a.sizes:
        width, height = SIZES[mp]
        data = make_jpeg(width, height, seed=mp)
        whole = Rect(0, 0, width, height)
        rects = five_rects(width, height)
        for fmt in a.formats:
            methods: list[tuple[str, Method | None, list[Rect]]] = [
                ("Pillow: full decode, crop, resize(LANCZOS), encode", pillow_way(fmt), [whole]),
                ("cropq render_crops, in process", cropq_way(fmt, here), [whole]),
                ("cropq render_crops, decode server", cropq_way(fmt, isolated), [whole]),
                ("cropq, 5 crops in one call", cropq_way(fmt, here), rects),
                ("Pillow, 5 crops from one decode", pillow_way(fmt), rects),
                ("libvips thumbnail_buffer", vips_way(fmt), [whole]),
            ]
            for _, fn, todo in methods:  # warm up: the decode server starts, encoders initialise
                if fn is not None:
                    fn(data, todo)
            times: dict[str, list[float]] = {name: [] for name, _, _ in methods}
            peak = 0
            for _ in range(a.repeat):
                for name, fn, todo in methods:
                    if fn is None:
                        continue
                    t0 = time.perf_counter()
                    outputs = fn(data, todo)
                    times[name].append((time.perf_counter() - t0) * 1000.0 / outputs)
                    if "decode server" in name:
                        peak = max(peak, sandbox.last_child_peak_rss)
            base = float(np.median(times[methods[0][0]]))
            source = f"{mp} MP JPEG ({len(data) / 1e6:.1f} MB)"
            for name, fn, _ in methods:
                if fn is None:
                    out.write(f"| {source} | {fmt} | {name} | not installed | |\n")
                    continue
                med = float(np.median(times[name]))
                note = f" (server peak RSS {peak >> 20} MB)" if "decode server" in name else ""
                out.write(f"| {source} | {fmt} | {name}{note} | {med:.1f} | {med / base:.2f} |\n")
            out.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Speed of the crop engine on 12 MP JPEGs, side by side with the decode floor and the peers, in ONE run.

    python bench/engine_bench.py [IMAGE.jpg ...] [--repeat 5]

Without paths it builds realistic ~3 MB 4000x3000 JPEGs from scikit-image photos (upscaled + noise).
Rows: the floor (1/8-scale JPEG decode alone), cropq (5 ratios, face detection on; by default, with
object detection only for hints, and with faces detected at 640 px), smartcrop.py
(default options, as the eval's croppers.py calls it) and libvips smartcrop attention/entropy when
pyvips is importable. Prints ms/image (median, p95) and the ratio to the floor.
"""

from __future__ import annotations

import argparse
import dataclasses
import io
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from worker.engine.config import EngineConfig
from worker.engine.pipeline import detect_crops

RATIOS = ["1:1", "16:9", "4:3", "9:16", "3:2"]


def make_images(folder: Path, count: int = 3) -> list[Path]:
    import cv2
    from skimage import data

    photos = [data.astronaut(), data.chelsea(), data.coffee(), data.rocket()]
    rng = np.random.default_rng(0)
    out = []
    for i in range(count):
        src = np.asarray(photos[i % len(photos)])
        big = cv2.resize(src, (4000, 3000), interpolation=cv2.INTER_CUBIC).astype(np.float32)
        big = np.clip(big + rng.normal(0, 9, big.shape), 0, 255).astype(np.uint8)
        path = folder / f"bench_{i}.jpg"
        Image.fromarray(big).save(path, "JPEG", quality=90)
        out.append(path)
    return out


def floor(data: bytes) -> None:
    im = Image.open(io.BytesIO(data))
    im.draft("RGB", (im.width // 8, im.height // 8))
    np.asarray(im.convert("RGB"))


def ours(data: bytes) -> None:
    detect_crops(data, RATIOS)


_FAST = dataclasses.replace(EngineConfig(), object_detection="hint")


def ours_fast(data: bytes) -> None:
    """CROPQ_OBJECT_DETECTION=hint: the object detector runs only for a hint naming one of its classes."""
    detect_crops(data, RATIOS, config=_FAST)


_SMALL_FACES = dataclasses.replace(_FAST, detect_long_side=640)


def ours_small_faces(data: bytes) -> None:
    """...and CROPQ_FACE_DETECT_LONG_SIDE=640: faces from about 3.3% of the short side (320: about 7%)."""
    detect_crops(data, RATIOS, config=_SMALL_FACES)


def smartcrop_py() -> Callable[[bytes], None] | None:
    try:
        import smartcrop
    except ImportError:
        return None
    sc = smartcrop.SmartCrop()

    def run(data: bytes) -> None:
        img = Image.open(io.BytesIO(data)).convert("RGB")
        for r in RATIOS:
            w, h = map(int, r.split(":"))
            tw, th = (256, max(1, round(256 * h / w))) if w >= h else (max(1, round(256 * w / h)), 256)
            sc.crop(img, tw, th)

    return run


def vips(strategy: str) -> Callable[[bytes], None] | None:
    try:
        import pyvips
    except (ImportError, OSError):
        return None

    def run(data: bytes) -> None:
        im = pyvips.Image.new_from_buffer(data, "")
        for r in RATIOS:
            w, h = map(int, r.split(":"))
            cw, ch = (
                (round(im.height * w / h), im.height)
                if im.width / im.height >= w / h
                else (im.width, round(im.width * h / w))
            )
            im.smartcrop(cw, ch, interesting=strategy).copy_memory()

    return run


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("images", nargs="*", type=Path)
    ap.add_argument("--repeat", type=int, default=9, help="runs per image and method")
    ap.add_argument("--no-peers", action="store_true")
    a = ap.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        paths = a.images or make_images(Path(tmp))
        blobs = [p.read_bytes() for p in paths]
    methods: list[tuple[str, Callable[[bytes], None] | None]] = [
        ("decode floor (1/8 JPEG)", floor),
        ("cropq (default: faces + objects and people)", ours),
        ("cropq (object detection on hint only)", ours_fast),
        ("cropq (hint only, faces from 3.3%: face detection at 640)", ours_small_faces),
    ]
    if not a.no_peers:
        methods += [
            ("smartcrop.py", smartcrop_py()),
            ("libvips attention", vips("attention")),
            ("libvips entropy", vips("entropy")),
        ]
    for _, fn in methods:  # warm up: models load once per process, not per image
        if fn is not None:
            fn(blobs[0])
    times: dict[str, list[float]] = {name: [] for name, _ in methods}
    # Interleave methods per image so that machine noise hits all of them alike.
    for _ in range(a.repeat):
        for blob in blobs:
            for name, fn in methods:
                if fn is None:
                    continue
                t0 = time.perf_counter()
                fn(blob)
                times[name].append((time.perf_counter() - t0) * 1000.0)
    sizes = ", ".join(f"{len(b) / 1e6:.1f} MB" for b in blobs)
    out = sys.stdout
    out.write(f"{len(blobs)} JPEGs ({sizes}), {a.repeat} runs each, {len(RATIOS)} ratios\n\n")
    out.write("| method | ms/image median | p95 | x floor (median) |\n|---|---|---|---|\n")
    base = float(np.median(times["decode floor (1/8 JPEG)"]))
    for name, fn in methods:
        if fn is None:
            out.write(f"| {name} | not installed | | |\n")
            continue
        t = np.asarray(times[name])
        med = float(np.median(t))
        out.write(f"| {name} | {med:.1f} | {float(np.percentile(t, 95)):.1f} | {med / base:.2f} |\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

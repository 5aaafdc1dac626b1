"""Speed of the crop engine on 12 MP JPEGs, side by side with the decode floor and the peers, in ONE run.

    python bench/engine_bench.py [IMAGE.jpg ...] [--repeat 5]

Without paths it builds realistic ~3 MB 4000x3000 JPEGs from scikit-image photos (upscaled + noise).
Prints the CPU (model, vector extensions, cores, load) and the runtime and precision of each model, then
rows for the floor (1/8-scale JPEG decode alone), cropq (5 ratios, face detection on; by default, with
object detection only for hints, and with faces detected at 640 px), smartcrop.py (default options, as
the eval's croppers.py calls it) and libvips smartcrop attention/entropy when pyvips is importable:
ms/image (median, p95) and the ratio to the floor. Then the engine's cost per stage (decode, each
detector, maps, window search), as the engine reports them to its stage hook (worker/engine/stages.py).
Methods run interleaved, image by image, so that a busy machine slows all of them alike; medians.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import dataclasses
import importlib.metadata
import io
import os
import platform
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from worker.engine.config import EngineConfig
from worker.engine.detectors import get_detector
from worker.engine.pipeline import detect_crops
from worker.engine.stages import reporting_stages

RATIOS = ["1:1", "16:9", "4:3", "9:16", "3:2"]

# Vector extensions that decide which kernels the runtimes use (x86 /proc/cpuinfo "flags", ARM "Features").
VECTOR_FLAGS = (
    "sse4_2", "avx", "avx2", "fma", "f16c", "avx_vnni", "avx512f", "avx512bw", "avx512vl", "avx512_vnni",
    "avx512_bf16", "amx_tile", "amx_int8", "amx_bf16", "asimd", "asimddp", "i8mm", "bf16", "sve", "sve2",
)  # fmt: skip
CALL = "*"
"""The whole call, next to the stages of one run."""
# The engine's stages as the table prints them: (stage hook name, row label).
STAGES = (
    ("decode", "decode (JPEG at 1/8 + resize to the working copy)"),
    ("detect.face", "faces (CenterFace)"),
    ("detect.object", "objects and people (NanoDet)"),
    ("score.maps", "importance map and targets"),
    ("score.windows", "window search (5 ratios)"),
)


def cpu_description() -> tuple[str, list[str]]:
    """(CPU model, the vector extensions it reports), from /proc/cpuinfo or else the platform module."""
    model, flags = "", set[str]()
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as f:
            for line in f:
                key, _, value = line.partition(":")
                key = key.strip().lower()
                if key in ("model name", "hardware", "cpu model") and not model:
                    model = value.strip()
                elif key in ("flags", "features") and not flags:
                    flags = set(value.split())
    except OSError:
        pass
    return model or platform.processor() or platform.machine(), [f for f in VECTOR_FLAGS if f in flags]


def model_runtimes(config: EngineConfig) -> list[tuple[str, str, str]]:
    """(model, runtime, precision) of each network, as its detector loaded it for ``config``."""
    out = []
    for name, requested in (("face", config.face_runtime), ("object", config.object_runtime)):
        detector = get_detector(name)
        # Private, until the detectors say which session they run on: per precision, then per runtime.
        precisions = getattr(detector, "_precisions", None)
        if precisions is not None:
            sessions = precisions.get(getattr(config, f"{name}_precision"))
        else:
            sessions = getattr(detector, "_sessions", None)
        if sessions is None:
            out.append((name, "not installed", "-"))
            continue
        session = sessions.get(requested)
        runtime = session.runtime
        with contextlib.suppress(importlib.metadata.PackageNotFoundError):
            runtime += " " + importlib.metadata.version(runtime)
        out.append((name, runtime, getattr(session, "precision", "fp32")))
    return out


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


class StageTimes:
    """Milliseconds per stage and run, from the engine's stage hook (a stage reported in pieces adds up)."""

    def __init__(self) -> None:
        self.runs: dict[str, list[dict[str, float]]] = collections.defaultdict(list)

    def timed(self, method: str, run: Callable[[bytes], None]) -> Callable[[bytes], None]:
        def wrapped(data: bytes) -> None:
            spent: dict[str, float] = collections.defaultdict(float)

            def hook(name: str, start: int, end: int) -> None:
                spent[name] += (end - start) / 1e6

            t0 = time.perf_counter()
            with reporting_stages(hook):
                run(data)
            spent[CALL] = (time.perf_counter() - t0) * 1000.0
            self.runs[method].append(spent)

        return wrapped

    def median(self, method: str, stage: str) -> float:
        return float(np.median([run.get(stage, 0.0) for run in self.runs[method]]))


def ours(data: bytes) -> None:
    detect_crops(data, RATIOS)


_FAST = dataclasses.replace(EngineConfig(), object_detection="hint")


def ours_fast(data: bytes) -> None:
    """CROPQ_OBJECT_DETECTION=hint: the object detector runs only for a hint naming one of its classes."""
    detect_crops(data, RATIOS, config=_FAST)


_INT8 = dataclasses.replace(EngineConfig(), object_precision="int8")


def ours_int8(data: bytes) -> None:
    """CROPQ_OBJECT_PRECISION=int8: the default, with the object detector's int8 graph."""
    detect_crops(data, RATIOS, config=_INT8)


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
    stages = StageTimes()
    default, hint = "cropq (default: faces + objects and people)", "cropq (object detection on hint only)"
    int8 = "cropq (default, object detector in int8)"
    methods: list[tuple[str, Callable[[bytes], None] | None]] = [
        ("decode floor (1/8 JPEG)", floor),
        (default, stages.timed(default, ours)),
        (int8, stages.timed(int8, ours_int8)),
        (hint, stages.timed(hint, ours_fast)),
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
    stages.runs.clear()
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
    model, flags = cpu_description()
    load = ", ".join(f"{v:.1f}" for v in os.getloadavg()) if hasattr(os, "getloadavg") else "?"
    out.write(f"CPU: {model}; {os.cpu_count()} logical cores; load average {load} (1, 5, 15 min)\n")
    out.write(f"vector extensions: {' '.join(flags) or 'none reported'}\n")
    for name, runtime, precision in model_runtimes(EngineConfig()):
        out.write(f"{name} model: {runtime}, {precision}, one thread\n")
    for name, runtime, precision in model_runtimes(_INT8)[1:]:
        out.write(f"{name} model with CROPQ_OBJECT_PRECISION=int8: {runtime}, {precision}\n")
    out.write(f"\n{len(blobs)} JPEGs ({sizes}), {a.repeat} runs each, {len(RATIOS)} ratios\n\n")
    out.write("| method | ms/image median | p95 | x floor (median) |\n|---|---|---|---|\n")
    base = float(np.median(times["decode floor (1/8 JPEG)"]))
    for name, fn in methods:
        if fn is None:
            out.write(f"| {name} | not installed | | |\n")
            continue
        t = np.asarray(times[name])
        med = float(np.median(t))
        out.write(f"| {name} | {med:.1f} | {float(np.percentile(t, 95)):.1f} | {med / base:.2f} |\n")
    write_stages(stages, {"default": default, "int8 objects": int8, "hint": hint}, base)
    return 0


def write_stages(stages: StageTimes, methods: dict[str, str], base: float) -> None:
    """Per-stage medians of each cropq method, in ms and as a multiple of the floor's median."""
    out = sys.stdout
    out.write("\nPer stage (median ms / x floor):\n\n")
    out.write("| stage | " + " | ".join(f"{label}: ms / x floor" for label in methods) + " |\n")
    out.write("|---" * (len(methods) + 1) + "|\n")
    rows = [
        *STAGES,
        ("", "rest (detector input copies, box filtering, summed-area table, results)"),
        (CALL, "whole call"),
    ]
    for stage, label in rows:
        cells = []
        for method in methods.values():
            if stage == "":
                ms = float(
                    np.median([r[CALL] - sum(r.get(s, 0.0) for s, _ in STAGES) for r in stages.runs[method]])
                )
            else:
                ms = stages.median(method, stage)
            cells.append(f"{ms:.1f} / {ms / base:.2f}")
        out.write(f"| {label} | " + " | ".join(cells) + " |\n")


if __name__ == "__main__":
    sys.exit(main())

"""Hostile images against the sandboxed decode, as a worker meets them, in ONE run.

    python bench/hostile_bench.py [--only NAME ...] [--repeat 15]

The corpus comes from ``tests/security/hostile_images.py`` (generated, never committed). This process
loads the detectors first (so it is as large as a worker child), then for each image runs the engine
with the workers' settings (``CROPQ_DECODE_*``): the code it gets, its time, the peak RSS of the
decode server during that image (``worker.engine.decode_server``; the kernel's figure when the image
killed it) and the time of the normal job that follows it (after a failure it waits for the fresh
server). Then the sandbox's overhead on a normal 12 MP JPEG: the sandboxed decode against the in-process
one, interleaved in the same run, medians of ``--repeat`` runs.
Targets: every case ends within 20 s with a clear code; no process above 1 GB; the next job at once.
"""

from __future__ import annotations

import argparse
import dataclasses
import platform
import resource
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.security.hostile_images import BUILDERS, corpus, photo
from worker.engine import sandbox
from worker.engine.decode import decode
from worker.engine.errors import CropError
from worker.engine.pipeline import detect_crops
from worker.settings import Settings, engine_config

_VECTOR_FLAGS = ("sse4_2", "avx", "avx2", "fma", "avx512f", "avx512bw", "avx512_vnni", "neon", "asimd")


def machine() -> str:
    model, flags = platform.processor() or platform.machine(), set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name":
                model = value.strip()
            elif key.strip() in ("flags", "Features"):
                flags = set(value.split())
    except OSError:
        pass
    vec = " ".join(f for f in _VECTOR_FLAGS if f in flags) or "unknown"
    import os

    return f"{model}; {os.cpu_count()} cores; vector extensions: {vec}"


def _jpeg(width: int, height: int) -> bytes:
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(photo(width, height)).save(buf, "JPEG", quality=90)
    return buf.getvalue()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", nargs="*", choices=list(BUILDERS), help="cases to run (default: all)")
    ap.add_argument("--repeat", type=int, default=60, help="runs of the overhead measurement")
    ap.add_argument("--normal-side", type=int, default=4000, help="width of the normal JPEG (4:3)")
    a = ap.parse_args(argv)
    cfg = engine_config(Settings())
    normal = _jpeg(a.normal_side, a.normal_side * 3 // 4)
    detect_crops(normal, ["1:1"], config=cfg)  # models loaded: this process is as large as a worker child
    out = sys.stdout
    out.write(f"{machine()}\n")
    out.write(
        f"decode budget {cfg.decode_memory_bytes >> 20} MB / {cfg.decode_time_limit:g} s, "
        f"scan limit {cfg.max_jpeg_scans}\n\n"
    )
    out.write("| image | file | code | time ms | decode server peak RSS MB | next normal job ms |\n")
    out.write("|---|---|---|---|---|---|\n")
    worst = 0
    for case in corpus(a.only):
        sandbox.last_child_peak_rss = 0
        t0 = time.perf_counter()
        try:
            detect_crops(case.data, ["1:1", "16:9"], config=cfg)
            code = "Succeeded"
        except CropError as exc:
            code = exc.code
        ms = (time.perf_counter() - t0) * 1000
        child = sandbox.last_child_peak_rss
        worst = max(worst, child)
        t1 = time.perf_counter()
        detect_crops(normal, ["1:1", "16:9"], config=cfg)
        next_ms = (time.perf_counter() - t1) * 1000
        peak = f"{child / 2**20:.0f}" if child else "not decoded (refused from the header)"
        size = (
            f"{len(case.data) / 1024:.1f} kB"
            if len(case.data) < 1 << 20
            else f"{len(case.data) / 2**20:.1f} MB"
        )
        out.write(f"| {case.name} | {size} | {code} | {ms:.1f} | {peak} | {next_ms:.1f} |\n")
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    out.write(
        f"\nlargest decode server: {worst / 2**20:.0f} MB; this process (the worker's part): {own:.0f} MB\n"
    )

    here = dataclasses.replace(cfg, decode_isolated=False)
    decode(normal, here)
    decode(normal, cfg)  # a server replaced after the last hostile case is ready before the clock runs
    times: dict[str, list[float]] = {"in-process": [], "sandboxed": []}
    for _ in range(a.repeat):  # interleaved, so that machine noise hits both alike
        for name, c in (("in-process", here), ("sandboxed", cfg)):
            t0 = time.perf_counter()
            decode(normal, c)
            times[name].append((time.perf_counter() - t0) * 1000)
    med = {k: float(np.median(v)) for k, v in times.items()}
    extra = float(np.median(np.subtract(times["sandboxed"], times["in-process"])))  # paired differences
    mp = a.normal_side * (a.normal_side * 3 // 4) / 1e6
    out.write(
        f"\n| decode of a {mp:.0f} MP JPEG ({len(normal) / 2**20:.1f} MB), {a.repeat} runs "
        "| ms median | overhead ms (median of pairs) | ratio |\n|---|---|---|---|\n"
    )
    out.write(f"| in-process | {med['in-process']:.1f} | 0 | 1.00 |\n")
    out.write(
        f"| sandboxed (decode server + limits + pipes) | {med['sandboxed']:.1f} | {extra:.1f} "
        f"| {med['sandboxed'] / med['in-process']:.2f} |\n"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())

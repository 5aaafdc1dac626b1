"""Peak memory and time of the engine on hostile-but-legal images, each in a fresh process.

    python bench/memory_bench.py [--side 9990]

A flat 100 MP PNG is a few hundred kB of deflate, under the default pixel cap, and decodes to 300-400 MB;
100 MP JPEGs (baseline and progressive) show what DCT-scaled decoding saves.
For each case the script prints the growth of peak RSS (Linux VmHWM, reset before the step) for (a)
Pillow alone decoding the image (the floor: what any decoder must hold) and (b) ``detect_crops`` on
the same bytes with 2 ratios, and their ratio.
"""

from __future__ import annotations

import argparse
import io
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent

_CHILD = r"""
import json, sys, time
from pathlib import Path
sys.path.insert(0, sys.argv[3])


def status(field):
    for line in open("/proc/self/status"):
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024  # kB -> MB
    raise KeyError(field)


def start():
    # Linux: writing 5 to clear_refs resets the peak RSS (VmHWM), so the peak is this step's alone.
    with open("/proc/self/clear_refs", "w") as fh:
        fh.write("5")
    return status("VmRSS")


data = Path(sys.argv[1]).read_bytes()
if sys.argv[2] == "floor":
    import io
    from PIL import Image
    Image.MAX_IMAGE_PIXELS = None
    base = start()
    t0 = time.perf_counter()
    im = Image.open(io.BytesIO(data))
    im.load()
else:
    from worker.engine.pipeline import detect_crops
    detect_crops(Path(sys.argv[4]).read_bytes(), ["1:1"])  # load models first: they are not the image's
    base = start()
    t0 = time.perf_counter()
    detect_crops(data, ["1:1", "16:9"])
dt = time.perf_counter() - t0
print(json.dumps({"ms": dt * 1000, "peak_mb": status("VmHWM") - base}))
"""


def cases(side: int) -> dict[str, bytes]:
    def png(im: Image.Image) -> bytes:
        buf = io.BytesIO()
        im.save(buf, "PNG")
        return buf.getvalue()

    def jpeg(progressive: bool) -> bytes:
        noise = np.random.default_rng(0).integers(0, 256, size=(100, 100, 3), dtype=np.uint8)
        buf = io.BytesIO()
        photo_like = Image.fromarray(noise).resize((side, side), Image.Resampling.BILINEAR)
        photo_like.save(buf, "JPEG", quality=85, progressive=progressive)
        return buf.getvalue()

    ramp = (np.arange(side, dtype=np.uint32)[None, :] * 65535 // side).astype(np.uint16)
    return {
        "baseline JPEG": jpeg(False),
        "progressive JPEG": jpeg(True),
        "RGB PNG": png(Image.new("RGB", (side, side), (120, 130, 140))),
        "RGBA PNG": png(Image.new("RGBA", (side, side), (120, 130, 140, 128))),
        "palette PNG": png(Image.new("P", (side, side), 3)),
        "16-bit grey PNG": png(Image.fromarray(np.repeat(ramp, side, axis=0))),
    }


def run(path: Path, which: str, warm: Path) -> dict[str, float]:
    out = subprocess.run(
        [sys.executable, "-c", _CHILD, str(path), which, str(ROOT), str(warm)],
        capture_output=True,
        text=True,
        check=True,
    )
    return dict(json.loads(out.stdout.strip().splitlines()[-1]))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--side", type=int, default=9990, help="square side in pixels (default ~100 MP)")
    a = ap.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        warm = Path(tmp) / "warm.png"
        Image.new("RGB", (64, 48), (10, 20, 30)).save(warm)
        rows = []
        for name, data in cases(a.side).items():
            path = Path(tmp) / "case.png"
            path.write_bytes(data)
            floor, ours = run(path, "floor", warm), run(path, "engine", warm)
            rows.append((name, len(data), floor, ours))
    out = sys.stdout
    out.write(f"{a.side}x{a.side} = {a.side * a.side / 1e6:.0f} MP, each case in a fresh process\n\n")
    out.write("| image | file | Pillow decode: peak MB / ms | cropq: peak MB / ms | peak ratio |\n")
    out.write("|---|---|---|---|---|\n")
    for name, size, floor, ours in rows:
        ratio = ours["peak_mb"] / max(floor["peak_mb"], 1.0)
        out.write(
            f"| {name} | {size / 1024:.0f} kB | {floor['peak_mb']:.0f} / {floor['ms']:.0f} "
            f"| {ours['peak_mb']:.0f} / {ours['ms']:.0f} | {ratio:.2f} |\n"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())

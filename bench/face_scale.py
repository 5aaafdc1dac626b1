"""How small a face the face detector finds: recall by face height in pixels at the detector.

    python bench/face_scale.py --eval-dir PATH/TO/eval        # or CROPQ_EVAL_DIR=PATH

Runs the engine's face detector (with the engine's threshold) on the faces dev set at its native size
and at half size, and prints, per band of face height in pixels, the share of annotated faces it found
(IoU >= 0.3). Divide a height by the detection copy's short side to read it as a share of the photo:
with ``CROPQ_FACE_DETECT_LONG_SIDE=320`` a 4:3 photo's short side there is 240 px.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections import Counter
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from worker.engine.config import EngineConfig
from worker.engine.detectors import Box, get_detector, iou

BANDS = (0, 8, 12, 16, 20, 24, 32, 48)


def _band(px: float) -> int:
    return max(b for b in BANDS if px >= b)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--eval-dir", default=os.environ.get("CROPQ_EVAL_DIR"))
    a = ap.parse_args(argv)
    if not a.eval_dir:
        ap.error("give --eval-dir or set CROPQ_EVAL_DIR")
    folder = Path(a.eval_dir) / "data" / "faces"
    rows = [json.loads(line) for line in (folder / "manifest.jsonl").read_text().splitlines() if line]
    detector = get_detector("face")
    threshold = EngineConfig().face_threshold
    found: Counter[int] = Counter()
    total: Counter[int] = Counter()
    for row in rows:
        full = np.asarray(Image.open(folder / row["image"]).convert("RGB"))
        height, width = full.shape[:2]
        for scale in (1.0, 0.5):
            img = full
            if scale != 1.0:
                size = (round(width * scale), round(height * scale))
                img = np.asarray(cv2.resize(full, size, interpolation=cv2.INTER_AREA))
            faces = [f for f in detector.detect(img) if f.score >= threshold]
            for left, top, w, h, *_ in row["boxes"]:
                truth = Box(left / width, top / height, (left + w) / width, (top + h) / height, 1.0, "")
                band = _band(h * scale)
                total[band] += 1
                found[band] += any(iou(truth, f) >= 0.3 for f in faces)
    out = sys.stdout
    out.write(f"{len(rows)} photos at native and half size, threshold {threshold}\n\n")
    out.write("| face height at the detector | faces | found |\n|---|---|---|\n")
    for lo, hi in zip(BANDS, [*BANDS[1:], None], strict=True):
        if total[lo]:
            label = f"{lo}-{hi - 1} px" if hi else f"{lo} px and more"
            out.write(f"| {label} | {total[lo]} | {found[lo] / total[lo]:.2f} |\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

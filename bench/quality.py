"""Crop quality on the human-annotated dev sets, with the eval harness (not part of the project).

    python bench/quality.py --eval-dir PATH/TO/eval        # or CROPQ_EVAL_DIR=PATH python bench/quality.py

Imports ``cropeval`` from the given folder, runs our engine (as a Python callable) and centre crop over
the scene, coco and faces dev sets with all 9 ratios, and prints the table of targets.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import math
import os
import sys
import time
from pathlib import Path
from typing import Any

# Run from a checkout without installing: make `worker` importable.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from worker.engine.pipeline import detect_crops

SETS = ("scene", "coco", "faces")


def engine_cropper(image_path: str, ratios: list[str]) -> dict[str, tuple[int, int, int, int, float]]:
    """cropeval's callable interface: (path, ratios) -> {ratio: (left, top, width, height, confidence)}."""
    res = detect_crops(Path(image_path).read_bytes(), ratios)
    return {
        r: (c.rect.left, c.rect.top, c.rect.width, c.rect.height, c.confidence)
        for r, c in zip(ratios, res.croppings, strict=True)
    }


def _cell(summary: dict[str, Any], key: str, field: str = "mean") -> float:
    v = summary.get(key)
    return float(v[field]) if isinstance(v, dict) else math.nan


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument(
        "--eval-dir",
        default=os.environ.get("CROPQ_EVAL_DIR"),
        help="folder holding cropeval.py and data/ (default: $CROPQ_EVAL_DIR)",
    )
    ap.add_argument("--sets", default=",".join(SETS))
    ap.add_argument("--limit", type=int, default=0, help="only the first N images of each set")
    ap.add_argument("--no-centre", action="store_true", help="skip the centre-crop baseline")
    a = ap.parse_args(argv)
    if not a.eval_dir:
        ap.error("give --eval-dir or set CROPQ_EVAL_DIR")
    eval_dir = Path(a.eval_dir).resolve()
    sys.path.insert(0, str(eval_dir))
    import cropeval  # type: ignore[import-not-found]
    import croppers  # type: ignore[import-not-found]

    ratios = list(cropeval.DEFAULT_RATIOS)
    runs: list[tuple[str, Any]] = [("cropq", engine_cropper)]
    if not a.no_centre:
        runs.append(("centre", croppers.center))
    results: dict[tuple[str, str], dict[str, Any]] = {}
    for name in a.sets.split(","):
        _, items = cropeval.load_dataset(str(eval_dir / "data" / name))
        if a.limit:
            items = items[: a.limit]
        for label, fn in runs:
            t0 = time.perf_counter()
            with contextlib.redirect_stdout(io.StringIO()):
                rows, times = cropeval.evaluate("", items, fn, ratios)
            s = cropeval.summarise(rows, times, ratios)
            s["wall_s"] = time.perf_counter() - t0
            results[(label, name)] = s

    out = sys.stdout
    out.write(
        "| cropper | valid | scene fix mean (>=0.955) | scene fix p10 (>=0.86) | conf rho (>=0.5) "
        "| coco persons (>=0.80) | coco largest (>=0.70) | faces (>=0.92) | largest face (>=0.85) "
        "| ms/img median |\n"
    )
    out.write("|---" * 10 + "|\n")
    for label, _ in runs:
        sc = results.get((label, "scene"), {})
        co = results.get((label, "coco"), {})
        fa = results.get((label, "faces"), {})
        valid = min((s.get("valid_rate", math.nan) for s in (sc, co, fa) if s), default=math.nan)
        rho = sc.get("confidence_spearman_vs_fix_ratio", math.nan)
        ms = [s["median_ms_per_image"] for s in (sc, co, fa) if s]
        out.write(
            f"| {label} | {valid:.3f} | {_cell(sc, 'fix_ratio_max'):.4f} "
            f"| {_cell(sc, 'fix_ratio_max', 'p10'):.3f} "
            f"| {rho:.2f} | {_cell(co, 'box_person_ratio'):.3f} | {_cell(co, 'box_largest_kept'):.3f} "
            f"| {_cell(fa, 'box_person_ratio'):.3f} | {_cell(fa, 'box_largest_kept'):.3f} "
            f"| {' / '.join(f'{m:.1f}' for m in ms)} |\n"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())

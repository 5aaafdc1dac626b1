"""Crop quality on the human-annotated dev sets, with the eval harness (not part of the project).

    python bench/quality.py --eval-dir PATH/TO/eval        # or CROPQ_EVAL_DIR=PATH python bench/quality.py
    python bench/quality.py --eval-dir PATH --set detect_long_side_small=480 --crops-out crops.json

Imports ``cropeval`` from the given folder, runs our engine (as a Python callable) and centre crop over
the scene, coco and faces dev sets with all 9 ratios, and prints the table of targets for the whole sets
and for each half (even and odd images: a change should hold on both). ``--set`` overrides an
``EngineConfig`` field; ``--crops-out`` writes every crop, to compare two runs crop by crop.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import io
import json
import math
import os
import sys
import time
from pathlib import Path
from typing import Any

# Run from a checkout without installing: make `worker` importable.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from worker.engine.config import EngineConfig
from worker.engine.pipeline import detect_crops

SETS = ("scene", "coco", "faces")
HALVES = ("even", "odd")

Crops = dict[str, tuple[int, int, int, int, float]]


def engine_cropper(image_path: str, ratios: list[str], config: EngineConfig | None = None) -> Crops:
    """cropeval's callable interface: (path, ratios) -> {ratio: (left, top, width, height, confidence)}."""
    res = detect_crops(Path(image_path).read_bytes(), ratios, config=config)
    return {
        r: (c.rect.left, c.rect.top, c.rect.width, c.rect.height, c.confidence)
        for r, c in zip(ratios, res.croppings, strict=True)
    }


def config_with(overrides: list[str]) -> EngineConfig:
    """EngineConfig with ``field=value`` overrides (the value parsed as the field's default's type)."""
    defaults = EngineConfig()
    changes: dict[str, Any] = {}
    for item in overrides:
        name, _, text = item.partition("=")
        if name not in {f.name for f in dataclasses.fields(EngineConfig)}:
            raise SystemExit(f"--set {item}: EngineConfig has no field {name!r}")
        kind = type(getattr(defaults, name))
        changes[name] = text.lower() in ("1", "true", "yes") if kind is bool else kind(text)
    return dataclasses.replace(defaults, **changes)


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
    ap.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE", help="EngineConfig override")
    ap.add_argument("--crops-out", type=Path, help="write every crop of our engine to this JSON file")
    a = ap.parse_args(argv)
    if not a.eval_dir:
        ap.error("give --eval-dir or set CROPQ_EVAL_DIR")
    eval_dir = Path(a.eval_dir).resolve()
    sys.path.insert(0, str(eval_dir))
    import cropeval  # type: ignore[import-not-found]
    import croppers  # type: ignore[import-not-found]

    ratios = list(cropeval.DEFAULT_RATIOS)
    config = config_with(a.set)
    crops: dict[str, Crops] = {}

    def ours(image_path: str, chunk: list[str]) -> Crops:
        found = engine_cropper(image_path, chunk, config)
        crops.setdefault(image_path, {}).update(found)
        return found

    runs: list[tuple[str, Any]] = [("cropq", ours)]
    if not a.no_centre:
        runs.append(("centre", croppers.center))
    results: dict[tuple[str, str], dict[str, Any]] = {}
    for name in a.sets.split(","):
        _, items = cropeval.load_dataset(str(eval_dir / "data" / name))
        if a.limit:
            items = items[: a.limit]
        for label, fn in runs:
            t0 = time.perf_counter()
            by_half: dict[str, tuple[list[Any], list[float]]] = {}
            for parity, half in enumerate(HALVES):
                with contextlib.redirect_stdout(io.StringIO()):
                    by_half[half] = cropeval.evaluate("", items[parity::2], fn, ratios)
            rows = [r for half in HALVES for r in by_half[half][0]]
            times = [t for half in HALVES for t in by_half[half][1]]
            s = cropeval.summarise(rows, times, ratios)
            s["wall_s"] = time.perf_counter() - t0
            results[(label, name)] = s
            if label == "cropq":
                for half in HALVES:
                    results[(f"cropq {half} half", name)] = cropeval.summarise(*by_half[half], ratios)
    if a.crops_out:
        a.crops_out.write_text(
            json.dumps({os.path.relpath(k, eval_dir / "data"): v for k, v in sorted(crops.items())}, indent=0)
        )

    out = sys.stdout
    if a.set:
        out.write(f"EngineConfig overrides: {', '.join(a.set)}\n\n")
    out.write(
        "| cropper | valid | scene fix mean (>=0.955) | scene fix p10 (>=0.86) | conf rho (>=0.5) "
        "| coco persons (>=0.80) | coco largest (>=0.70) | faces (>=0.92) | largest face (>=0.85) "
        "| ms/img median |\n"
    )
    out.write("|---" * 10 + "|\n")
    labels = [label for label, _ in runs]
    labels[1:1] = [f"cropq {half} half" for half in HALVES]
    for label in labels:
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

"""``cropq crop``: the crop engine on local files, one JSON line per image (the API's Croppings shape).

Wired into the typer app in ``api/cli.py``; this module only needs the engine and the wire contracts.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any, TextIO

from pydantic import ValidationError

from worker.contracts import Cropping
from worker.engine.errors import CropError, InvalidAspectRatio
from worker.engine.ratios import parse_ratios
from worker.settings import engine_config, get_settings

EXIT_OK = 0
EXIT_SOME_FAILED = 1
EXIT_USAGE = 2


def _split_ratios(ratios: str) -> list[str]:
    return [r.strip() for r in ratios.split(",") if r.strip()]


class _Progress:
    """A one-line progress bar on stderr, only when stderr is a terminal (never pollutes pipes)."""

    def __init__(self, total: int, stream: TextIO) -> None:
        self.total = total
        self.stream = stream
        self.enabled = total > 0 and stream.isatty()

    def update(self, done: int) -> None:
        if not self.enabled:
            return
        width = 30
        filled = width * done // self.total
        self.stream.write(f"\r[{'#' * filled}{'.' * (width - filled)}] {done}/{self.total}")
        if done == self.total:
            self.stream.write("\n")
        self.stream.flush()


def run_crop_cli(images: list[str], ratios: str, hint: str | None, preview: Path | None) -> int:
    """Crop every image; print one JSON object per line in order. Returns the process exit code:
    0 all good, 1 when some image could not be read, 2 for invalid arguments."""
    entries = _split_ratios(ratios)
    try:
        parse_ratios(entries)
    except InvalidAspectRatio as exc:
        sys.stderr.write(f"cropq crop: invalid --ratios {ratios!r}: {exc}\n")
        return EXIT_USAGE
    hints = [hint.strip()] if hint and hint.strip() else []

    # Imported here so that `cropq --help` and argument errors stay fast (OpenCV, onnxruntime).
    from worker.engine.pipeline import detect_crops
    from worker.engine.preview import write_preview

    # The same engine settings as the workers (CROPQ_OBJECT_DETECTION, CROPQ_FACE_DETECT_LONG_SIDE,
    # CROPQ_MAX_IMAGE_PIXELS), so a local run crops as the service would.
    try:
        config = engine_config(get_settings())
    except ValidationError as exc:
        sys.stderr.write(f"cropq crop: invalid CROPQ_ settings: {exc}\n")
        return EXIT_USAGE

    if preview is not None:
        preview.mkdir(parents=True, exist_ok=True)
    progress = _Progress(len(images), sys.stderr)
    status = EXIT_OK
    for n, image in enumerate(images, start=1):
        line: dict[str, Any]
        try:
            data = Path(image).read_bytes()
            result = detect_crops(data, entries, hints, config)
            line = {
                "Image": image,
                "Width": result.width,
                "Height": result.height,
                "Croppings": [Cropping.from_suggestion(c).model_dump() for c in result.croppings],
                "MatchedInclusionHints": result.matched_hints,
            }
            if preview is not None:
                write_preview(data, result, preview / (Path(image).stem + ".preview.png"))
        except CropError as exc:
            line = {"Image": image, "Code": exc.code, "Message": str(exc)}
            status = EXIT_SOME_FAILED
        except OSError as exc:
            line = {"Image": image, "Code": "InvalidArgument.File", "Message": f"Cannot read the file: {exc}"}
            status = EXIT_SOME_FAILED
        sys.stdout.write(json.dumps(line, ensure_ascii=False) + "\n")
        sys.stdout.flush()
        progress.update(n)
    return status

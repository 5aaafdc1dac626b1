"""``cropq crop``: the crop engine on local files, one JSON line per image (the API's Croppings shape).

With a render folder each crop is also rendered (resized, encoded: ``worker.engine.render``, as a job's
``Render`` does) to ``<stem>_<W>x<H>.<ext>`` there, and each Cropping of the line gains its ``Output``.
Wired into the typer app in ``api/cli.py``; this module only needs the engine and the wire contracts.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO, cast

from pydantic import ValidationError

from worker.contracts import Cropping, RenderedOutput
from worker.engine.config import EngineConfig
from worker.engine.errors import CropError, InvalidAspectRatio
from worker.engine.ratios import parse_ratios
from worker.engine.render_formats import EXTENSIONS, supported_formats
from worker.engine.types import CropResult
from worker.settings import engine_config, get_settings

if TYPE_CHECKING:  # the engine imports OpenCV: `cropq --help` must stay fast
    from worker.engine.render import RenderOptions

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


def _render_usage_error(render_format: str, render_quality: int, render_max_side: int | None) -> str | None:
    if render_format not in supported_formats():
        can = ", ".join(sorted(supported_formats()))
        return f"render format {render_format!r}: this installation writes {can}"
    if not 1 <= render_quality <= 100:
        return f"render quality {render_quality}: it is 1-100"
    if render_max_side is not None and render_max_side < 1:
        return f"render max side {render_max_side}: it is at least 1 pixel"
    return None


def _render(
    data: bytes,
    image: str,
    result: CropResult,
    croppings: list[dict[str, Any]],
    folder: Path,
    options: RenderOptions,
    config: EngineConfig,
) -> None:
    """Render every crop of ``result`` into ``folder`` and add each one's ``Output`` to ``croppings``."""
    from worker.engine.render import render_crops

    rendered = render_crops(data, [c.rect for c in result.croppings], options, config)
    stem = Path(image).stem
    for cropping, suggestion, out in zip(croppings, result.croppings, rendered, strict=True):
        ratio = suggestion.aspect_ratio.replace(":", "x")
        path = folder / f"{stem}_{ratio}.{EXTENSIONS[out.format]}"
        path.write_bytes(out.data)
        cropping["Output"] = RenderedOutput(
            URI=str(path),
            Width=out.width,
            Height=out.height,
            Format=out.format,
            Bytes=len(out.data),
            ETag=hashlib.md5(out.data, usedforsecurity=False).hexdigest(),  # as S3 tags a single PUT
        ).model_dump()


def run_crop_cli(
    images: list[str],
    ratios: str,
    hint: str | None,
    preview: Path | None,
    render_dir: Path | None = None,
    render_format: str = "jpeg",
    render_quality: int = 82,
    render_max_side: int | None = None,
) -> int:
    """Crop every image; print one JSON object per line in order. Returns the process exit code:
    0 all good, 1 when some image could not be read (or rendered), 2 for invalid arguments.

    With ``render_dir`` each crop is rendered there as ``<stem>_<W>x<H>.<ext>`` in ``render_format``
    (jpeg, webp, png, or avif where supported) at ``render_quality``, its long side at most
    ``render_max_side`` (and ``CROPQ_RENDER_MAX_SIDE``), never upscaled."""
    entries = _split_ratios(ratios)
    try:
        parse_ratios(entries)
    except InvalidAspectRatio as exc:
        sys.stderr.write(f"cropq crop: invalid --ratios {ratios!r}: {exc}\n")
        return EXIT_USAGE
    if render_dir is not None:
        problem = _render_usage_error(render_format, render_quality, render_max_side)
        if problem:
            sys.stderr.write(f"cropq crop: invalid {problem}\n")
            return EXIT_USAGE
    hints = [hint.strip()] if hint and hint.strip() else []

    # Imported here so that `cropq --help` and argument errors stay fast (OpenCV, onnxruntime).
    from worker.engine.pipeline import detect_crops
    from worker.engine.preview import write_preview
    from worker.engine.render import RenderFormat, RenderOptions

    # The same engine settings as the workers (CROPQ_OBJECT_DETECTION, CROPQ_FACE_DETECT_LONG_SIDE,
    # CROPQ_MAX_IMAGE_PIXELS), so a local run crops as the service would.
    try:
        settings = get_settings()
        config = engine_config(settings)
    except ValidationError as exc:
        sys.stderr.write(f"cropq crop: invalid CROPQ_ settings: {exc}\n")
        return EXIT_USAGE
    config = dataclasses.replace(config, render_max_side=settings.render_max_side)  # CROPQ_RENDER_MAX_SIDE
    options = RenderOptions(
        format=cast(RenderFormat, render_format),
        quality=render_quality,
        max_width=render_max_side,
        max_height=render_max_side,
    )

    if preview is not None:
        preview.mkdir(parents=True, exist_ok=True)
    if render_dir is not None:
        render_dir.mkdir(parents=True, exist_ok=True)
    progress = _Progress(len(images), sys.stderr)
    status = EXIT_OK
    for n, image in enumerate(images, start=1):
        line: dict[str, Any]
        try:
            data = Path(image).read_bytes()
            result = detect_crops(data, entries, hints, config)
            croppings = [Cropping.from_suggestion(c).model_dump() for c in result.croppings]
            if render_dir is not None:
                _render(data, image, result, croppings, render_dir, options, config)
            line = {
                "Image": image,
                "Width": result.width,
                "Height": result.height,
                "Croppings": croppings,
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

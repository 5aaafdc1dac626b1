"""A PNG showing each suggested crop drawn and labelled on the image, for a person to check at a glance."""

from __future__ import annotations

import io
from pathlib import Path

from PIL import Image, ImageDraw, ImageOps

from worker.engine.types import CropResult

PREVIEW_LONG_SIDE = 1024
_COLOURS = ((255, 64, 64), (64, 200, 255), (255, 210, 0), (80, 230, 120), (230, 90, 255))


def render_preview(data: bytes, result: CropResult) -> Image.Image:
    """The image (EXIF-oriented, at most 1024 px) with every crop outlined and labelled."""
    with Image.open(io.BytesIO(data)) as src:
        src.draft("RGB", (PREVIEW_LONG_SIDE, PREVIEW_LONG_SIDE))
        im = ImageOps.exif_transpose(src.convert("RGB"))
    im.thumbnail((PREVIEW_LONG_SIDE, PREVIEW_LONG_SIDE))
    sx, sy = im.width / result.width, im.height / result.height
    draw = ImageDraw.Draw(im)
    for i, c in enumerate(result.croppings):
        colour = _COLOURS[i % len(_COLOURS)]
        r = c.rect
        box = (
            r.left * sx,
            r.top * sy,
            max(r.left * sx, r.right * sx - 1),
            max(r.top * sy, r.bottom * sy - 1),
        )
        draw.rectangle(box, outline=colour, width=3)
        label = f"{c.aspect_ratio} {c.confidence:.2f}"
        tx, ty = box[0] + 4, box[1] + 4 + 14 * i
        tw = draw.textlength(label)
        draw.rectangle((tx - 2, ty - 1, tx + tw + 2, ty + 12), fill=(0, 0, 0))
        draw.text((tx, ty), label, fill=colour)
    return im


def write_preview(data: bytes, result: CropResult, path: Path) -> Path:
    render_preview(data, result).save(path, format="PNG")
    return path

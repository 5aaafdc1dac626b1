"""A PNG showing each suggested crop drawn and labelled on the image, for a person to check at a glance."""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont, ImageOps

from worker.engine.types import CropResult

PREVIEW_LONG_SIDE = 1024
_COLOURS = ((255, 64, 64), (64, 200, 255), (255, 210, 0), (80, 230, 120), (230, 90, 255))

Rectangle = tuple[float, float, float, float]


def place_labels(
    anchors: Sequence[tuple[float, float]], sizes: Sequence[tuple[float, float]]
) -> list[Rectangle]:
    """One rectangle per label, at its anchor (a crop's top-left corner) or moved down just enough not to
    cover a label placed before it: crops of different ratios often share a corner."""
    placed: list[Rectangle] = []
    for (x, y), (w, h) in zip(anchors, sizes, strict=True):
        top = y
        while True:
            rect = (x, top, x + w, top + h)
            hit = [
                p for p in placed if rect[0] < p[2] and p[0] < rect[2] and rect[1] < p[3] and p[1] < rect[3]
            ]
            if not hit:
                break
            top = max(p[3] for p in hit)
        placed.append(rect)
    return placed


def render_preview(data: bytes, result: CropResult) -> Image.Image:
    """The image (EXIF-oriented, at most 1024 px) with every crop outlined and labelled."""
    with Image.open(io.BytesIO(data)) as src:
        src.draft("RGB", (PREVIEW_LONG_SIDE, PREVIEW_LONG_SIDE))
        im = ImageOps.exif_transpose(src.convert("RGB"))
    im.thumbnail((PREVIEW_LONG_SIDE, PREVIEW_LONG_SIDE))
    sx, sy = im.width / result.width, im.height / result.height
    draw = ImageDraw.Draw(im)
    font = ImageFont.load_default(size=max(12, max(im.size) // 48))
    pad = 3
    boxes: list[Rectangle] = []
    labels: list[str] = []
    sizes: list[tuple[float, float]] = []
    for c in result.croppings:
        r = c.rect
        boxes.append(
            (r.left * sx, r.top * sy, max(r.left * sx, r.right * sx - 1), max(r.top * sy, r.bottom * sy - 1))
        )
        labels.append(f"{c.aspect_ratio} {c.confidence:.2f}")
        left, _, right, bottom = draw.textbbox((0, 0), labels[-1], font=font)
        sizes.append((right - left + 2 * pad, bottom + 2 * pad))
    spots = place_labels([(b[0] + 3, b[1] + 3) for b in boxes], sizes)
    for i, (box, label, spot) in enumerate(zip(boxes, labels, spots, strict=True)):
        colour = _COLOURS[i % len(_COLOURS)]
        draw.rectangle(box, outline=colour, width=3)
        draw.rectangle(spot, fill=(0, 0, 0))
        draw.text((spot[0] + pad, spot[1] + pad), label, fill=colour, font=font)
    return im


def write_preview(data: bytes, result: CropResult, path: Path) -> Path:
    render_preview(data, result).save(path, format="PNG")
    return path

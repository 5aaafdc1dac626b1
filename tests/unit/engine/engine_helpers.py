"""Shared helpers for the engine tests (encode arrays in any format, check a result's validity)."""

from __future__ import annotations

import io
from typing import Any

from numpy.typing import NDArray
from PIL import Image

from worker.engine.types import CropResult

# The astronaut's face in skimage.data.astronaut() (512x512), as (left, top, right, bottom), brow to chin.
ASTRONAUT_FACE = (180, 64, 270, 176)


def encode(im: Image.Image | NDArray[Any], fmt: str = "PNG", **kw: Any) -> bytes:
    if not isinstance(im, Image.Image):
        im = Image.fromarray(im)
    buf = io.BytesIO()
    im.save(buf, format=fmt, **kw)
    return buf.getvalue()


def assert_valid(result: CropResult, ratios: list[str]) -> None:
    """Inside the image, integer pixels, the requested ratio within one pixel, confidence in [0, 1]."""
    assert len(result.croppings) == len(ratios)
    for req, c in zip(ratios, result.croppings, strict=True):
        r = c.rect
        assert all(isinstance(v, int) for v in (r.left, r.top, r.width, r.height))
        assert r.width >= 1 and r.height >= 1
        assert r.left >= 0 and r.top >= 0
        assert r.right <= result.width and r.bottom <= result.height
        assert 0.0 <= c.confidence <= 1.0
        if req == "auto":
            w, h = map(int, c.aspect_ratio.split(":"))
        else:
            assert c.aspect_ratio == req
            w, h = map(int, req.split(":"))
        ratio = w / h
        assert min(abs(r.width - ratio * r.height), abs(r.height - r.width / ratio)) <= 1.0

"""Checks made on the header before any pixel is decoded: the format allow-list, the JPEG scan count and
an estimate of the bytes the decode will hold.

A decoder's cost is set by what the header announces, not by the file's size: a 34-byte lossless WebP
can declare 100 MP, and a 1 MB progressive JPEG of thousands of empty scans keeps libjpeg busy for
minutes. Everything here is cheap (no pixel is touched) so that such files are refused up front with a
clear code; what the estimate cannot foresee is bounded by the sandbox (``sandbox.py``).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Any

import numpy as np

from worker.engine.errors import ImageTooComplex, ImageTooLarge, UnsupportedImage

ALLOWED_FORMATS: tuple[str, ...] = ("JPEG", "MPO", "PNG", "WEBP", "GIF", "BMP", "TIFF", "HEIF", "AVIF")
"""Pillow format names of what the README lists; Pillow never even tries its other decoders (EPS, PSD,
ICO, TGA, ...)."""

JPEG_FORMATS = frozenset({"JPEG", "MPO"})
"""An MPO (multi-picture JPEG, what many cameras write) is a JPEG followed by more JPEGs; Pillow decodes
its first picture with the JPEG decoder, so it is checked and DCT-scaled as a JPEG."""

# Peak bytes per pixel of a full-size decode through ``decode.py``, by Pillow mode: Pillow's own image
# (RGB is stored as 4 bytes a pixel) plus the copies decode.py makes (palette expansion to RGB/RGBA,
# 16-bit kept as an array, alpha flattening), measured as the peak RSS growth of decode() on 25 MP
# images of each mode and rounded up by about 10 %.
_BYTES_PER_PIXEL: dict[str, float] = {
    "1": 2.2,
    "L": 1.3,
    "P": 5.4,
    "LA": 8.5,
    "La": 8.5,
    "PA": 9.6,
    "RGB": 4.5,
    "RGBX": 4.5,
    "CMYK": 4.5,
    "YCbCr": 4.5,
    "RGBA": 8.5,
    "RGBa": 8.5,
    "F": 4.7,
    "I": 8.8,
    "I;16": 6.5,
    "I;16B": 6.5,
    "I;16L": 6.5,
    "I;16N": 6.5,
}
_UNKNOWN_MODE_BYTES = 9.6
_PALETTE_ALPHA_BYTES = 9.6  # a P image with transparency becomes RGBA before it is reduced
# libwebp decodes into its own RGBA canvas, which Pillow then copies: about 15.4 bytes a pixel measured.
_WEBP_BYTES = 17.0
# libavif/libheif hold the decoded planes and an RGB copy: about 9 bytes a pixel measured.
_HEIF_BYTES = 10.0

_SOF = frozenset({0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF})
_PROGRESSIVE_SOF = frozenset({0xC2, 0xC6, 0xCA, 0xCE})
_SOS, _EOI = 0xDA, 0xD9


@dataclass(frozen=True, slots=True)
class JpegLayout:
    progressive: bool
    sampling: tuple[tuple[int, int], ...]
    """(horizontal, vertical) sampling factor of each component, from the frame header."""
    scans: int
    """SOS markers of the first picture (thumbnails in APP segments and later MPO pictures excluded)."""


def _marker_positions(data: bytes) -> np.ndarray[Any, np.dtype[np.intp]]:
    """Offsets of every 0xFF followed by a marker code, as libjpeg reads entropy-coded data: ``FF 00`` is
    a stuffed byte, ``FF D0..D7`` a restart marker, ``FF FF`` fill. One vectorised pass (about 0.6 ms
    for a 3 MB JPEG) instead of a Python loop over every 0xFF byte."""
    arr = np.frombuffer(data, dtype=np.uint8)
    ff = np.flatnonzero(arr[:-1] == 0xFF)
    nxt = arr[ff + 1]
    keep = (nxt != 0x00) & (nxt != 0xFF) & ((nxt < 0xD0) | (nxt > 0xD7))
    positions: np.ndarray[Any, np.dtype[np.intp]] = ff[keep]
    return positions


def jpeg_layout(data: bytes, max_scans: int) -> JpegLayout:
    """Walk the marker structure of the first picture the way libjpeg does: segments are skipped by their
    length (an EXIF thumbnail inside APP1 has its own SOS, which must not count), entropy-coded data up
    to the next real marker, and garbage between segments up to the next marker. Stops at the first EOI
    (an MPO's later pictures are never decoded). Raises :class:`ImageTooComplex` beyond ``max_scans``."""
    n = len(data)
    markers: np.ndarray[Any, np.dtype[np.intp]] | None = None

    def next_marker(start: int) -> int:
        nonlocal markers
        if markers is None:
            markers = _marker_positions(data)
        i = int(np.searchsorted(markers, start))
        return int(markers[i]) if i < len(markers) else n

    progressive = False
    sampling: tuple[tuple[int, int], ...] = ()
    scans = 0
    pos = 2  # after SOI
    while pos + 1 < n:
        if data[pos] != 0xFF:
            pos = next_marker(pos)  # libjpeg skips extraneous bytes (with a warning)
            continue
        code = data[pos + 1]
        if code == 0xFF:  # fill byte before a marker
            pos += 1
            continue
        if code == _EOI:
            break
        if code == 0x01 or 0xD0 <= code <= 0xD8:  # standalone markers: no length
            pos += 2
            continue
        if pos + 4 > n:
            break
        (length,) = struct.unpack_from(">H", data, pos + 2)
        end = pos + 2 + length
        if code in _SOF and pos + 10 <= n:
            progressive = code in _PROGRESSIVE_SOF
            count = data[pos + 9]
            comps = data[pos + 10 : pos + 10 + 3 * count]
            sampling = tuple((b >> 4, b & 0x0F) for b in comps[1::3])
        if code == _SOS:
            scans += 1
            if scans > max_scans:
                raise ImageTooComplex(
                    f"The JPEG has more than {max_scans} scans; real encoders write a few dozen at most "
                    "(a scan bomb keeps a decoder busy for minutes)"
                )
            pos = next_marker(end)  # entropy-coded data runs to the next real marker
            continue
        pos = end
    return JpegLayout(progressive=progressive, sampling=sampling, scans=scans)


def jpeg_scale(source_long: int, long_side: int) -> int:
    """The DCT scaling divisor (8, 4, 2 or 1) decode.py uses: the largest that keeps ``long_side``."""
    for factor in (8, 4, 2):
        if source_long // factor >= long_side:
            return factor
    return 1


def _coefficient_bytes(width: int, height: int, sampling: tuple[tuple[int, int], ...]) -> int:
    """A progressive (or any multi-scan) JPEG is decoded through a whole-image buffer of DCT coefficients,
    at full size whatever the output scale: 64 coefficients of 2 bytes per 8x8 block of each component."""
    if not sampling:
        sampling = ((1, 1),)
    hmax = max(h for h, _ in sampling) or 1
    vmax = max(v for _, v in sampling) or 1
    total = 0
    for h, v in sampling:
        cw = -(-width * max(h, 1) // hmax)
        ch = -(-height * max(v, 1) // vmax)
        total += -(-cw // 8) * -(-ch // 8) * 128
    return total


def estimate_decode_bytes(
    fmt: str,
    mode: str,
    width: int,
    height: int,
    long_side: int,
    *,
    transparency: bool = False,
    jpeg: JpegLayout | None = None,
) -> int:
    """Peak bytes decode.py holds for this image, from its header alone."""
    pixels = width * height
    if fmt in JPEG_FORMATS:
        f = jpeg_scale(max(width, height), long_side)
        # The scaled output as decoded, converted to RGB and shrunk: three 4-byte-a-pixel copies at most.
        out = -(-width // f) * -(-height // f) * 12
        multi_scan = jpeg is not None and (jpeg.progressive or jpeg.scans > 1)
        return out + (_coefficient_bytes(width, height, jpeg.sampling) if multi_scan and jpeg else 0)
    if fmt == "WEBP":
        return int(pixels * _WEBP_BYTES)
    if fmt in ("HEIF", "AVIF"):
        return int(pixels * _HEIF_BYTES)
    if mode == "P" and transparency:
        return int(pixels * _PALETTE_ALPHA_BYTES)
    return int(pixels * _BYTES_PER_PIXEL.get(mode, _UNKNOWN_MODE_BYTES))


def check_budget(estimate: int, budget: int, width: int, height: int, fmt: str) -> None:
    if estimate > budget:
        raise ImageTooLarge(
            f"Decoding this {width}x{height} {fmt} would need about {estimate >> 20} MB; "
            f"the decode memory budget is {budget >> 20} MB"
        )


def refuse_format(fmt: str | None) -> None:
    if fmt not in ALLOWED_FORMATS:
        raise UnsupportedImage(
            f"Images in {fmt or 'this'} format are not accepted; the formats are JPEG, PNG, WebP, GIF, BMP, "
            "TIFF and HEIC/AVIF"
        )

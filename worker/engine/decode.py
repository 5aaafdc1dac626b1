"""Bytes -> a small RGB array for analysis, plus the displayed (EXIF-oriented) size of the full image.

The header is checked before any pixel is decoded (``preflight.py``: format allow-list, pixel cap, JPEG
scan limit, decode memory budget). JPEGs (and MPOs) are decoded with DCT scaling, so a 12 MP photo costs
about a 1/8-scale decode. Every mode Pillow opens (16-bit, grayscale, CMYK, palette, alpha) ends as 8-bit
RGB; alpha is kept as a mask so that transparent pixels attract nothing. Every failure is an
:class:`UnsupportedImage`, :class:`ImageTooLarge` or :class:`ImageTooComplex`.
"""

from __future__ import annotations

import io
import logging
import struct
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np
from numpy.typing import NDArray
from PIL import Image, UnidentifiedImageError

from worker.engine import preflight
from worker.engine.config import EngineConfig
from worker.engine.errors import CropError, ImageTooLarge, UnsupportedImage
from worker.engine.preflight import ALLOWED_FORMATS

log = logging.getLogger(__name__)

_EXIF_ORIENTATION = 0x0112
# EXIF orientation -> the Pillow transposition that displays the image upright.
_TRANSPOSE: dict[int, Image.Transpose] = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}
_ALPHA_MODES = frozenset({"RGBA", "LA", "PA", "RGBa", "La"})


def _register_optional_openers() -> None:
    """HEIC/AVIF through pillow-heif when it is installed (Pillow may read AVIF natively as well)."""
    try:
        import pillow_heif
    except ImportError:
        return
    pillow_heif.register_heif_opener()


_register_optional_openers()


@dataclass(frozen=True, slots=True)
class Decoded:
    rgb: NDArray[np.uint8]
    """Analysis copy, H x W x 3, EXIF-oriented, long side at most ``size`` requested."""
    alpha: NDArray[np.float32] | None
    """Opacity in [0, 1] at the analysis size, or ``None`` for opaque images."""
    width: int
    """Displayed width of the full image (after EXIF orientation)."""
    height: int


def _orientation(im: Image.Image) -> int:
    try:
        value = im.getexif().get(_EXIF_ORIENTATION, 1)
    except Exception:  # a broken EXIF block must not make a readable image unreadable
        return 1
    return value if isinstance(value, int) and 1 <= value <= 8 else 1


_PIL_REDUCIBLE = frozenset({"L", "I", "F", "RGB", "CMYK", "YCbCr"})


def _depalette(im: Image.Image) -> Image.Image:
    """Palette images as colours (palette indices cannot be averaged); transparency, in the info block
    of a ``P`` image or the alpha band of a ``PA`` one, becomes an alpha channel."""
    return im.convert("RGBA" if im.mode == "PA" or "transparency" in im.info else "RGB")


def _reduce_early(im: Image.Image, long_side: int) -> Image.Image:
    """Shrink a decoded image inside Pillow, before any full-size array copy is made.

    A 100 MP PNG is a few hundred kB of deflate; converted to float arrays at full size it needs
    gigabytes. ``Image.reduce`` box-averages by an integer factor in C and allocates only its output,
    which stays at least twice the working size (INTER_AREA finishes the job); it weights colours by
    alpha, so hidden colours of transparent pixels do not bleed in. 16-bit modes are shrunk as arrays
    in :func:`_to_rgb_array` instead (Pillow cannot reduce them).
    """
    factor = max(im.size) // (2 * long_side)
    if factor < 2:
        return im
    mode = im.mode
    if mode in ("P", "PA"):
        im = _depalette(im)
    elif mode == "1":
        im = im.convert("L")
    elif mode not in _PIL_REDUCIBLE and mode not in _ALPHA_MODES:
        return im
    return im.reduce(factor)


def _to_rgb_array(
    im: Image.Image, long_side: int | None = None
) -> tuple[NDArray[np.uint8], NDArray[np.float32] | None]:
    """Any Pillow mode -> (8-bit RGB, alpha or None); 16-bit and float images are first shrunk to
    ``long_side`` (when given) so that no full-size float copy is made."""
    mode = im.mode
    if mode in ("P", "PA"):
        im = _depalette(im)
        mode = im.mode
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        raw = np.asarray(im)
        if long_side is not None:
            # Shrink before widening to float; OpenCV resizes 16-bit and float32, not 32-bit integers.
            raw = area_shrink(raw if raw.dtype == np.uint16 else raw.astype(np.float32), long_side)
        arr = raw.astype(np.float32)
        lo, hi = (0.0, 65535.0) if mode.startswith("I;16") else (float(arr.min()), float(arr.max()))
        if mode == "I" and lo >= 0 and hi <= 65535:
            lo, hi = 0.0, 65535.0 if hi > 255 else 255.0
        span = hi - lo if hi > lo else 1.0
        gray = np.clip((arr - lo) * (255.0 / span), 0, 255).astype(np.uint8)
        return np.ascontiguousarray(np.repeat(gray[:, :, None], 3, axis=2)), None
    if mode in _ALPHA_MODES:
        rgba = np.asarray(im.convert("RGBA"))
        alpha = rgba[:, :, 3].astype(np.float32) / 255.0
        rgb = rgba[:, :, :3].astype(np.float32)
        # Flatten onto mid-grey: transparent pixels become flat and featureless.
        flat = rgb * alpha[:, :, None] + 128.0 * (1.0 - alpha[:, :, None])
        return flat.astype(np.uint8), alpha
    if mode != "RGB":
        im = im.convert("RGB")
    return np.asarray(im), None


def area_shrink(arr: NDArray[Any], long_side: int) -> NDArray[Any]:
    """``arr`` with INTER_AREA to a long side of at most ``long_side`` (as it is when already smaller)."""
    h, w = arr.shape[:2]
    scale = long_side / max(h, w)
    if scale >= 1.0:
        return arr
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    return np.asarray(cv2.resize(arr, size, interpolation=cv2.INTER_AREA))


def shrink(arr: NDArray[np.uint8], long_side: int) -> NDArray[np.uint8]:
    return np.ascontiguousarray(area_shrink(arr, long_side), dtype=np.uint8)


def working_long_side(pixels: int, config: EngineConfig) -> int:
    """Long side of the copy the engine works on: what the face detector needs for this source size."""
    if pixels <= config.small_image_pixels:
        return max(config.detect_long_side_small, config.analysis_long_side)
    return max(config.detect_long_side, config.analysis_long_side)


_REDUCED = ((8, cv2.IMREAD_REDUCED_COLOR_8), (4, cv2.IMREAD_REDUCED_COLOR_4), (2, cv2.IMREAD_REDUCED_COLOR_2))


def _decode_jpeg_reduced(data: bytes, source_long: int, long_side: int) -> NDArray[np.uint8] | None:
    """A JPEG decoded by OpenCV's libjpeg-turbo at 1/2, 1/4 or 1/8 scale (DCT scaling, EXIF orientation
    applied), about 7% faster than Pillow's draft mode; ``None`` when no reduction applies or it fails
    (the caller then decodes with Pillow)."""
    for factor, flag in _REDUCED:
        if source_long // factor >= long_side:
            bgr = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), flag)
            if bgr is None or bgr.ndim != 3:
                return None
            return np.asarray(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), dtype=np.uint8)
    return None


def _open_formats() -> list[str]:
    """The allowed formats Pillow has openers for (HEIF only with pillow-heif; MPO comes from JPEG's)."""
    Image.init()
    return [f for f in ALLOWED_FORMATS if f in Image.OPEN]


@contextmanager
def _decode_errors() -> Iterator[None]:
    """Every failure of Pillow or a C decoder as one of the engine's errors."""
    try:
        with warnings.catch_warnings():
            # Pillow's own bomb warning is superseded by our explicit caps.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            yield
    except CropError:
        raise
    except Image.DecompressionBombError as exc:
        raise ImageTooLarge(f"The image is too large to decode safely: {exc}") from None
    except UnidentifiedImageError:
        raise UnsupportedImage(
            "The bytes are not an image in a supported format (JPEG, PNG, WebP, GIF, BMP, TIFF, HEIC/AVIF)"
        ) from None
    except MemoryError:
        raise ImageTooLarge("The image needs more memory to decode than its budget allows") from None
    except (OSError, ValueError, SyntaxError, EOFError, TypeError, IndexError, struct.error) as exc:
        raise UnsupportedImage(f"The image cannot be decoded (corrupt or truncated): {exc}") from None


def open_header(data: bytes, config: EngineConfig) -> Image.Image:
    """Open the header and refuse what the format allow-list or the pixel cap forbid (no pixel decoded)."""
    if not data:
        raise UnsupportedImage("The image is empty (0 bytes)")
    im = Image.open(io.BytesIO(data), formats=_open_formats())
    preflight.refuse_format(im.format)
    width, height = im.size
    if width <= 0 or height <= 0:
        raise UnsupportedImage("The image header announces an empty image")
    if width * height > config.max_pixels:
        raise ImageTooLarge(
            f"The image has {width}x{height} = {width * height} pixels; the limit is {config.max_pixels}"
        )
    return im


def _open_checked(data: bytes, config: EngineConfig, long_side: int | None) -> tuple[Image.Image, int]:
    """Open the header and refuse, before any pixel is decoded, what the format allow-list, the pixel cap,
    the JPEG scan limit or the decode memory budget forbid. Returns the image and the working long side."""
    im = open_header(data, config)
    width, height = im.size
    if long_side is None:
        long_side = working_long_side(width * height, config)
    fmt = im.format or ""
    layout = preflight.jpeg_layout(data, config.max_jpeg_scans) if fmt in preflight.JPEG_FORMATS else None
    estimate = preflight.estimate_decode_bytes(
        fmt, im.mode, width, height, long_side, transparency="transparency" in im.info, jpeg=layout
    )
    preflight.check_budget(estimate, config.decode_memory_bytes, width, height, fmt)
    return im, long_side


def inspect(data: bytes, config: EngineConfig, long_side: int | None = None) -> None:
    """The header checks of :func:`decode` alone (cheap: no pixel is decoded)."""
    with _decode_errors():
        _open_checked(data, config, long_side)


def decode(data: bytes, config: EngineConfig, long_side: int | None = None) -> Decoded:
    """Decode ``data`` to an RGB copy whose long side is at most ``long_side`` (never upscaled; by
    default :func:`working_long_side`). With ``config.decode_isolated`` the header is checked here and the
    pixels are decoded in the sandbox's decode process (``sandbox.py``)."""
    if config.decode_isolated:
        inspect(data, config, long_side)  # refusals need no child
        from worker.engine.sandbox import run_isolated

        return run_isolated(decode_in_process, data, config, long_side)
    return decode_in_process(data, config, long_side)


def decode_in_process(data: bytes, config: EngineConfig, long_side: int | None = None) -> Decoded:
    """:func:`decode` in this process, whatever ``config.decode_isolated`` says."""
    with _decode_errors():
        im, long_side = _open_checked(data, config, long_side)
        width, height = im.size
        orientation = _orientation(im)
        is_jpeg = im.format in preflight.JPEG_FORMATS
        if is_jpeg and im.mode in ("RGB", "L"):
            fast = _decode_jpeg_reduced(data, max(width, height), long_side)
            if fast is not None:
                if orientation >= 5:
                    width, height = height, width
                return Decoded(rgb=shrink(fast, long_side), alpha=None, width=width, height=height)
        if is_jpeg:
            # DCT scaling: libjpeg decodes at 1/2, 1/4 or 1/8 while staying >= the requested size.
            scale = long_side / max(width, height)
            im.draft("RGB", (max(1, int(width * scale)), max(1, int(height * scale))))
        im.seek(0)  # GIF/APNG/TIFF/MPO: the first frame
        im.load()
        rgb, alpha = _to_rgb_array(_reduce_early(im, long_side), long_side)

    transpose = _TRANSPOSE.get(orientation)
    if transpose is not None:
        rgb = np.asarray(Image.fromarray(rgb).transpose(transpose))
        if alpha is not None:
            alpha = np.asarray(Image.fromarray(alpha, mode="F").transpose(transpose), dtype=np.float32)
        if orientation >= 5:
            width, height = height, width
    rgb = shrink(rgb, long_side)
    if alpha is not None:
        alpha = np.asarray(
            cv2.resize(alpha, (rgb.shape[1], rgb.shape[0]), interpolation=cv2.INTER_AREA), dtype=np.float32
        )
        if float(alpha.min()) >= 0.999:
            alpha = None  # fully opaque: no mask needed
    return Decoded(rgb=rgb, alpha=alpha, width=width, height=height)


def from_array(rgb: NDArray[np.uint8], config: EngineConfig) -> Decoded:
    """The same analysis copy from an RGB (or RGBA / grayscale) array already in memory."""
    arr = np.asarray(rgb)
    if arr.ndim == 2:
        arr = np.repeat(arr[:, :, None], 3, axis=2)
    if arr.ndim != 3 or arr.shape[2] not in (3, 4) or arr.shape[0] < 1 or arr.shape[1] < 1:
        raise UnsupportedImage(f"Expected an H x W x 3 RGB array, got shape {arr.shape}")
    if arr.dtype == np.uint16:
        arr = (arr >> 8).astype(np.uint8)
    elif arr.dtype != np.uint8:
        arr = np.clip(arr, 0, 255).astype(np.uint8)
    alpha: NDArray[np.float32] | None = None
    if arr.shape[2] == 4:
        a = arr[:, :, 3].astype(np.float32) / 255.0
        flat = arr[:, :, :3].astype(np.float32) * a[:, :, None] + 128.0 * (1.0 - a[:, :, None])
        arr = flat.astype(np.uint8)
        alpha = a
    height, width = arr.shape[:2]
    small = shrink(np.ascontiguousarray(arr), working_long_side(width * height, config))
    if alpha is not None:
        alpha = np.asarray(
            cv2.resize(alpha, (small.shape[1], small.shape[0]), interpolation=cv2.INTER_AREA),
            dtype=np.float32,
        )
    return Decoded(rgb=small, alpha=alpha, width=width, height=height)

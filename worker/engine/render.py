"""Rendered crops: the source image cut to each crop rectangle, downscaled and encoded (``Render``).

One call decodes the image once and renders every rectangle of it (up to :data:`MAX_RENDERS`):

- **Size.** Only ever downscaled: each output fits ``max_width`` x ``max_height`` and
  ``config.render_max_side`` keeping the crop's aspect ratio (within 1 px), and is never larger than
  the crop (:func:`output_size`). So a 100 MP source with no size asked for makes at most a 4096-px
  output, never a 100 MP PNG.
- **Reduction first.** A JPEG much larger than its outputs is decoded at 1/2, 1/4 or 1/8 scale by
  libjpeg's DCT scaling (Pillow's ``draft``), and any image is then box-averaged by an integer factor,
  both only as far as leaves each crop at least :data:`PREREDUCE_MARGIN` times its output (as libvips'
  thumbnail does): the Lanczos step after them decides the result. Measured on a detailed 4800x3200
  JPEG, a 2x margin puts the output within a mean 0.3-0.5 levels (PSNR 51-53 dB) of a full-size
  decode; a 1.5x margin 0.5-0.7 (45-51 dB, single pixels off by 29 levels), no margin up to 1.2 (41
  dB, pixels off by 61). The box average is taken in linear light on the float strips below (OpenCV's
  area resize, an exact block mean), not with ``Image.reduce`` on 8-bit values: a gamma-space average
  turns 1-px black and white stripes into grey 128 instead of the 188 that half the light is, and the
  strips already keep the float copies small.
- **Resampling.** Lanczos-3 (Pillow's, on float32 planes) in linear light: 8-bit sRGB goes through a
  table to linear float32, colours premultiplied by alpha, and back through a 16-bit table. Gamma-space
  resizing darkens fine bright detail and weighs dark detail on light too little; linear light keeps
  the average brightness. The float copies are made one strip of rows at a time (at most
  :data:`STRIP_PIXELS` source pixels) with the filter's support around it, so no full-size float copy
  of a large image exists, and the strips join seamlessly (each output row sees exactly the source
  rows it would in one pass). An output the same size as its crop is the crop's pixels, untouched.
- **Orientation.** Rectangles are in the displayed (EXIF-oriented) image, as :func:`detect_crops`
  returns them (the same orientation reading as the analysis decode); they are mapped into the stored
  image, rendered there, and each output is turned upright at the end (a transpose of the output,
  never of the source).
- **Colour.** An embedded ICC profile other than sRGB is *converted* to sRGB (LittleCMS, perceptual
  intent) and the output is untagged sRGB (imgproxy's default: browsers show untagged images as sRGB,
  and a tag costs bytes in every thumbnail). RGB and grey profiles are applied to the output, after the
  resize, as libvips' thumbnail does: for a 1200-px output of a 12 MP source that is a tenth of the cost
  (about 25 ms instead of 300), and the result is within a mean 0.2-1.4 levels of converting first
  (Adobe RGB source, 2x to 16x reductions; colours outside sRGB are clipped after averaging rather than
  before). CMYK is converted strip by strip before the resize, since ink values are not light.
- **Metadata.** Stripped by default: EXIF (GPS included), XMP, comments and the source's profile never
  reach an output, so location data cannot leak into thumbnails. ``keep_metadata`` copies the EXIF
  (orientation set to 1, the pixels being upright; no EXIF thumbnail of the uncropped image) and embeds
  an sRGB profile.
- **Formats.** JPEG progressive with optimised Huffman tables (alpha composited over white), WebP,
  PNG (zlib level 6, alpha kept) and AVIF where :func:`supported_formats` says so.
- **Limits.** The header checks of the analysis decode (format allow-list, pixel cap, JPEG scan limit)
  and its memory budget, here for the decode at its reduced scale plus the render's own working set
  (:func:`estimate_render_bytes`); the encoded outputs together are capped at
  ``config.render_max_output_bytes``. With ``config.decode_isolated`` the whole render (decode, resize,
  encode) runs in the decode server (``sandbox.py``) under its address-space limit and one time budget
  (``config.render_time_limit``), and the outputs come back as checked bytes, never a pickle.
"""

from __future__ import annotations

import io
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal, cast

import cv2
import numpy as np
from numpy.typing import NDArray
from PIL import Image, ImageCms

from worker.engine import preflight
from worker.engine.config import EngineConfig

# decode.py's own helpers, so that a render opens, orients and refuses images exactly as the analysis
# decode does (the rectangles it renders are in that decode's coordinates).
from worker.engine.decode import _TRANSPOSE, _decode_errors, _depalette, _orientation, open_header
from worker.engine.errors import ImageTooLarge, UnsupportedImage, UnsupportedRenderFormat
from worker.engine.render_formats import MEDIA_TYPES, pillow_heif_avif, supported_formats
from worker.engine.types import Rect

RenderFormat = Literal["jpeg", "webp", "png", "avif"]

MAX_RENDERS = 5
"""Rectangles one call renders (the API takes at most five ratios a job)."""
PREREDUCE_MARGIN = 2.0
"""DCT scaling and box reduction stop while the crop is still this many times its output (see the
module docstring for the measurement)."""
STRIP_PIXELS = 1 << 21
"""Source pixels converted to float at a time (about 40 MB of working copies for RGBA)."""
LANCZOS_SUPPORT = 3.0
PNG_COMPRESS_LEVEL = 6
"""zlib's default (and Pillow's, libvips' and sharp's). On 1200-px photos level 9 saved 2-9 % at 4-9x
the time; level 3 was 2-3x faster for 8-20 % more bytes."""
AVIF_SPEED = 6
"""libavif's default speed (avifenc): 8 was 2-4x faster on 1200-px photos for 10-75 % more bytes."""

_EXIF_ORIENTATION = 0x0112
_ALPHA_EPSILON = 0.5 / 255.0


@dataclass(frozen=True, slots=True)
class RenderOptions:
    format: RenderFormat = "jpeg"
    quality: int = 82
    """Encoder quality, 1-100 (jpeg, webp, avif; png is lossless)."""
    max_width: int | None = None
    max_height: int | None = None
    keep_metadata: bool = False
    """Copy the source's EXIF (orientation reset to 1) and tag the output sRGB."""


@dataclass(frozen=True, slots=True)
class RenderedImage:
    data: bytes
    width: int
    height: int
    format: str
    media_type: str


# --- sizes and scales ----------------------------------------------------------------------------------


def output_size(width: int, height: int, options: RenderOptions, max_side: int) -> tuple[int, int]:
    """The output size of a ``width`` x ``height`` crop: scaled to fit ``max_width`` x ``max_height``
    and ``max_side`` x ``max_side``, keeping the aspect ratio (within 1 px), never upscaled."""
    if width < 1 or height < 1:
        raise ValueError(f"A crop must be at least 1x1 pixels, not {width}x{height}")
    bound_w = min(width, max_side, options.max_width or width)
    bound_h = min(height, max_side, options.max_height or height)
    scale = min(bound_w / width, bound_h / height)
    if scale >= 1.0:
        return width, height
    return min(bound_w, max(1, round(width * scale))), min(bound_h, max(1, round(height * scale)))


def reduction_factor(
    crop: tuple[float, float], out: tuple[int, int], margin: float = PREREDUCE_MARGIN
) -> int:
    """The largest integer shrink of a ``crop``-sized region that leaves it at least ``margin`` times
    ``out`` on both axes (1: no reduction)."""
    return max(1, int(min(crop[0] / (margin * out[0]), crop[1] / (margin * out[1]))))


def jpeg_draft_divisor(factor: int) -> int:
    """The DCT scaling divisor (8, 4, 2 or 1) libjpeg decodes at for an allowed shrink of ``factor``."""
    return next(d for d in (8, 4, 2, 1) if d <= max(1, factor))


# --- the plan: everything the header tells, checked before any pixel is decoded -------------------------


@dataclass(frozen=True, slots=True)
class _Header:
    format: str
    mode: str
    stored: tuple[int, int]
    transparency: bool


@dataclass(frozen=True, slots=True)
class _Plan:
    """What the header and the request decide, before any pixel is decoded. Sizes are those of the
    displayed image: the budget and the reductions do not depend on the orientation (a transposed crop
    and its transposed output shrink by the same factors)."""

    header: _Header
    outputs: tuple[tuple[int, int], ...]
    """Each output's size, upright."""
    divisor: int
    """JPEG DCT scaling divisor (1 for other formats)."""


def _check_request(rects: Sequence[Rect], options: RenderOptions) -> None:
    """The caller's own mistakes (not the image's): ``ValueError``; a format this build cannot write:
    :class:`UnsupportedRenderFormat`."""
    if not 1 <= len(rects) <= MAX_RENDERS:
        raise ValueError(f"Render 1 to {MAX_RENDERS} rectangles at a time, not {len(rects)}")
    if options.format not in MEDIA_TYPES:
        raise ValueError(f"Unknown output format {options.format!r}")
    if options.format not in supported_formats():
        can = ", ".join(sorted(supported_formats()))
        raise UnsupportedRenderFormat(f"This installation cannot write {options.format}; it writes {can}")
    if not 1 <= options.quality <= 100:
        raise ValueError(f"Quality is 1-100, not {options.quality}")
    for side in (options.max_width, options.max_height):
        if side is not None and side < 1:
            raise ValueError(f"MaxWidth and MaxHeight are at least 1, not {side}")
    for r in rects:
        if not (r.width >= 1 and r.height >= 1 and r.left >= 0 and r.top >= 0):
            raise ValueError(f"{r} is not a rectangle of at least 1x1 pixels")


def _open(data: bytes, config: EngineConfig) -> tuple[Image.Image, _Header]:
    """Open the header and refuse what the format allow-list or the pixel cap forbid (no pixel decoded)."""
    im = open_header(data, config)
    return im, _Header(im.format or "", im.mode, im.size, "transparency" in im.info)


def _header_orientation(im: Image.Image) -> int | None:
    """The EXIF orientation where the header holds it; ``None`` for a PNG whose eXIf chunk, if any,
    comes after the pixels (Pillow would decode the whole image to look for it)."""
    if im.format == "PNG" and "exif" not in im.info:
        return None
    return _orientation(im)


def _displayed(stored: tuple[int, int], orientation: int) -> tuple[int, int]:
    w, h = stored
    return (h, w) if orientation >= 5 else (w, h)


def _check_rects(rects: Sequence[Rect], displayed: tuple[int, int]) -> None:
    width, height = displayed
    for r in rects:
        if r.right > width or r.bottom > height:
            raise ValueError(f"{r} reaches outside the {width}x{height} image")


def _stored_box(rect: Rect, stored: tuple[int, int], orientation: int) -> tuple[int, int, int, int]:
    """A rectangle of the displayed image as (left, top, right, bottom) in the stored image."""
    sw, sh = stored
    x0, y0, x1, y1 = rect.left, rect.top, rect.right, rect.bottom
    # Each case inverts the transposition in decode._TRANSPOSE that shows the image upright.
    match orientation:
        case 2:
            return sw - x1, y0, sw - x0, y1
        case 3:
            return sw - x1, sh - y1, sw - x0, sh - y0
        case 4:
            return x0, sh - y1, x1, sh - y0
        case 5:
            return y0, x0, y1, x1
        case 6:
            return y0, sh - x1, y1, sh - x0
        case 7:
            return sw - y1, sh - x1, sw - y0, sh - x0
        case 8:
            return sw - y1, x0, sw - y0, x1
    return x0, y0, x1, y1


def _plan(header: _Header, rects: Sequence[Rect], options: RenderOptions, config: EngineConfig) -> _Plan:
    outputs = tuple(output_size(r.width, r.height, options, config.render_max_side) for r in rects)
    divisor = 1
    if header.format in preflight.JPEG_FORMATS:
        factor = min(reduction_factor((r.width, r.height), o) for r, o in zip(rects, outputs, strict=True))
        divisor = jpeg_draft_divisor(factor)
    return _Plan(header, outputs, divisor)


# Working bytes a render holds beyond the decoded image, from the decode server's peak RSS on 12 and 24 MP
# JPEG, PNG and RGBA PNG sources rendered at full size (up to 4096 px) and at 1200 px, rounded up.
_STRIP_BYTES_PER_PIXEL = 24
"""A strip: its 8-bit crop and split planes, one float32 plane, the alpha plane and Pillow's copies
(measured 15-40 MB for a strip of STRIP_PIXELS)."""
_REDUCED_BYTES_PER_PIXEL = 32
"""A band's box-reduced planes: four float32 planes, and their copy when joined from several pieces."""
_OUTPUT_BYTES_PER_PIXEL: dict[str, int] = {"jpeg": 8, "png": 8, "webp": 20, "avif": 24}
"""An output: its 8-bit image (4 bytes a pixel in Pillow) and the encoder's own buffers (libjpeg's
progressive coefficients about 3, libwebp about 10 more for RGBA, libavif/aom about 19)."""


def estimate_render_bytes(
    crops: Sequence[tuple[int, int]],
    outputs: Sequence[tuple[int, int]],
    divisor: int,
    output_format: str,
    max_output_bytes: int,
) -> int:
    """Peak bytes a render holds on top of its decode: the largest rectangle's working set (a strip of
    source pixels as floats, the box-reduced float planes of a band, the output and its encoder) plus
    every encoded output kept (a PNG up to its raw size, a lossy one up to a byte a pixel, and all of them
    at most ``max_output_bytes``)."""
    work = kept = 0
    for (cw, ch), (ow, oh) in zip(crops, outputs, strict=True):
        region = (cw / divisor, ch / divisor)
        k = reduction_factor(region, (ow, oh))
        strip = min(region[0] * region[1], STRIP_PIXELS) * _STRIP_BYTES_PER_PIXEL
        reduced = (
            min(region[0] * region[1] / (k * k), STRIP_PIXELS) * _REDUCED_BYTES_PER_PIXEL if k > 1 else 0
        )
        work = max(work, int(strip + reduced + ow * oh * _OUTPUT_BYTES_PER_PIXEL.get(output_format, 64)))
        kept += ow * oh * (4 if output_format == "png" else 1)  # lossless: up to the raw pixels
    return work + min(kept, max_output_bytes)


def _check_budget(
    data: bytes, rects: Sequence[Rect], plan: _Plan, options: RenderOptions, config: EngineConfig
) -> None:
    """The analysis decode's JPEG scan limit and memory budget, for the decode at its reduced scale plus
    the render's own working set."""
    header = plan.header
    fmt, (width, height) = header.format, header.stored
    layout = preflight.jpeg_layout(data, config.max_jpeg_scans) if fmt in preflight.JPEG_FORMATS else None
    decode_bytes = preflight.estimate_decode_bytes(
        fmt,
        header.mode,
        width,
        height,
        max(1, max(width, height) // plan.divisor),
        transparency=header.transparency,
        jpeg=layout,
    )
    crops = [(r.width, r.height) for r in rects]
    render_bytes = estimate_render_bytes(
        crops, plan.outputs, plan.divisor, options.format, config.render_max_output_bytes
    )
    preflight.check_budget(decode_bytes + render_bytes, config.decode_memory_bytes, width, height, fmt)


def _checked_plan(
    data: bytes, rects: Sequence[Rect], options: RenderOptions, config: EngineConfig
) -> tuple[Image.Image, _Plan]:
    """Request, header and budget checks, in this order, before any pixel is decoded."""
    _check_request(rects, options)
    with _decode_errors():
        im, header = _open(data, config)
    plan = _plan(header, rects, options, config)
    with _decode_errors():
        _check_budget(data, rects, plan, options, config)
    return im, plan


def inspect_render(
    data: bytes, rects: Sequence[Rect], options: RenderOptions, config: EngineConfig
) -> list[tuple[int, int]]:
    """The checks of :func:`render_crops` that need no pixel (request, header, budget, and the rectangles
    where the header tells the orientation); the output sizes it will produce, upright. Cheap: the
    sandboxed path runs it before the decode server does anything."""
    im, plan = _checked_plan(data, rects, options, config)
    with _decode_errors():
        orientation = _header_orientation(im)
    stored = plan.header.stored
    if orientation is not None:
        _check_rects(rects, _displayed(stored, orientation))
    else:  # known after the decode only: the rectangles must fit one way round (the server checks)
        _check_rects(rects, (max(stored), max(stored)))
    return list(plan.outputs)


# --- colour ----------------------------------------------------------------------------------------------


def _srgb_to_linear_table() -> NDArray[np.float32]:
    v = np.arange(256, dtype=np.float64) / 255.0
    return np.where(v <= 0.04045, v / 12.92, ((v + 0.055) / 1.055) ** 2.4).astype(np.float32)


def _linear_to_srgb_table() -> NDArray[np.uint8]:
    x = np.arange(65536, dtype=np.float64) / 65535.0
    s = np.where(x <= 0.0031308, 12.92 * x, 1.055 * np.power(x, 1 / 2.4) - 0.055)
    return np.clip(np.rint(s * 255.0), 0, 255).astype(np.uint8)


_TO_LINEAR = _srgb_to_linear_table()
_TO_SRGB = _linear_to_srgb_table()
"""Linear light quantised to 16 bits -> 8-bit sRGB: every 8-bit value survives the round trip (the
darkest step, 1/255 in sRGB, is 20 steps of 1/65535 in linear light)."""

_SRGB = ImageCms.createProfile("sRGB")
SRGB_ICC: bytes = ImageCms.ImageCmsProfile(_SRGB).tobytes()
"""LittleCMS's sRGB profile (588 bytes), embedded with ``keep_metadata``."""


def _linear(plane: NDArray[np.uint8]) -> NDArray[np.float32]:
    return np.asarray(cv2.LUT(plane, _TO_LINEAR), dtype=np.float32)


def _srgb8(plane: NDArray[np.float32]) -> NDArray[np.uint8]:
    np.clip(plane, 0.0, 1.0, out=plane)
    plane *= 65535.0
    plane += 0.5
    return _TO_SRGB[plane.astype(np.uint16)]


class _Colour:
    """Conversion of an embedded ICC profile to sRGB (none for untagged, sRGB-tagged or broken ones)."""

    def __init__(self, icc: object) -> None:
        self.profile: ImageCms.ImageCmsProfile | None = None
        self._transforms: dict[tuple[str, str], ImageCms.ImageCmsTransform | None] = {}
        if not isinstance(icc, bytes) or not icc:
            return
        try:
            profile = ImageCms.ImageCmsProfile(io.BytesIO(icc))
            description = ImageCms.getProfileDescription(profile)
        except (ImageCms.PyCMSError, OSError, ValueError, TypeError):
            return  # an unreadable profile: the pixels are shown as sRGB, as a browser would
        if "sRGB" not in description:
            self.profile = profile

    def _transform(self, in_mode: str, out_mode: str) -> ImageCms.ImageCmsTransform | None:
        if self.profile is None:
            return None
        key = (in_mode, out_mode)
        if key not in self._transforms:
            try:
                self._transforms[key] = ImageCms.buildTransform(
                    self.profile, _SRGB, in_mode, out_mode, ImageCms.Intent.PERCEPTUAL
                )
            except (ImageCms.PyCMSError, OSError, ValueError, TypeError):
                self._transforms[key] = None  # a profile for another colour space than the pixels'
        return self._transforms[key]

    def cmyk_to_rgb(self, strip: Image.Image) -> Image.Image:
        """CMYK (inks, not light) becomes RGB before any resampling; through the profile when there is one."""
        transform = self._transform("CMYK", "RGB")
        if transform is None:
            return strip.convert("RGB")
        return ImageCms.applyTransform(strip, transform) or strip

    def to_srgb(self, img: Image.Image) -> Image.Image:
        """An RGB(A) or grey output of an image with an RGB or grey profile, converted to sRGB."""
        out_mode = {"L": "RGB", "RGB": "RGB", "RGBA": "RGBA"}.get(img.mode)
        transform = self._transform(img.mode, out_mode) if out_mode else None
        if transform is None:
            return img
        return ImageCms.applyTransform(img, transform) or img


# --- pixels ----------------------------------------------------------------------------------------------


def _load(im: Image.Image, divisor: int) -> Image.Image:
    """Decode (JPEG at 1/``divisor`` scale), first frame; as L, LA, RGB, RGBA or CMYK."""
    if divisor > 1:
        im.draft(im.mode, (im.width // divisor, im.height // divisor))
    im.seek(0)  # GIF/APNG/TIFF/MPO: the first frame, as the analysis decode
    im.load()
    mode = im.mode
    if mode in ("L", "LA", "RGB", "RGBA", "CMYK"):
        return im
    if mode in ("P", "PA"):
        return _depalette(im)
    if mode == "1":
        return im.convert("L")
    if mode.startswith("I") or mode == "F":
        return _grey8(im)
    return im.convert("RGBA" if mode.endswith(("A", "a")) else "RGB")


def _grey8(im: Image.Image) -> Image.Image:
    """16-bit, 32-bit and float grey as 8-bit, scaled as the analysis decode scales it; a strip of rows
    at a time, so no full-size wide copy is made."""
    lo, hi = (float(v) for v in cast("tuple[float, float]", im.getextrema()))
    if im.mode.startswith("I;16"):
        lo, hi = 0.0, 65535.0
    elif im.mode == "I" and lo >= 0 and hi <= 65535:
        lo, hi = 0.0, 65535.0 if hi > 255 else 255.0
    gain = 255.0 / (hi - lo if hi > lo else 1.0)
    width, height = im.size
    out = np.empty((height, width), dtype=np.uint8)
    rows = max(1, STRIP_PIXELS // width)
    for y in range(0, height, rows):
        chunk = np.asarray(im.crop((0, y, width, min(height, y + rows)))).astype(np.float32)
        chunk -= lo
        chunk *= gain
        out[y : y + rows] = np.clip(np.rint(chunk), 0, 255)
    return Image.fromarray(out)


def _decoded_scale(size: tuple[int, int], stored: tuple[int, int], divisor: int) -> tuple[float, float]:
    """Decoded pixels per stored pixel on each axis (libjpeg's scaled sizes are rounded up)."""
    if size == stored:
        return 1.0, 1.0
    if size == (-(-stored[0] // divisor), -(-stored[1] // divisor)):
        return 1.0 / divisor, 1.0 / divisor
    return size[0] / stored[0], size[1] / stored[1]


def _box(plane: NDArray[np.float32], k: int) -> NDArray[np.float32]:
    """``plane`` averaged over k x k blocks (a partial block at the right or bottom edge repeats its edge
    pixels): OpenCV's area resize, which is an exact block mean at an integer factor."""
    if k == 1:
        return plane
    h, w = plane.shape
    pad_h, pad_w = -h % k, -w % k
    if pad_h or pad_w:
        plane = np.asarray(cv2.copyMakeBorder(plane, 0, pad_h, 0, pad_w, cv2.BORDER_REPLICATE), np.float32)
    size = ((w + pad_w) // k, (h + pad_h) // k)
    return np.asarray(cv2.resize(plane, size, interpolation=cv2.INTER_AREA), dtype=np.float32)


def _linear_planes(
    src: Image.Image, box: tuple[int, int, int, int], k: int, colour: _Colour
) -> tuple[list[NDArray[np.float32]], NDArray[np.float32] | None]:
    """The source pixels in ``box`` as linear-light float32 planes, colours premultiplied by alpha, box-
    reduced by ``k``; and the alpha plane (``None`` when opaque). Made from pieces of at most
    :data:`STRIP_PIXELS` source pixels (whole blocks of ``k`` rows), so a large ``k`` never needs a large
    float copy."""
    x0, y0, x1, y1 = box
    # A quarter more than a band's strip: the filter's margins never spill into a sliver of a second piece.
    step = max(k, (STRIP_PIXELS + STRIP_PIXELS // 4) // max(1, x1 - x0) // k * k)
    pieces: list[list[NDArray[np.float32]]] = []
    has_alpha = False
    for top in range(y0, y1, step):
        piece = _channels(src.crop((x0, top, x1, min(y1, top + step))), colour)
        bands = list(piece.split())
        alpha: NDArray[np.float32] | None = None
        if piece.mode in ("LA", "RGBA"):
            alpha = np.asarray(bands.pop()).astype(np.float32)
            alpha *= 1.0 / 255.0
        planes = []
        for band in bands:
            lin = _linear(np.asarray(band))
            if alpha is not None:
                lin *= alpha
            planes.append(_box(lin, k))
            del lin
        if alpha is not None:
            planes.append(_box(alpha, k))
            has_alpha = True
        pieces.append(planes)
    joined = [p[0] if len(p) == 1 else np.concatenate(p) for p in zip(*pieces, strict=True)]
    return (joined[:-1], joined[-1]) if has_alpha else (joined, None)


def _lanczos(
    plane: NDArray[np.float32], box: tuple[float, float, float, float], size: tuple[int, int]
) -> NDArray[np.float32]:
    resized = Image.fromarray(plane).resize(size, Image.Resampling.LANCZOS, box=box)
    return np.array(resized, dtype=np.float32)


def _resample(
    planes: list[NDArray[np.float32]],
    alpha: NDArray[np.float32] | None,
    box: tuple[float, float, float, float],
    size: tuple[int, int],
) -> NDArray[np.uint8]:
    """Linear, premultiplied planes Lanczos-resampled to ``size`` and back to 8-bit sRGB, alpha last:
    (h, w, channels)."""
    if alpha is None:
        return np.dstack([_srgb8(_lanczos(p, box, size)) for p in planes])
    coverage = np.clip(_lanczos(alpha, box, size), 0.0, 1.0)
    seen = coverage > _ALPHA_EPSILON
    divisor = np.where(seen, coverage, 1.0)
    out = [_srgb8(np.where(seen, _lanczos(p, box, size) / divisor, 0.0).astype(np.float32)) for p in planes]
    return np.dstack([*out, np.rint(coverage * 255.0).astype(np.uint8)])


def _channels(strip: Image.Image, colour: _Colour) -> Image.Image:
    return colour.cmyk_to_rgb(strip) if strip.mode == "CMYK" else strip


def _region(
    src: Image.Image, box: tuple[float, float, float, float], out: tuple[int, int], colour: _Colour
) -> Image.Image:
    """The ``box`` of the decoded image (decoded pixels, fractional) at ``out`` size, as L, LA, RGB or
    RGBA, filled band by band (no full-size copy of the region or of the output is made as floats)."""
    x0, y0, x1, y1 = box
    out_w, out_h = out
    if (x0, y0, x1 - x0, y1 - y0) == (int(x0), int(y0), out_w, out_h):
        return _channels(src.crop((int(x0), int(y0), int(x1), int(y1))), colour)  # nothing to resample
    # The crop's pixels (rounded outward): the filter stops at its edges, as in a crop-then-resize.
    cx0, cx1 = math.floor(x0), min(src.width, math.ceil(x1))
    ry0, ry1 = math.floor(y0), min(src.height, math.ceil(y1))
    # An integer box average first, in linear light, while the crop stays PREREDUCE_MARGIN times the
    # output; everything below is in reduced pixels (k x k source pixels from (cx0, ry0)).
    k = reduction_factor((x1 - x0, y1 - y0), out)
    red_w, red_h = -(-(cx1 - cx0) // k), -(-(ry1 - ry0) // k)
    bx0, by0 = (x0 - cx0) / k, (y0 - ry0) / k
    bx1, by1 = min(red_w, (x1 - cx0) / k), min(red_h, (y1 - ry0) / k)
    sy = (by1 - by0) / out_h
    support = LANCZOS_SUPPORT * max(sy, 1.0)
    rows = max(int(4 * support + 2), STRIP_PIXELS // red_w)
    band = max(1, int((rows - 2 * support - 2) / sy))
    result: Image.Image | None = None
    for oy0 in range(0, out_h, band):
        oy1 = min(out_h, oy0 + band)
        top, bottom = by0 + oy0 * sy, min(by1, by0 + oy1 * sy)
        # The rows every output row of the band reaches with the filter's support, within the crop.
        r0, r1 = max(0, math.floor(top - support)), min(red_h, math.ceil(bottom + support))
        planes, alpha = _linear_planes(src, (cx0, ry0 + r0 * k, cx1, min(ry1, ry0 + r1 * k)), k, colour)
        local = (bx0, top - r0, bx1, min(bottom - r0, r1 - r0))
        rendered = _resample(planes, alpha, local, (out_w, oy1 - oy0))
        del planes, alpha
        if result is None:
            result = Image.new(_mode_of(rendered), (out_w, out_h))
        result.paste(Image.fromarray(rendered[:, :, 0] if rendered.shape[2] == 1 else rendered), (0, oy0))
    assert result is not None
    return result


def _mode_of(pixels: NDArray[np.uint8]) -> str:
    """The Pillow mode of an (h, w, channels) array of 1-4 channels."""
    return ("L", "LA", "RGB", "RGBA")[pixels.shape[2] - 1]


def _upright(img: Image.Image, orientation: int) -> Image.Image:
    if img.mode in ("LA", "RGBA") and img.getchannel("A").getextrema()[0] == 255:
        img = img.convert(img.mode[:-1])  # opaque after all: no alpha channel to store
    transpose = _TRANSPOSE.get(orientation)
    return img.transpose(transpose) if transpose is not None else img


# --- encoding --------------------------------------------------------------------------------------------

_MAX_EXIF = 60_000
"""Larger EXIF blocks are not copied (a JPEG APP1 segment holds 64 kB; real ones are a few kB)."""


def _output_exif(im: Image.Image) -> bytes | None:
    """The source's EXIF for an upright output (orientation 1); ``None`` when there is none or it is
    unreadable."""
    try:
        exif = im.getexif()
        if not len(exif):
            return None
        exif[_EXIF_ORIENTATION] = 1
        raw = exif.tobytes()
    except Exception:  # a broken EXIF block must not fail the render: it is simply not copied
        return None
    return raw if len(raw) <= _MAX_EXIF else None


def _over_white(img: Image.Image) -> Image.Image:
    """An LA or RGBA image composited over white (JPEG has no alpha), as a browser shows it on white:
    Pillow's masked paste, in C, with no float copy."""
    mode = img.mode[:-1]
    white = Image.new(mode, img.size, 255 if mode == "L" else (255, 255, 255))
    white.paste(img.convert(mode), mask=img.getchannel("A"))
    return white


def _avif_writer() -> None:
    """Pillow writes AVIF itself from 11.2; otherwise pillow-heif's encoder is registered for it."""
    Image.init()
    if "AVIF" not in Image.SAVE and pillow_heif_avif():
        import pillow_heif

        pillow_heif.register_avif_opener()


def _encode(img: Image.Image, options: RenderOptions, exif: bytes | None) -> bytes:
    # Pillow carries a source's info (EXIF, XMP, comment, ICC profile) through crop, transpose and
    # colour conversion, and its encoders write what they find there: only what is passed below may go.
    img.info = {}
    extra: dict[str, object] = {}
    if options.keep_metadata:
        extra["icc_profile"] = SRGB_ICC
        if exif:
            extra["exif"] = exif
    buf = io.BytesIO()
    fmt = options.format
    if fmt == "jpeg":
        if img.mode in ("LA", "RGBA"):
            img = _over_white(img)
        img.save(buf, "JPEG", quality=options.quality, optimize=True, progressive=True, **extra)
    elif fmt == "png":
        img.save(buf, "PNG", compress_level=PNG_COMPRESS_LEVEL, **extra)
    else:
        if img.mode in ("L", "LA"):
            img = img.convert("RGBA" if img.mode == "LA" else "RGB")
        if fmt == "webp":
            img.save(buf, "WEBP", quality=options.quality, method=4, **extra)
        else:
            _avif_writer()
            img.save(buf, "AVIF", quality=options.quality, speed=AVIF_SPEED, **extra)
    return buf.getvalue()


# --- entry points ------------------------------------------------------------------------------------------


def render_in_process(
    data: bytes, rects: Sequence[Rect], options: RenderOptions, config: EngineConfig
) -> list[RenderedImage]:
    """:func:`render_crops` in this process, whatever ``config.decode_isolated`` says."""
    im, plan = _checked_plan(data, rects, options, config)
    with _decode_errors():
        orientation = _orientation(im)  # after the budget check: for some PNGs this decodes the pixels
    stored = plan.header.stored
    _check_rects(rects, _displayed(stored, orientation))
    turned = orientation >= 5
    rendered: list[RenderedImage] = []
    with _decode_errors():
        exif = _output_exif(im) if options.keep_metadata else None
        colour = _Colour(im.info.get("icc_profile"))
        src = _load(im, plan.divisor)
        fx, fy = _decoded_scale(src.size, stored, plan.divisor)
        total = 0
        for rect, (ow, oh) in zip(rects, plan.outputs, strict=True):
            x0, y0, x1, y1 = _stored_box(rect, stored, orientation)
            box = (x0 * fx, y0 * fy, min(src.width, x1 * fx), min(src.height, y1 * fy))
            region = _region(src, box, (oh, ow) if turned else (ow, oh), colour)
            img = colour.to_srgb(_upright(region, orientation))
            encoded = _encode(img, options, exif)
            total += len(encoded)
            if total > config.render_max_output_bytes:
                raise ImageTooLarge(
                    f"The rendered outputs come to more than {config.render_max_output_bytes >> 20} MB, the "
                    "limit of one render; ask for smaller outputs (MaxWidth, MaxHeight) or a lossy format"
                )
            rendered.append(
                RenderedImage(encoded, img.width, img.height, options.format, MEDIA_TYPES[options.format])
            )
    return rendered


def render_in_server(
    data: bytes, config: EngineConfig, rects: tuple[Rect, ...], options: RenderOptions
) -> list[RenderedImage]:
    """:func:`render_in_process` with the decode server's argument order (data, config, *arguments)."""
    return render_in_process(data, rects, options, config)


def render_crops(
    data: bytes, rects: Sequence[Rect], options: RenderOptions, config: EngineConfig
) -> list[RenderedImage]:
    """Each rectangle of the image (displayed pixels, as :func:`detect_crops` returns them) downscaled
    to its output size and encoded; one decode serves them all.

    With ``config.decode_isolated`` the header is checked here and the render runs in the decode server
    (``sandbox.py``) under its memory and time limits. The image's faults raise the engine's errors
    (:class:`UnsupportedImage`, :class:`ImageTooLarge`, :class:`ImageTooComplex`); a format this build
    cannot write :class:`UnsupportedRenderFormat`; rectangles outside the image, more than
    :data:`MAX_RENDERS` of them or options out of range ``ValueError`` (the caller's mistake).
    """
    if not config.decode_isolated:
        return render_in_process(data, rects, options, config)
    expected = inspect_render(data, rects, options, config)  # refusals need no server
    from worker.engine.sandbox import run_render_isolated

    rendered = run_render_isolated(render_in_server, data, config, tuple(rects), options)
    # The server ran decoders on hostile bytes: what it says must be what was asked for.
    if [(r.width, r.height) for r in rendered] != expected or any(
        r.format != options.format for r in rendered
    ):
        raise UnsupportedImage("The renderer answered with a malformed result")
    return rendered


RenderFn = Callable[[bytes, EngineConfig, tuple[Rect, ...], RenderOptions], list[RenderedImage]]

"""Decoding: every format and mode, EXIF orientation, the pixel cap, and clear errors for bad bytes."""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
import pytest
from numpy.typing import NDArray
from PIL import Image, ImageOps

from tests.unit.engine.engine_helpers import assert_valid, encode
from worker.engine.config import EngineConfig
from worker.engine.decode import decode
from worker.engine.errors import ImageTooLarge, UnsupportedImage
from worker.engine.pipeline import detect_crops

RATIOS = ["1:1", "16:9", "9:16"]


@pytest.fixture(scope="module")
def photo(astronaut: NDArray[np.uint8]) -> NDArray[np.uint8]:
    # 3:2 landscape, so portrait/landscape swaps are visible.
    return np.ascontiguousarray(astronaut[:340, :])


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP", "GIF", "BMP", "TIFF"])
def test_formats(photo: NDArray[np.uint8], fmt: str) -> None:
    res = detect_crops(encode(photo, fmt), RATIOS)
    assert (res.width, res.height) == (512, 340)
    assert_valid(res, RATIOS)


@pytest.mark.parametrize("mode", ["L", "1", "P", "CMYK", "RGBA", "LA", "I;16", "I", "F", "YCbCr"])
def test_modes(photo: NDArray[np.uint8], mode: str) -> None:
    im = Image.fromarray(photo)
    if mode in ("I;16", "I"):
        gray = np.asarray(im.convert("L")).astype(np.uint16) * 257  # 16-bit range
        im = Image.fromarray(gray) if mode == "I;16" else Image.fromarray(gray.astype(np.int32), mode="I")
    elif mode == "F":
        im = Image.fromarray(np.asarray(im.convert("L")).astype(np.float32) / 255.0, mode="F")
    else:
        im = im.convert(mode)
    fmt = {"CMYK": "JPEG", "YCbCr": "JPEG", "F": "TIFF"}.get(mode, "PNG" if mode != "I" else "TIFF")
    res = detect_crops(encode(im, fmt), RATIOS)
    assert (res.width, res.height) == (512, 340)
    assert_valid(res, RATIOS)


def test_sixteen_bit_png_keeps_contrast(photo: NDArray[np.uint8]) -> None:
    gray = np.asarray(Image.fromarray(photo).convert("L")).astype(np.uint16) * 257
    d = decode(encode(Image.fromarray(gray)), EngineConfig())
    assert d.rgb.dtype == np.uint8
    assert int(d.rgb.max()) - int(d.rgb.min()) > 150  # not clipped to white, not crushed to black


def test_palette_with_transparency_and_gif_first_frame() -> None:
    frames = [Image.new("P", (60, 40), c) for c in (1, 2)]
    for f in frames:
        f.putpalette([0, 0, 0, 255, 0, 0, 0, 255, 0] + [0] * 759)
    buf = encode(frames[0], "GIF", save_all=True, append_images=frames[1:], transparency=0)
    res = detect_crops(buf, ["1:1"])
    assert (res.width, res.height) == (60, 40)
    assert_valid(res, ["1:1"])


def test_transparent_pixels_attract_nothing() -> None:
    # Busy texture that is fully transparent on the left; a plain opaque grey on the right.
    rng = np.random.default_rng(0)
    rgba = np.zeros((200, 400, 4), dtype=np.uint8)
    rgba[:, :200, :3] = rng.integers(0, 256, (200, 200, 3))
    rgba[:, 200:, :3] = 120
    rgba[:, 200:, 3] = 255
    rgba[80:120, 300:340, :3] = (255, 0, 0)  # an opaque salient patch
    res = detect_crops(encode(rgba), ["1:1"])
    assert res.croppings[0].rect.left >= 140  # the crop sits on the visible half


def test_exif_rotation_swaps_size(photo: NDArray[np.uint8]) -> None:
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise for display
    data = encode(photo, "JPEG", exif=exif.tobytes())
    res = detect_crops(data, ["1:1", "2:1"])
    assert (res.width, res.height) == (340, 512)
    assert_valid(res, ["1:1", "2:1"])


@pytest.mark.parametrize("shape", [(1, 1), (1, 7), (9, 1), (3, 5), (17, 900), (900, 17)])
def test_tiny_and_extreme_images(shape: tuple[int, int]) -> None:
    rng = np.random.default_rng(1)
    arr = rng.integers(0, 256, (*shape, 3), dtype=np.uint8)
    ratios = ["1:1", "2:1", "1:2", "auto"]
    res = detect_crops(encode(arr), ratios)
    assert (res.height, res.width) == shape
    assert_valid(res, ratios)


def test_pixel_cap_checked_before_decoding() -> None:
    # A PNG header announcing 100k x 100k pixels and no pixel data: refused from the header alone.
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    ihdr = struct.pack(">IIBBBBB", 100_000, 100_000, 8, 2, 0, 0, 0)
    png = (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b"")
    )
    with pytest.raises(ImageTooLarge) as exc:
        detect_crops(png, ["1:1"])
    assert exc.value.code == "InvalidArgument.ImageTooLarge"


def test_pixel_cap_from_config(photo: NDArray[np.uint8]) -> None:
    with pytest.raises(ImageTooLarge):
        detect_crops(encode(photo), ["1:1"], config=EngineConfig(max_pixels=1000))


@pytest.mark.parametrize(
    "data", [b"", b"not an image at all", b"\xff\xd8\xff\xe0garbage", bytes(range(256)) * 4]
)
def test_garbage_bytes(data: bytes) -> None:
    with pytest.raises(UnsupportedImage) as exc:
        detect_crops(data, ["1:1"])
    assert exc.value.code == "InvalidArgument.Image"


def test_truncated_jpeg(photo: NDArray[np.uint8]) -> None:
    data = encode(photo, "JPEG")
    with pytest.raises(UnsupportedImage):
        detect_crops(data[: len(data) // 2], ["1:1"])


def test_large_jpeg_is_decoded_at_reduced_scale() -> None:
    arr = np.zeros((2400, 3200, 3), dtype=np.uint8)
    arr[1000:1400, 2400:2800] = (255, 255, 0)
    d = decode(encode(arr, "JPEG"), EngineConfig())
    assert (d.width, d.height) == (3200, 2400)
    assert max(d.rgb.shape[:2]) <= 400  # DCT-scaled then shrunk to the working size


@pytest.mark.parametrize("orientation", [1, 3, 6, 8])
def test_reduced_jpeg_decode_matches_pillow_orientation(orientation: int) -> None:
    """Large JPEGs take OpenCV's 1/8-scale path; it must show the same upright picture as Pillow."""
    arr = np.zeros((1200, 1600, 3), dtype=np.uint8)
    arr[:400, :400] = (255, 0, 0)  # a red block in the stored top-left corner
    exif = Image.Exif()
    exif[0x0112] = orientation
    data = encode(arr, "JPEG", quality=95, exif=exif.tobytes())
    got = decode(data, EngineConfig())
    upright = np.asarray(ImageOps.exif_transpose(Image.open(io.BytesIO(data))).convert("RGB"))
    assert (got.width, got.height) == (upright.shape[1], upright.shape[0])
    small = np.asarray(Image.fromarray(upright).resize((got.rgb.shape[1], got.rgb.shape[0])))
    red = (got.rgb[:, :, 0] > 128) & (got.rgb[:, :, 2] < 100)
    red_ref = (small[:, :, 0] > 128) & (small[:, :, 2] < 100)
    assert (red == red_ref).mean() > 0.97


@pytest.mark.parametrize("mode", ["RGB", "RGBA", "P", "L", "1", "I;16", "CMYK"])
def test_large_non_jpeg_is_shrunk_before_it_is_widened(photo: NDArray[np.uint8], mode: str) -> None:
    # Big enough that Pillow reduces first (the fast path): the result must match a plain full decode.
    big = Image.fromarray(photo).resize((2600, 1700), Image.Resampling.BILINEAR)
    seen = big  # what the decode should look like (Pillow's own conversion clips 16-bit to 8)
    if mode == "RGBA":
        big.putalpha(255)
    elif mode == "I;16":
        seen = big.convert("L")
        big = Image.fromarray((np.asarray(seen, dtype=np.uint16) * 257).astype(np.uint16))
    elif mode != "RGB":
        big = seen = big.convert(mode)
    cfg = EngineConfig()
    got = decode(encode(big, "TIFF" if mode == "CMYK" else "PNG"), cfg)
    reference = ImageOps.contain(seen.convert("L" if mode == "1" else "RGB"), (320, 320))
    assert (got.width, got.height) == (2600, 1700)
    assert got.rgb.shape[:2] == (reference.height, reference.width)
    ref = np.asarray(reference.convert("RGB"), dtype=np.float32)
    tolerance = 40.0 if mode == "1" else 6.0  # dithered 1-bit averages differently; the rest agree
    assert float(np.abs(got.rgb.astype(np.float32) - ref).mean()) < tolerance


def test_large_transparent_png_hides_the_colour_of_transparent_pixels() -> None:
    # Transparent left half whose hidden colour is bright red; opaque grey right half.
    rgba = np.zeros((1600, 3000, 4), dtype=np.uint8)
    rgba[:, :1502] = (255, 0, 0, 0)  # a boundary inside a reduction block
    rgba[:, 1502:] = (90, 90, 90, 255)
    got = decode(encode(rgba), EngineConfig())
    assert got.alpha is not None
    w = got.rgb.shape[1]
    left, right = got.rgb[:, : w // 2 - 2], got.rgb[:, w // 2 + 2 :]
    assert float(got.alpha[:, : w // 2 - 2].max()) < 0.01 and float(got.alpha[:, w // 2 + 2 :].min()) > 0.99
    # Flattened onto mid-grey, with no red bleeding in from the hidden colour, even at the boundary.
    assert np.abs(left.astype(int) - 128).max() <= 1
    assert np.abs(right.astype(int) - 90).max() <= 1
    assert int(got.rgb[:, :, 0].max()) - int(got.rgb[:, :, 1].max()) <= 2

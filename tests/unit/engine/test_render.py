"""Rendered crops: sizes, pixels against a reference resize, orientation, colour profiles, metadata,
formats, the reductions made before the resize, output limits and hostile input (images made in code)."""

from __future__ import annotations

import dataclasses
import io
import json
import struct
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
from numpy.typing import NDArray
from PIL import ExifTags, Image, ImageCms, JpegImagePlugin, PngImagePlugin, features

from cropq_cli.crop import run_crop_cli
from tests.security.hostile_images import photo, png_declaring, scan_bomb
from worker.engine import render, render_formats, sandbox
from worker.engine.config import EngineConfig
from worker.engine.decode import Decoded, decode_in_process
from worker.engine.errors import ImageTooComplex, ImageTooLarge, UnsupportedImage, UnsupportedRenderFormat
from worker.engine.render import (
    RenderOptions,
    jpeg_draft_divisor,
    output_size,
    reduction_factor,
    render_crops,
    render_in_server,
)
from worker.engine.types import Rect

CONFIG = EngineConfig()
ISOLATED = dataclasses.replace(CONFIG, decode_isolated=True, decode_memory_bytes=640 << 20)
PNG = RenderOptions(format="png")


def _encode(im: Image.Image | NDArray[Any], fmt: str = "PNG", **kw: Any) -> bytes:
    if not isinstance(im, Image.Image):
        im = Image.fromarray(im)
    buf = io.BytesIO()
    im.save(buf, fmt, **kw)
    return buf.getvalue()


def _open(data: bytes) -> Image.Image:
    im = Image.open(io.BytesIO(data))
    im.load()
    return im


def _pixels(data: bytes) -> NDArray[np.int32]:
    return np.asarray(_open(data)).astype(np.int32)


def _mae(a: NDArray[Any], b: NDArray[Any]) -> float:
    return float(np.abs(a.astype(np.float64) - b.astype(np.float64)).mean())


def _linear_reference(rgb: NDArray[np.uint8], rect: Rect, size: tuple[int, int]) -> NDArray[np.uint8]:
    """The crop resized independently of the engine: float64 sRGB decoding, Lanczos per channel, and
    float64 sRGB encoding."""
    crop = rgb[rect.top : rect.bottom, rect.left : rect.right].astype(np.float64) / 255.0
    linear = np.where(crop <= 0.04045, crop / 12.92, ((crop + 0.055) / 1.055) ** 2.4).astype(np.float32)
    planes = [
        np.asarray(
            Image.fromarray(np.ascontiguousarray(linear[:, :, c])).resize(size, Image.Resampling.LANCZOS)
        )
        for c in range(3)
    ]
    x = np.clip(np.dstack(planes).astype(np.float64), 0.0, 1.0)
    srgb = np.where(x <= 0.0031308, 12.92 * x, 1.055 * x ** (1 / 2.4) - 0.055)
    return np.rint(srgb * 255.0).astype(np.uint8)


@pytest.fixture(scope="module")
def scene() -> NDArray[np.uint8]:
    """A 1024 x 768 photo-like picture with fine detail (scikit-image's astronaut, upscaled)."""
    from skimage import data

    photo_ = np.asarray(data.astronaut())  # type: ignore[no-untyped-call]
    big = cv2.resize(photo_, (1024, 1024), interpolation=cv2.INTER_CUBIC)
    return np.ascontiguousarray(big[128:896])


# --- sizes ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("crop", "options", "max_side", "expected"),
    [
        ((4000, 3000), RenderOptions(max_width=1200), 4096, (1200, 900)),
        ((4000, 3000), RenderOptions(max_height=300), 4096, (400, 300)),
        ((4000, 3000), RenderOptions(max_width=1200, max_height=1200), 4096, (1200, 900)),
        ((3000, 4000), RenderOptions(max_width=1200, max_height=1200), 4096, (900, 1200)),
        ((160, 90), RenderOptions(max_width=1200, max_height=1200), 4096, (160, 90)),  # never upscaled
        ((10000, 6000), RenderOptions(), 4096, (4096, 2458)),  # the output cap, with no size asked for
        ((10000, 6000), RenderOptions(max_width=8000), 4096, (4096, 2458)),
        ((1001, 333), RenderOptions(max_width=100), 4096, (100, 33)),
        ((5000, 3), RenderOptions(max_width=10), 4096, (10, 1)),
    ],
)
def test_output_size_fits_the_bounds_keeps_the_ratio_and_never_upscales(
    crop: tuple[int, int], options: RenderOptions, max_side: int, expected: tuple[int, int]
) -> None:
    w, h = output_size(*crop, options, max_side)
    assert (w, h) == expected
    assert w <= crop[0] and h <= crop[1]
    assert abs(w - h * crop[0] / crop[1]) <= 1 or abs(h - w * crop[1] / crop[0]) <= 1


def test_rendered_files_have_exactly_the_reported_size_and_ratio(scene: NDArray[np.uint8]) -> None:
    data = _encode(scene, "JPEG", quality=92)
    rects = [Rect(0, 0, 1024, 768), Rect(100, 50, 600, 600), Rect(10, 200, 960, 540), Rect(700, 100, 90, 160)]
    outputs = render_crops(data, rects, RenderOptions(format="webp", max_width=400, max_height=400), CONFIG)
    assert [(o.width, o.height) for o in outputs] == [(400, 300), (400, 400), (400, 225), (90, 160)]
    for rect, out in zip(rects, outputs, strict=True):
        im = _open(out.data)
        assert im.format == "WEBP" and im.size == (out.width, out.height)
        assert out.media_type == "image/webp" and out.format == "webp"
        assert abs(out.width / out.height - rect.width / rect.height) <= 1 / min(out.width, out.height)


# --- pixels --------------------------------------------------------------------------------------------


def test_pixels_match_a_reference_crop_resized_the_same_way(scene: NDArray[np.uint8]) -> None:
    data = _encode(scene)
    rect = Rect(137, 61, 720, 540)
    for width in (360, 240, 50):  # Lanczos alone (2x), and after a box reduction by 1, 2 and 7
        out = render_crops(data, [rect], RenderOptions(format="png", max_width=width), CONFIG)[0]
        got = _pixels(out.data)
        assert got.shape == (out.height, out.width, 3)
        assert _mae(got, _linear_reference(scene, rect, (out.width, out.height))) < 3
        # Pillow's own (gamma-space) resize of the crop: close at moderate factors; at 14x on this
        # detailed picture linear light shows (dark detail on light keeps its weight): MAE 4.8.
        pillow = (
            Image.fromarray(scene)
            .crop((137, 61, 857, 601))
            .resize((out.width, out.height), Image.Resampling.LANCZOS)
        )
        assert _mae(got, np.asarray(pillow)) < (3 if width >= 240 else 6)
    lossy = render_crops(data, [rect], RenderOptions(format="jpeg", max_width=360, quality=90), CONFIG)[0]
    assert _mae(_pixels(lossy.data), _linear_reference(scene, rect, (360, 270))) < 3


def test_a_crop_not_resized_is_the_crops_own_pixels(scene: NDArray[np.uint8]) -> None:
    out = render_crops(_encode(scene), [Rect(5, 7, 300, 200)], PNG, CONFIG)[0]
    assert np.array_equal(_pixels(out.data), scene[7:207, 5:305])


def test_resizing_is_done_in_linear_light() -> None:
    stripes = np.zeros((256, 256), np.uint8)
    stripes[:, ::2] = 255  # half the light: linear 0.5 is sRGB 188; a gamma-space average gives 128
    data = _encode(stripes)
    for width in (128, 16):  # Lanczos alone, and after a box reduction by 8
        out = render_crops(data, [Rect(0, 0, 256, 256)], RenderOptions(format="png", max_width=width), CONFIG)
        assert abs(float(_pixels(out[0].data).mean()) - 188.0) < 1.5


def test_alpha_is_premultiplied_so_hidden_colours_do_not_bleed() -> None:
    rgba = np.zeros((64, 64, 4), np.uint8)
    rgba[:, :32] = (0, 0, 255, 255)  # opaque blue
    rgba[:, 32:] = (255, 0, 0, 0)  # fully transparent, but red underneath
    out = render_crops(
        _encode(rgba), [Rect(0, 0, 64, 64)], RenderOptions(format="png", max_width=10), CONFIG
    )[0]
    im = _open(out.data)
    assert im.mode == "RGBA"
    px = np.asarray(im).astype(int)
    seen = px[:, :, 3] > 0
    assert seen.any() and (~seen).any()  # both halves survive
    assert px[:, :, 0][seen].max() <= 2  # no red fringe where blue meets transparency


def test_one_strip_or_many_give_the_same_pixels(
    scene: NDArray[np.uint8], monkeypatch: pytest.MonkeyPatch
) -> None:
    rgba = Image.fromarray(scene).convert("RGBA")
    rgba.putalpha(Image.linear_gradient("L").resize(rgba.size))
    data, rect = _encode(rgba), Rect(11, 7, 1000, 700)
    for width in (300, 31):
        whole = _pixels(
            render_crops(data, [rect], RenderOptions(format="png", max_width=width), CONFIG)[0].data
        )
        monkeypatch.setattr(render, "STRIP_PIXELS", 4000)  # a few rows at a time, pieces within strips
        strips = _pixels(
            render_crops(data, [rect], RenderOptions(format="png", max_width=width), CONFIG)[0].data
        )
        monkeypatch.undo()
        assert whole.shape == strips.shape and int(np.abs(whole - strips).max()) <= 1


# --- orientation, colour, metadata ---------------------------------------------------------------------

# Pillow transposition that turns a displayed image into the stored image of each EXIF orientation.
_STORE = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_90,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_270,
}


def test_exif_orientations_give_the_same_pixels_as_the_upright_source(scene: NDArray[np.uint8]) -> None:
    upright = Image.fromarray(scene[:300, :450])
    rect = Rect(50, 30, 300, 200)
    options = RenderOptions(format="png", max_width=120)
    expected = _pixels(render_crops(_encode(upright), [rect], options, CONFIG)[0].data)
    assert expected.shape == (80, 120, 3)
    for orientation, transpose in _STORE.items():  # 6 and 8 (the usual camera ones) among them
        exif = Image.Exif()
        exif[0x0112] = orientation
        stored = _encode(upright.transpose(transpose), exif=exif)
        assert decode_in_process(stored, CONFIG).width == 450  # the analysis sees the same upright image
        got = render_crops(stored, [rect], options, CONFIG)[0]
        assert (got.width, got.height) == (120, 80)
        assert int(np.abs(_pixels(got.data) - expected).max()) <= 1, orientation
        exact = render_crops(stored, [rect], PNG, CONFIG)[0]
        assert np.array_equal(_pixels(exact.data), np.asarray(upright)[30:230, 50:350])


def _icc_profile(description: str) -> bytes:
    """A v2 RGB display profile with Adobe RGB (1998) primaries (D50-adapted) and a 2.2 gamma."""

    def tag_xyz(x: float, y: float, z: float) -> bytes:
        return b"XYZ " + bytes(4) + b"".join(struct.pack(">i", round(v * 65536)) for v in (x, y, z))

    curve = b"curv" + bytes(4) + struct.pack(">IH", 1, round(2.2 * 256)) + bytes(2)
    text = description.encode("ascii") + b"\0"
    desc = b"desc" + bytes(4) + struct.pack(">I", len(text)) + text + bytes(4 + 4 + 2 + 1 + 67)
    tags = [
        (b"desc", desc),
        (b"wtpt", tag_xyz(0.9642, 1.0, 0.8249)),
        (b"rXYZ", tag_xyz(0.6097, 0.3111, 0.0195)),
        (b"gXYZ", tag_xyz(0.2053, 0.6257, 0.0609)),
        (b"bXYZ", tag_xyz(0.1492, 0.0632, 0.7446)),
        (b"rTRC", curve),
        (b"gTRC", curve),
        (b"bTRC", curve),
        (b"cprt", b"text" + bytes(4) + b"none\0"),
    ]
    offset = 128 + 4 + 12 * len(tags)
    table, body = b"", b""
    for sig, payload in tags:
        payload += bytes(-len(payload) % 4)
        table += sig + struct.pack(">II", offset + len(body), len(payload))
        body += payload
    size = offset + len(body)
    header = struct.pack(">I4sI4s4s4s", size, b"none", 0x02100000, b"mntr", b"RGB ", b"XYZ ") + bytes(12)
    header += b"acsp" + bytes(24) + struct.pack(">I", 0)
    header += b"".join(struct.pack(">i", round(v * 65536)) for v in (0.9642, 1.0, 0.8249))
    header = header.ljust(128, b"\0")
    return header + struct.pack(">I", len(tags)) + table + body


def test_a_non_srgb_profile_is_converted_and_the_output_is_untagged_srgb(scene: NDArray[np.uint8]) -> None:
    icc = _icc_profile("Wide test RGB")
    source = Image.fromarray(scene[:400, :500])
    data = _encode(source, icc_profile=icc)
    rect = Rect(20, 10, 400, 300)
    wide = ImageCms.ImageCmsProfile(io.BytesIO(icc))
    converted = ImageCms.profileToProfile(
        source.crop((20, 10, 420, 310)), wide, ImageCms.createProfile("sRGB"), outputMode="RGB"
    )
    assert converted is not None
    expected = np.asarray(converted)
    out = render_crops(data, [rect], PNG, CONFIG)[0]
    got = _pixels(out.data)
    assert _mae(got, expected) < 0.5  # LittleCMS's own conversion
    assert _mae(got, scene[10:310, 20:420]) > 3  # and it did change the pixels
    assert "icc_profile" not in _open(out.data).info
    small = render_crops(data, [rect], RenderOptions(format="png", max_width=200), CONFIG)[0]
    assert _mae(_pixels(small.data), _linear_reference(expected, Rect(0, 0, 400, 300), (200, 150))) < 1.5
    tagged = render_crops(data, [rect], RenderOptions(format="jpeg", keep_metadata=True), CONFIG)[0]
    profile = ImageCms.ImageCmsProfile(io.BytesIO(_open(tagged.data).info["icc_profile"]))
    assert "sRGB" in ImageCms.getProfileDescription(profile)


def test_an_srgb_tagged_source_keeps_its_pixels(scene: NDArray[np.uint8]) -> None:
    data = _encode(scene[:100, :100], icc_profile=render.SRGB_ICC)
    assert np.array_equal(
        _pixels(render_crops(data, [Rect(0, 0, 100, 100)], PNG, CONFIG)[0].data), scene[:100, :100]
    )


def _jpeg_with_metadata(pixels: NDArray[np.uint8], orientation: int = 1) -> bytes:
    exif = Image.Exif()
    exif[0x010F] = "Test Camera Maker"
    exif[0x0112] = orientation
    exif[ExifTags.IFD.GPSInfo] = {1: "N", 2: (51.0, 30.0, 12.5), 3: "E", 4: (0.0, 7.0, 39.0)}
    xmp = b'<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF/></x:xmpmeta>'
    return _encode(pixels, "JPEG", quality=90, exif=exif, comment=b"where I live", xmp=xmp)


def _gps(im: Image.Image) -> dict[int, Any]:
    return dict(im.getexif().get_ifd(ExifTags.IFD.GPSInfo))


def test_metadata_is_stripped_by_default_and_exif_kept_upright_on_request(scene: NDArray[np.uint8]) -> None:
    data = _jpeg_with_metadata(scene[:200, :300], orientation=6)  # displayed 200 wide, 300 tall
    source = _open(data)
    assert _gps(source) and "comment" in source.info and "xmp" in source.info
    for fmt in ("jpeg", "webp", "png"):
        bare = _open(render_crops(data, [Rect(0, 0, 150, 200)], RenderOptions(format=fmt), CONFIG)[0].data)
        assert not bare.getexif() and not _gps(bare), fmt
        assert not {"comment", "xmp", "icc_profile", "XML:com.adobe.xmp"} & set(bare.info), fmt
        kept = _open(
            render_crops(data, [Rect(0, 0, 150, 200)], RenderOptions(format=fmt, keep_metadata=True), CONFIG)[
                0
            ].data
        )
        assert kept.getexif().get(0x0112) == 1 and kept.getexif().get(0x010F) == "Test Camera Maker", fmt
        assert _gps(kept).get(1) == "N", fmt
        assert "icc_profile" in kept.info and "comment" not in kept.info, fmt


# --- formats -------------------------------------------------------------------------------------------


def test_every_format_decodes_jpeg_is_progressive_and_alpha_is_kept_or_flattened() -> None:
    rgba = np.zeros((80, 120, 4), np.uint8)
    rgba[:, :, :3] = photo(120, 80)
    rgba[:, :60, 3] = 255  # left half opaque, right half transparent
    data = _encode(rgba)
    formats = sorted(render_formats.supported_formats())
    assert {"jpeg", "webp", "png"} <= set(formats)
    for fmt in formats:
        options = RenderOptions(format=fmt, max_width=60)  # type: ignore[arg-type]
        out = render_crops(data, [Rect(0, 0, 120, 80)], options, CONFIG)[0]
        im = _open(out.data)
        assert im.format == {"jpeg": "JPEG", "webp": "WEBP", "png": "PNG", "avif": "AVIF"}[fmt]
        assert im.size == (60, 40) and out.media_type == render_formats.MEDIA_TYPES[fmt]
        if fmt == "jpeg":
            assert isinstance(im, JpegImagePlugin.JpegImageFile) and im.info.get("progressive") == 1
            assert im.mode == "RGB" and np.asarray(im)[:, -5:].min() >= 250  # transparency on white
        else:
            assert im.mode == "RGBA" and np.asarray(im)[:, -5:, 3].max() <= 2
    opaque = render_crops(_encode(rgba[:, :60]), [Rect(0, 0, 60, 80)], PNG, CONFIG)[0]
    assert _open(opaque.data).mode == "RGB"  # an alpha channel that is all opaque is dropped


def test_avif_only_where_supported(monkeypatch: pytest.MonkeyPatch) -> None:
    has_avif = bool(features.check("avif")) or render_formats.pillow_heif_avif()
    assert ("avif" in render_formats.supported_formats()) == has_avif
    monkeypatch.setattr(render, "supported_formats", lambda: frozenset({"jpeg", "webp", "png"}))
    with pytest.raises(UnsupportedRenderFormat, match="cannot write avif") as caught:
        render_crops(_encode(photo(64, 48)), [Rect(0, 0, 64, 48)], RenderOptions(format="avif"), CONFIG)
    assert caught.value.code == "InvalidArgument.RenderFormat"


@pytest.mark.parametrize("kind", ["gif_transparent", "la", "grey16", "bilevel", "cmyk_jpeg", "rgba_webp"])
def test_every_source_mode_renders(kind: str) -> None:
    rgb = photo(96, 64)
    if kind == "gif_transparent":
        im = Image.fromarray(rgb).convert("P")
        data, mode = _encode(im, "GIF", transparency=0), "RGBA"
    elif kind == "la":
        data, mode = _encode(Image.fromarray(rgb).convert("LA")), "L"  # opaque: its alpha is dropped
    elif kind == "grey16":
        data, mode = _encode(Image.fromarray(rgb[:, :, 0].astype(np.uint16) * 257)), "L"
    elif kind == "bilevel":
        data, mode = _encode(Image.fromarray(rgb).convert("1")), "L"
    elif kind == "cmyk_jpeg":
        data, mode = _encode(Image.fromarray(rgb).convert("CMYK"), "JPEG", quality=95), "RGB"
    else:
        rgba = Image.fromarray(rgb).convert("RGBA")
        rgba.putalpha(128)
        data, mode = _encode(rgba, "WEBP", lossless=True), "RGBA"
    out = render_crops(
        data, [Rect(0, 0, 96, 64), Rect(8, 8, 40, 40)], RenderOptions(format="png", max_width=48), CONFIG
    )
    assert [(o.width, o.height) for o in out] == [(48, 32), (40, 40)]
    assert _open(out[0].data).mode == mode
    if kind == "cmyk_jpeg":  # without a profile, as Pillow converts it
        reference = np.asarray(_open(data).convert("RGB").crop((8, 8, 48, 48)))
        assert _mae(_pixels(out[1].data), reference) < 2


# --- reductions before the resize -----------------------------------------------------------------------


def test_the_reduction_leaves_the_crop_at_least_twice_the_output() -> None:
    assert reduction_factor((4000, 3000), (1200, 900)) == 1  # 3.3x: no room for a 2x reduction
    assert reduction_factor((6000, 4000), (1200, 800)) == 2  # 5x: halved leaves 2.5x
    assert reduction_factor((6000, 4000), (300, 200)) == 10
    assert reduction_factor((6000, 4000), (6000, 4000)) == 1
    assert reduction_factor((6000, 100), (300, 20)) == 2  # the tighter axis decides
    assert [jpeg_draft_divisor(f) for f in (1, 2, 3, 4, 7, 8, 10, 100)] == [1, 2, 2, 4, 4, 8, 8, 8]


def test_a_large_jpeg_is_reduced_in_the_decoder(monkeypatch: pytest.MonkeyPatch) -> None:
    data = _encode(photo(2400, 1800), "JPEG", quality=90)
    drafts: list[tuple[int, int]] = []
    real = JpegImagePlugin.JpegImageFile.draft

    def spy(self: JpegImagePlugin.JpegImageFile, mode: str | None, size: tuple[int, int] | None) -> Any:
        result = real(self, mode, size)
        drafts.append(self.size)
        return result

    monkeypatch.setattr(JpegImagePlugin.JpegImageFile, "draft", spy)
    small = RenderOptions(format="png", max_width=150)
    rects = [Rect(0, 0, 2400, 1800), Rect(600, 0, 1800, 1800)]
    out = render_crops(data, rects, small, CONFIG)  # 16x and 12x: 1/4 scale leaves at least 3x
    assert drafts == [(600, 450)] and [(o.width, o.height) for o in out] == [(150, 112), (150, 150)]
    full = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))
    assert _mae(_pixels(out[0].data), _linear_reference(full, rects[0], (150, 112))) < 2
    drafts.clear()
    render_crops(data, [Rect(0, 0, 2400, 1800)], RenderOptions(format="png", max_width=1000), CONFIG)
    assert drafts == []  # 2.4x: decoded at full size


def _full_size_decode(data: bytes, config: EngineConfig, long_side: int | None) -> Decoded:
    """Pillow's plain decode of the whole image, in the decode server (what a crop without the decoder's
    reduction holds); answers with a 1-pixel image."""
    np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))
    return Decoded(rgb=np.zeros((1, 1, 3), np.uint8), alpha=None, width=1, height=1)


def test_a_large_jpeg_render_holds_far_less_than_its_full_size_decode() -> None:
    data = _encode(photo(4800, 3600), "JPEG", quality=90)  # 17 MP
    render_crops(data, [Rect(0, 0, 4800, 3600)], RenderOptions(max_width=400), ISOLATED)
    rendered = sandbox.last_child_peak_rss
    sandbox.run_isolated(_full_size_decode, data, ISOLATED)
    full = sandbox.last_child_peak_rss
    assert 0 < rendered < full - (80 << 20)  # the full decode holds 17 MP x 7 bytes (Pillow's + the array)


def test_a_60_mp_solid_png_is_capped_at_the_largest_output_side() -> None:
    data = _encode(Image.new("RGB", (10000, 6000), (200, 120, 40)))
    out = render_crops(data, [Rect(0, 0, 10000, 6000)], PNG, CONFIG)[0]
    assert (out.width, out.height) == (4096, 2458) and _open(out.data).size == (4096, 2458)
    assert np.abs(_pixels(out.data) - np.array([200, 120, 40])).max() <= 1


# --- limits and hostile input --------------------------------------------------------------------------


def test_the_encoded_outputs_are_capped(scene: NDArray[np.uint8]) -> None:
    tight = dataclasses.replace(CONFIG, render_max_output_bytes=50_000)
    with pytest.raises(ImageTooLarge, match="rendered outputs"):
        render_crops(_encode(scene), [Rect(0, 0, 1024, 768)], PNG, tight)


def test_the_callers_mistakes_are_value_errors() -> None:
    data = _encode(photo(64, 48))
    for rects in (
        [Rect(0, 0, 65, 48)],
        [Rect(-1, 0, 10, 10)],
        [Rect(0, 0, 0, 10)],
        [Rect(0, 0, 8, 8)] * 6,
        [],
    ):
        with pytest.raises(ValueError):
            render_crops(data, rects, PNG, CONFIG)
    with pytest.raises(ValueError):
        render_crops(data, [Rect(0, 0, 8, 8)], RenderOptions(quality=0), CONFIG)


def test_hostile_input_ends_in_the_engines_errors_and_the_sandbox_survives() -> None:
    good = _encode(photo(800, 600), "JPEG", quality=90)
    whole = [Rect(0, 0, 800, 600)]
    small = RenderOptions(max_width=200)
    cases = [
        (good[:4000], UnsupportedImage),  # truncated
        (b"not an image", UnsupportedImage),
        (png_declaring(30000, 30000), ImageTooLarge),  # 900 MP: the pixel cap
        (png_declaring(9000, 9000), ImageTooLarge),  # 81 MP RGBA: over the 640 MB budget
        (scan_bomb(500, side=800), ImageTooComplex),
    ]
    for data, error in cases:
        with pytest.raises(error):
            render_crops(data, whole, small, ISOLATED)
        # The same bytes straight into the decode server (the checks before it skipped): the same error,
        # and the next render works.
        with pytest.raises(error):
            sandbox.run_render_isolated(render_in_server, data, ISOLATED, whole, small)
        assert render_crops(good, whole, small, ISOLATED)[0].width == 200


def test_the_checks_before_the_server_decode_no_pixel(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(self: Image.Image) -> None:
        raise AssertionError("pixels decoded")

    monkeypatch.setattr(PngImagePlugin.PngImageFile, "load", refuse)
    monkeypatch.setattr(JpegImagePlugin.JpegImageFile, "load", refuse)
    png = _encode(photo(300, 200))  # no EXIF before the pixels: Pillow would decode it to look further
    exif = Image.Exif()
    exif[0x0112] = 6
    jpeg = _encode(photo(300, 200), "JPEG", exif=exif)
    rects = [Rect(0, 0, 200, 200)]
    assert render.inspect_render(png, rects, RenderOptions(max_width=50), ISOLATED) == [(50, 50)]
    assert render.inspect_render(jpeg, rects, RenderOptions(max_width=50), ISOLATED) == [(50, 50)]
    with pytest.raises(ValueError, match="outside"):  # displayed 200 x 300: the header says so
        render.inspect_render(jpeg, [Rect(0, 0, 300, 200)], PNG, ISOLATED)
    with pytest.raises(ImageTooLarge):
        render.inspect_render(png_declaring(9000, 9000), rects, PNG, ISOLATED)


def test_the_sandboxed_render_gives_the_same_bytes(scene: NDArray[np.uint8]) -> None:
    data = _encode(scene, "JPEG", quality=90)
    rects = [Rect(0, 0, 1024, 768), Rect(200, 0, 768, 768)]
    for options in (RenderOptions(format="webp", max_width=300), RenderOptions(format="png", max_width=100)):
        here = render_crops(data, rects, options, CONFIG)
        there = render_crops(data, rects, options, ISOLATED)
        assert here == there


# --- the CLI -------------------------------------------------------------------------------------------


def test_crop_cli_renders_each_crop_next_to_its_json(
    tmp_path: Path, scene: NDArray[np.uint8], capsys: pytest.CaptureFixture[str]
) -> None:
    image = tmp_path / "photo.jpg"
    image.write_bytes(_encode(scene, "JPEG", quality=90))
    out_dir = tmp_path / "out"
    code = run_crop_cli([str(image)], "16:9,1:1", None, None, out_dir, "webp", 70, 256)
    assert code == 0
    line = json.loads(capsys.readouterr().out)
    outputs = [c["Output"] for c in line["Croppings"]]
    assert [Path(o["URI"]).name for o in outputs] == ["photo_16x9.webp", "photo_1x1.webp"]
    assert [(o["Width"], o["Height"]) for o in outputs] == [(256, 144), (256, 256)]
    for o in outputs:
        path = Path(o["URI"])
        assert path.stat().st_size == o["Bytes"] and _open(path.read_bytes()).size == (
            o["Width"],
            o["Height"],
        )
        assert o["Format"] == "webp" and len(o["ETag"]) == 32
    assert run_crop_cli([str(image)], "1:1", None, None, out_dir, "gif") == 2
    assert "render format" in capsys.readouterr().err

"""Header checks before decoding: JPEG scan counting, format allow-list, decode memory estimates, and a
sandboxed decode of a real image (the sandbox itself: ``test_sandbox.py``)."""

from __future__ import annotations

import dataclasses
import io
import time

import numpy as np
import pytest
from PIL import Image

from tests.security.hostile_images import mpo, photo, scan_bomb
from worker.engine import preflight
from worker.engine.config import EngineConfig
from worker.engine.decode import decode
from worker.engine.errors import ImageTooComplex, UnsupportedImage

# What the workers run with (CROPQ_DECODE_MEMORY_MB=640).
ISOLATED = dataclasses.replace(EngineConfig(), decode_isolated=True, decode_memory_bytes=640 << 20)


def _jpeg(arr: np.ndarray, **kw: object) -> bytes:  # type: ignore[type-arg]
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, "JPEG", **kw)
    return buf.getvalue()


def test_progressive_jpeg_scans_are_counted_and_sampling_read() -> None:
    layout = preflight.jpeg_layout(_jpeg(photo(), progressive=True), 100)
    assert layout.progressive and layout.scans == 10  # libjpeg's default script for YCbCr
    assert layout.sampling == ((2, 2), (1, 1), (1, 1))
    base = preflight.jpeg_layout(_jpeg(photo()), 100)
    assert not base.progressive and base.scans == 1


def test_an_exif_thumbnail_and_later_mpo_pictures_do_not_count() -> None:
    # The thumbnail is a whole progressive JPEG inside APP1; its 10 SOS markers are skipped with it.
    thumb = _jpeg(photo(160, 120), progressive=True)
    main = _jpeg(photo(), progressive=True)
    segment = b"Exif\x00\x00" + thumb
    with_thumb = main[:2] + b"\xff\xe1" + (len(segment) + 2).to_bytes(2, "big") + segment + main[2:]
    assert with_thumb.count(b"\xff\xda") == 20
    assert preflight.jpeg_layout(with_thumb, 10).scans == 10  # at the limit, not over it
    assert preflight.jpeg_layout(mpo(600, 400), 100).scans == 1  # only the first picture


def test_a_scan_bomb_is_refused_from_its_markers_and_a_marker_in_garbage_cannot_hide_scans() -> None:
    with pytest.raises(ImageTooComplex, match="more than 100 scans"):
        preflight.jpeg_layout(scan_bomb(300, side=256), 100)
    assert preflight.jpeg_layout(scan_bomb(100, side=256), 100).scans == 100
    # Garbage bytes before a scan (libjpeg skips them with a warning) do not stop the count.
    bomb = scan_bomb(150, side=256)
    at = bomb.index(b"\xff\xda", bomb.index(b"\xff\xda") + 2)
    with pytest.raises(ImageTooComplex):
        preflight.jpeg_layout(bomb[:at] + b"\x00\x01\x02" + bomb[at:], 100)


def test_scan_counting_of_a_12_mp_jpeg_is_cheap() -> None:
    data = _jpeg(photo(4000, 3000), progressive=True, quality=90)
    preflight.jpeg_layout(data, 100)
    t0 = time.perf_counter()
    for _ in range(20):
        preflight.jpeg_layout(data, 100)
    per_call = (time.perf_counter() - t0) / 20
    assert per_call < 0.05  # generous bound; the measured figure (about 0.3-0.6 ms) is in the report


def test_decode_memory_estimates_follow_each_decoder() -> None:
    mp = 100_000_000
    # JPEG: DCT-scaled output only, plus the full-size coefficient buffer when progressive (4:2:0 = 3 B/px).
    base = preflight.JpegLayout(progressive=False, sampling=((2, 2), (1, 1), (1, 1)), scans=1)
    prog = dataclasses.replace(base, progressive=True, scans=10)
    assert preflight.estimate_decode_bytes("JPEG", "RGB", 10000, 10000, 320, jpeg=base) < 30 << 20
    assert 290e6 < preflight.estimate_decode_bytes("MPO", "RGB", 10000, 10000, 320, jpeg=prog) < 330e6
    assert preflight.estimate_decode_bytes("WEBP", "RGB", 10000, 10000, 320) > 1.5e9
    assert preflight.estimate_decode_bytes("PNG", "RGB", 10000, 10000, 320) == int(4.5 * mp)
    rgba = preflight.estimate_decode_bytes("PNG", "RGBA", 10000, 10000, 320)
    palette = preflight.estimate_decode_bytes("PNG", "P", 10000, 10000, 320)
    assert rgba > palette > preflight.estimate_decode_bytes("PNG", "L", 10000, 10000, 320)
    assert preflight.estimate_decode_bytes("PNG", "P", 100, 100, 320, transparency=True) > 5.4 * 100 * 100


def test_a_format_outside_the_allow_list_is_refused_before_pillow_tries_it() -> None:
    for fmt in ("PPM", "ICO", "TGA", "PCX"):
        buf = io.BytesIO()
        Image.fromarray(photo(64, 48)).save(buf, fmt)
        with pytest.raises(UnsupportedImage, match="supported format"):
            decode(buf.getvalue(), EngineConfig())


def test_mpo_is_dct_scaled_like_a_jpeg() -> None:
    d = decode(mpo(3000, 2000), EngineConfig())
    assert (d.width, d.height) == (3000, 2000)
    assert max(d.rgb.shape[:2]) == EngineConfig().detect_long_side


def test_the_sandbox_returns_the_same_pixels_as_an_in_process_decode() -> None:
    data = _jpeg(photo(1600, 1200), quality=90)
    here, there = decode(data, EngineConfig()), decode(data, ISOLATED)
    assert (here.width, here.height) == (there.width, there.height)
    assert np.array_equal(here.rgb, there.rgb)


def test_a_decode_over_its_time_budget_is_killed_and_reported() -> None:
    cfg = dataclasses.replace(ISOLATED, decode_time_limit=0.3)
    t0 = time.perf_counter()
    with pytest.raises(ImageTooComplex, match="time budget"):
        decode(scan_bomb(95), cfg)  # under the scan limit, about 1.4 s of decoding
    assert time.perf_counter() - t0 < 20  # the bound; the kill comes at 0.3 s

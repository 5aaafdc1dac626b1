"""A corpus of hostile images, generated (never committed): scan bombs, width x height bombs for every
accepted format, truncated files, a 5,000-frame GIF, 20 MB metadata blocks, and legal-but-odd images.

    python -m tests.security.hostile_images OUT_DIR     # writes every case, prints name, size, expectation

Each :class:`Case` says which outcomes are acceptable: the job's ``Code`` (one of the ``InvalidArgument.*``
codes) or ``None`` for success. Everything is built in about a second, in memory: bombs are small files
whose headers announce huge images (their pixel data does not matter: they are refused from the header).
"""

from __future__ import annotations

import io
import struct
import sys
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

OK = None
IMAGE = "InvalidArgument.Image"
TOO_LARGE = "InvalidArgument.ImageTooLarge"
TOO_COMPLEX = "InvalidArgument.ImageTooComplex"


@dataclass(frozen=True)
class Case:
    name: str
    data: bytes
    expect: frozenset[str | None]
    """Acceptable outcomes: a job Code, or None for Succeeded."""
    note: str = ""


def _save(im: Image.Image, fmt: str, **kw: object) -> bytes:
    buf = io.BytesIO()
    im.save(buf, fmt, **kw)
    return buf.getvalue()


def photo(width: int = 1200, height: int = 900, seed: int = 0) -> np.ndarray:  # type: ignore[type-arg]
    """A smooth random picture (JPEG-friendly) as an RGB array."""
    small = np.random.default_rng(seed).integers(0, 256, size=(12, 16, 3), dtype=np.uint8)
    return np.asarray(cv2.resize(small, (width, height), interpolation=cv2.INTER_CUBIC))


def _segments(jpeg: bytes) -> list[tuple[int, int, int]]:
    """(marker, offset, length including entropy data) of a well-formed JPEG made by Pillow."""
    out, i = [], 2
    while i < len(jpeg):
        m = jpeg[i + 1]
        if m == 0xD9:
            out.append((m, i, 2))
            break
        (length,) = struct.unpack_from(">H", jpeg, i + 2)
        if m != 0xDA:
            out.append((m, i, length + 2))
            i += 2 + length
            continue
        j = i + 2 + length
        while True:
            k = jpeg.index(b"\xff", j)
            if jpeg[k + 1] == 0 or 0xD0 <= jpeg[k + 1] <= 0xD7:
                j = k + 2
                continue
            break
        out.append((m, i, k - i))
        i = k
    return out


def scan_bomb(scans: int, side: int = 4000) -> bytes:
    """A flat grey progressive JPEG whose last AC scan (a few dozen bytes) is repeated: every copy is
    another pass of the decoder over all ``side``² coefficients (libjpeg only warns about the repeated
    progression). 3,000 scans at 4000x4000 keep an unguarded libjpeg-turbo busy for about 30 s."""
    base = _save(Image.new("L", (side, side), 128), "JPEG", progressive=True, quality=50)
    segs = _segments(base)
    dht = [s for s in segs if s[0] == 0xC4][-1]
    sos = segs[-2]
    unit = base[dht[1] : dht[1] + dht[2]] + base[sos[1] : sos[1] + sos[2]]
    eoi = segs[-1][1]
    have = sum(1 for s in segs if s[0] == 0xDA)
    return base[:eoi] + unit * max(0, scans - have) + base[eoi:]


def jpeg_declaring(width: int, height: int) -> bytes:
    """A small baseline JPEG whose frame header announces ``width`` x ``height`` (data truncated)."""
    base = _save(Image.new("RGB", (64, 64), (90, 100, 110)), "JPEG", quality=80)
    sof = next(s for s in _segments(base) if s[0] == 0xC0)[1]
    patched = bytearray(base)
    struct.pack_into(">HH", patched, sof + 5, height, width)
    return bytes(patched)


def _png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def png_declaring(width: int, height: int, colour_type: int = 6, depth: int = 8, rows: int = 4) -> bytes:
    """A PNG whose IHDR announces ``width`` x ``height`` and whose IDAT holds only ``rows`` rows."""
    channels = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}[colour_type]
    row = b"\x00" + bytes(width * channels * depth // 8)
    ihdr = struct.pack(">IIBBBBB", width, height, depth, colour_type, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", ihdr)
        + _png_chunk(b"IDAT", zlib.compress(row * rows))
        + _png_chunk(b"IEND", b"")
    )


def png_with_chunk(kind: bytes, body: bytes) -> bytes:
    """A small valid PNG carrying one extra ancillary chunk before its pixels (eXIf, iCCP...)."""
    png = _save(Image.fromarray(photo(320, 240)), "PNG")
    cut = 8 + 25  # signature + IHDR chunk
    return png[:cut] + _png_chunk(kind, body) + png[cut:]


def webp_lossless_declaring(width: int, height: int) -> bytes:
    """A lossless WebP of about 40 bytes that decodes in full at ``width`` x ``height``: the bitstream of
    a flat image spends zero bits a pixel, so only the 14-bit size fields need changing."""
    data = bytearray(_save(Image.new("RGB", (16, 16), (10, 20, 30)), "WEBP", lossless=True))
    at = data.index(b"VP8L") + 8 + 1  # chunk header, then the 0x2f signature byte
    (bits,) = struct.unpack_from("<I", data, at)
    bits = (bits & ~0x0FFFFFFF) | (width - 1) | ((height - 1) << 14)
    struct.pack_into("<I", data, at, bits)
    return bytes(data)


def webp_lossy_declaring(width: int, height: int) -> bytes:
    """A lossy WebP whose VP8 frame header announces ``width`` x ``height`` (its data is for 16x16)."""
    data = bytearray(_save(Image.new("RGB", (16, 16), (10, 20, 30)), "WEBP", quality=50))
    at = data.index(b"\x9d\x01\x2a") + 3
    struct.pack_into("<HH", data, at, width, height)
    return bytes(data)


def gif_declaring(width: int, height: int) -> bytes:
    """A GIF whose screen and first image announce ``width`` x ``height`` (LZW data for 16x16)."""
    data = bytearray(_save(Image.new("P", (16, 16), 1), "GIF"))
    struct.pack_into("<HH", data, 6, width, height)
    at = data.index(b"\x2c")  # image descriptor
    struct.pack_into("<HH", data, at + 5, width, height)
    return bytes(data)


def bmp_declaring(width: int, height: int) -> bytes:
    """A 24-bit BMP header announcing ``width`` x ``height`` with 64 bytes of pixels."""
    header = struct.pack("<IiiHHIIiiII", 40, width, height, 1, 24, 0, 0, 2835, 2835, 0, 0)
    body = header + bytes(64)
    return b"BM" + struct.pack("<IHHI", 14 + len(body), 0, 0, 54) + body


def tiff_declaring(width: int, height: int) -> bytes:
    """A deflate TIFF whose IFD announces ``width`` x ``height`` in one strip of a few bytes."""
    strip = zlib.compress(bytes(3 * 16))
    entries = [
        (256, 4, 1, width),
        (257, 4, 1, height),
        (258, 3, 1, 8),
        (259, 3, 1, 8),  # deflate
        (262, 3, 1, 1),  # grey, min is black
        (273, 4, 1, 8 + 2 + 12 * 9 + 4),  # strip offset: right after the IFD
        (277, 3, 1, 1),
        (278, 4, 1, height),
        (279, 4, 1, len(strip)),
    ]
    ifd = struct.pack("<H", len(entries))
    for tag, kind, count, value in entries:
        ifd += struct.pack("<HHI", tag, kind, count) + (
            struct.pack("<HH", value, 0) if kind == 3 else struct.pack("<I", value)
        )
    return b"II*\x00" + struct.pack("<I", 8) + ifd + struct.pack("<I", 0) + strip


def many_frames_gif(frames: int = 5000) -> bytes:
    rng = np.random.default_rng(1)
    ims = [Image.fromarray(rng.integers(0, 255, (24, 32), dtype=np.uint8), "L") for _ in range(8)]
    first = Image.fromarray(photo(320, 240)).convert("P")
    seq = [ims[i % len(ims)].convert("P") for i in range(frames - 1)]
    return _save(first, "GIF", save_all=True, append_images=seq, duration=20, optimize=False)


def jpeg_with_icc(total: int) -> bytes:
    """A JPEG carrying ``total`` bytes of ICC profile (APP2 segments of 64 kB, as Pillow writes them)."""
    return _save(Image.fromarray(photo()), "JPEG", quality=85, icc_profile=bytes(total))


def mpo(width: int = 3000, height: int = 2000) -> bytes:
    first = Image.fromarray(photo(width, height, seed=2))
    second = Image.fromarray(photo(width, height, seed=3))
    return _save(first, "MPO", save_all=True, append_images=[second], quality=85)


def png16_rgb() -> bytes:
    arr = photo(900, 600).astype(np.uint16) * 257
    ok, buf = cv2.imencode(".png", arr[:, :, ::-1])
    assert ok
    return bytes(buf)


def palette_alpha_png() -> bytes:
    im = Image.fromarray(photo(600, 400)).convert("P", palette=Image.Palette.ADAPTIVE, colors=64)
    return _save(im, "PNG", transparency=0)


def _truncated(data: bytes) -> bytes:
    return data[: len(data) // 2]


BUILDERS: dict[str, tuple[Callable[[], bytes], frozenset[str | None], str]] = {
    # --- time bombs ---
    "scan bomb JPEG (3,000 scans)": (
        lambda: scan_bomb(3000),
        frozenset({TOO_COMPLEX}),
        "refused from the markers",
    ),
    "scan bomb JPEG inside the scan limit": (
        lambda: scan_bomb(95),
        frozenset({OK, TOO_COMPLEX}),
        "decodes (about 1 s) or hits the time budget",
    ),
    # --- width x height bombs, one per accepted format ---
    "JPEG declaring 65500x65500": (lambda: jpeg_declaring(65500, 65500), frozenset({TOO_LARGE}), "pixel cap"),
    "JPEG declaring 10000x10000 (truncated)": (
        lambda: jpeg_declaring(10000, 10000),
        frozenset({OK, IMAGE}),
        "DCT-scaled: cheap whatever it holds",
    ),
    "PNG RGBA declaring 10000x10000": (
        lambda: png_declaring(10000, 10000),
        frozenset({TOO_LARGE}),
        "memory budget",
    ),
    "PNG RGB declaring 10000x10000 (truncated)": (
        lambda: png_declaring(10000, 10000, colour_type=2),
        frozenset({OK, IMAGE}),
        "within budget (about 450 MB); four rows of data",
    ),
    "PNG declaring 100000x100000": (
        lambda: png_declaring(100000, 100000, colour_type=0),
        frozenset({TOO_LARGE}),
        "pixel cap",
    ),
    "WebP lossless 10000x10000 (about 40 bytes)": (
        lambda: webp_lossless_declaring(10000, 10000),
        frozenset({TOO_LARGE}),
        "memory budget",
    ),
    "WebP lossy declaring 16000x16000": (
        lambda: webp_lossy_declaring(16000, 16000),
        frozenset({TOO_LARGE}),
        "pixel cap",
    ),
    "WebP lossy declaring 7000x7000": (
        lambda: webp_lossy_declaring(7000, 7000),
        frozenset({TOO_LARGE, IMAGE}),
        "memory budget (or refused by libwebp)",
    ),
    "GIF declaring 65535x65535": (lambda: gif_declaring(65535, 65535), frozenset({TOO_LARGE}), "pixel cap"),
    "GIF declaring 10000x10000": (
        lambda: gif_declaring(10000, 10000),
        frozenset({OK, IMAGE}),
        "within budget; LZW data for 16x16",
    ),
    "BMP declaring 10000x10000": (lambda: bmp_declaring(10000, 10000), frozenset({IMAGE}), "truncated"),
    "BMP declaring 30000x30000": (lambda: bmp_declaring(30000, 30000), frozenset({TOO_LARGE}), "pixel cap"),
    "TIFF declaring 10000x10000": (
        lambda: tiff_declaring(10000, 10000),
        frozenset({OK, IMAGE}),
        "one tiny strip",
    ),
    "TIFF declaring 100000x100000": (
        lambda: tiff_declaring(100000, 100000),
        frozenset({TOO_LARGE}),
        "pixel cap",
    ),
    # --- truncated and foreign ---
    "truncated JPEG": (
        lambda: _truncated(_save(Image.fromarray(photo()), "JPEG", quality=90)),
        frozenset({OK, IMAGE}),
        "libjpeg fills the rest",
    ),
    "truncated PNG": (lambda: _truncated(_save(Image.fromarray(photo()), "PNG")), frozenset({IMAGE}), ""),
    "header only (8 bytes of PNG)": (lambda: b"\x89PNG\r\n\x1a\n", frozenset({IMAGE}), ""),
    "PPM (not an accepted format)": (
        lambda: _save(Image.fromarray(photo(64, 48)), "PPM"),
        frozenset({IMAGE}),
        "",
    ),
    "ICO (not an accepted format)": (
        lambda: _save(Image.fromarray(photo(64, 48)), "ICO"),
        frozenset({IMAGE}),
        "",
    ),
    # --- large but legal ---
    "GIF of 5,000 frames": (lambda: many_frames_gif(5000), frozenset({OK}), "first frame only"),
    "JPEG with a 20 MB ICC profile": (lambda: jpeg_with_icc(20 << 20), frozenset({OK, IMAGE}), ""),
    "PNG with a 20 MB eXIf chunk": (
        lambda: png_with_chunk(b"eXIf", b"MM\x00*\x00\x00\x00\x08" + bytes(20 << 20)),
        frozenset({OK, IMAGE}),
        "",
    ),
    "PNG with a 20 MB iCCP chunk (compressed)": (
        lambda: png_with_chunk(b"iCCP", b"icc\x00\x00" + zlib.compress(bytes(20 << 20), 9)),
        frozenset({OK, IMAGE}),
        "",
    ),
    # --- legal but odd: must succeed ---
    "CMYK JPEG": (lambda: _save(Image.fromarray(photo()).convert("CMYK"), "JPEG"), frozenset({OK}), ""),
    "16-bit RGB PNG": (png16_rgb, frozenset({OK}), ""),
    "16-bit grey PNG": (
        lambda: _save(Image.fromarray(photo()[:, :, 0].astype(np.uint16) * 257), "PNG"),
        frozenset({OK}),
        "",
    ),
    "palette + alpha PNG": (palette_alpha_png, frozenset({OK}), ""),
    "MPO (two 6 MP pictures)": (mpo, frozenset({OK}), "DCT-scaled like a JPEG"),
}


def corpus(names: list[str] | None = None) -> list[Case]:
    """The cases (all, or those named), built now."""
    out = []
    for name, (build, expect, note) in BUILDERS.items():
        if names is None or name in names:
            out.append(Case(name, build(), expect, note))
    return out


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        sys.stderr.write(__doc__ or "")
        return 2
    folder = Path(args[0])
    folder.mkdir(parents=True, exist_ok=True)
    for n, case in enumerate(corpus()):
        (folder / f"{n:02d}.bin").write_bytes(case.data)
        expect = ", ".join(sorted(e or "Succeeded" for e in case.expect))
        sys.stdout.write(f"{n:02d}.bin  {len(case.data):>10}  {case.name}  -> {expect}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

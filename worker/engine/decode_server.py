"""The decode server: a small long-lived process that decodes (and renders) images under hard limits.

    python -m worker.engine.decode_server <parent pid> <memory budget bytes>

Started by :mod:`worker.engine.sandbox`, one per process that decodes. It imports only what a decode
needs (numpy, Pillow, OpenCV, the engine's decode and render code: about 50 MB, no onnxruntime, no
models) and decodes each image itself (for the analysis, or to render crops of it), bounded by
- ``RLIMIT_AS``, fixed at start: its own address space plus the decode memory budget (and some slack);
- ``RLIMIT_CPU``, moved before each image to the CPU time used so far plus the request's time budget
  (a decode's or a render's): a decoder that spins past it gets SIGXCPU (whose default action ends
  the process);
- the parent's wall-clock deadline, after which the parent kills it (a starved or blocked decoder uses
  no CPU time).
It leaves after any failure (a decoder that failed may have left its library in any state), after
``RECYCLE_AFTER`` images, or when its address space grew: the parent starts a fresh one.

Wire format (pipes; integers little-endian):
- request (parent -> server): ``<II`` meta and data lengths, the meta (a pickle the parent wrote:
  function reference, config, the function's other arguments, its time budget), the image bytes; the
  server calls ``fn(data, config, *arguments)``;
- reply (server -> parent): ``<BQI`` flags (``RETIRING``: the server leaves after this reply), its peak
  RSS during the request, the body length; then the body. The server has run a decoder on hostile
  bytes, so the body is never unpickled. It is one of
  - ``O`` + ``<IIIIB`` (width, height, rows, columns, has alpha) + the RGB bytes (+ float32 alpha): a
    decode's analysis copy, at most :data:`MAX_BODY` bytes;
  - ``R`` + ``<B`` count + per image ``<IIBI`` (width, height, format index, length) + the encoded
    images one after the other: rendered crops, at most :func:`render_body_cap` bytes;
  - ``E`` + ``<H`` + an error class name + a UTF-8 message.
"""

from __future__ import annotations

import contextlib
import gc
import importlib
import math
import os
import pickle
import resource
import select
import signal
import struct
import sys
from collections.abc import Callable
from typing import Any

import numpy as np

from worker.engine.config import EngineConfig
from worker.engine.decode import Decoded
from worker.engine.errors import (
    CropError,
    ImageTooComplex,
    ImageTooLarge,
    UnsupportedImage,
    UnsupportedRenderFormat,
)
from worker.engine.render import MAX_RENDERS, RenderedImage
from worker.engine.render_formats import MEDIA_TYPES

READY = b"CQDS"
REQUEST = struct.Struct("<II")
REPLY = struct.Struct("<BQI")
RETIRING = 1
_RESULT = struct.Struct("<IIIIB")
_ERROR = struct.Struct("<H")
MAX_SIDE = 1 << 15
MAX_BODY = 1 + _RESULT.size + 2048 * 2048 * 7
"""Largest decode body the parent accepts: a generous 2048 x 2048 RGB + alpha copy (the engine asks for a
long side of at most a few hundred pixels)."""
_COUNT = struct.Struct("<B")
_RENDERED = struct.Struct("<IIBI")
RENDER_FORMATS: tuple[str, ...] = ("jpeg", "webp", "png", "avif")
"""Output formats by their index in a rendered body."""


def render_body_cap(config: EngineConfig) -> int:
    """Largest rendered body the parent accepts: the outputs' own cap (``render_max_output_bytes``, which
    the server enforces before answering) and the headers of five images. Much larger than a decode body
    (a 4096-px PNG alone can be 25-67 MB), but bounded by the setting that bounds what the worker then
    holds and uploads, rather than by a constant that would either refuse legitimate outputs or allow
    anything."""
    return 1 + _COUNT.size + MAX_RENDERS * _RENDERED.size + config.render_max_output_bytes


AS_SLACK = 256 * 1024 * 1024
"""Address space granted above the budget: malloc arenas and the decoder's own tables reserve more
address space than they touch."""
GROWTH_LIMIT = 128 * 1024 * 1024
"""The server leaves once its address space grew this much (fragmentation eats into the budget)."""
RECYCLE_AFTER = 1000
"""Images one server decodes before it leaves (bounds slow leaks, and how long anything an image
might have left in the decoder's state lives)."""
_F_SETPIPE_SZ = 1031
_PIPE_SIZE = 1 << 20
"""A whole analysis copy in one pipe buffer (the default 64 kB costs a dozen context switches)."""
ERRORS: dict[str, type[CropError]] = {
    c.__name__: c for c in (UnsupportedImage, ImageTooLarge, ImageTooComplex, UnsupportedRenderFormat)
}

ServerFn = Callable[..., object]
"""``fn(data, config, *arguments)``: a decode returning :class:`Decoded`, or a render returning a list
of :class:`RenderedImage`."""


# --- the body: written by the server, checked by the parent --------------------------------------------


def encode_result(d: Decoded) -> bytes:
    rgb = np.ascontiguousarray(d.rgb, dtype=np.uint8)
    rows, cols = rgb.shape[:2]
    parts = [b"O", _RESULT.pack(d.width, d.height, rows, cols, d.alpha is not None), rgb.tobytes()]
    if d.alpha is not None:
        parts.append(np.ascontiguousarray(d.alpha, dtype="<f4").tobytes())
    return b"".join(parts)


def _magic_ok(fmt: str, data: bytes | memoryview) -> bool:
    """The encoded bytes start as the named format's files do (the parent never decodes them)."""
    head = bytes(data[:12])
    if fmt == "jpeg":
        return head.startswith(b"\xff\xd8\xff")
    if fmt == "png":
        return head.startswith(b"\x89PNG\r\n\x1a\n")
    if fmt == "webp":
        return head.startswith(b"RIFF") and head[8:12] == b"WEBP"
    return head[4:8] == b"ftyp"  # avif: an ISO-BMFF file type box


def encode_rendered(images: list[RenderedImage]) -> bytes:
    parts = [b"R", _COUNT.pack(len(images))]
    parts += [_RENDERED.pack(i.width, i.height, RENDER_FORMATS.index(i.format), len(i.data)) for i in images]
    parts += [i.data for i in images]
    return b"".join(parts)


def encode_body(result: object) -> bytes:
    """A function's result as a body: a decode's analysis copy or a render's images."""
    if isinstance(result, Decoded):
        return encode_result(result)
    if isinstance(result, list) and all(isinstance(i, RenderedImage) for i in result):
        return encode_rendered(result)
    raise TypeError(f"The decode server cannot send a {type(result).__name__}")


def encode_error(name: str, message: str) -> bytes:
    raw = name.encode()
    return b"E" + _ERROR.pack(len(raw)) + raw + message.encode("utf-8", "replace")[:1000]


def parse_body(body: bytearray) -> Decoded | list[RenderedImage] | CropError:
    """The server's answer, checked field by field (a process that ran hostile bytes may say anything)."""
    if body[:1] == b"E" and len(body) >= 1 + _ERROR.size:
        (n,) = _ERROR.unpack_from(body, 1)
        name = bytes(body[1 + _ERROR.size : 1 + _ERROR.size + n]).decode("ascii", "replace")
        message = bytes(body[1 + _ERROR.size + n :]).decode("utf-8", "replace")[:500]
        return ERRORS.get(name, UnsupportedImage)(message)
    if body[:1] == b"R":
        return _parse_rendered(body)
    bad = UnsupportedImage("The decoder answered with a malformed result")
    if body[:1] != b"O" or len(body) < 1 + _RESULT.size:
        return bad
    width, height, rows, cols, has_alpha = _RESULT.unpack_from(body, 1)
    start, pixels = 1 + _RESULT.size, rows * cols
    if not (0 < rows <= MAX_SIDE and 0 < cols <= MAX_SIDE and width > 0 and height > 0 and has_alpha < 2):
        return bad
    if len(body) != start + pixels * 3 + (pixels * 4 if has_alpha else 0):
        return bad
    view = memoryview(body)
    rgb = np.frombuffer(view[start : start + pixels * 3], dtype=np.uint8).reshape(rows, cols, 3)
    alpha = None
    if has_alpha:
        raw = np.frombuffer(view[start + pixels * 3 :], dtype="<f4").reshape(rows, cols)
        alpha = np.clip(np.nan_to_num(raw.astype(np.float32)), 0.0, 1.0)
    return Decoded(rgb=rgb, alpha=alpha, width=width, height=height)


def _parse_rendered(body: bytearray) -> list[RenderedImage] | CropError:
    bad = UnsupportedImage("The renderer answered with a malformed result")
    start = 1 + _COUNT.size
    if len(body) < start:
        return bad
    (count,) = _COUNT.unpack_from(body, 1)
    offset = start + count * _RENDERED.size
    if not 1 <= count <= MAX_RENDERS or len(body) < offset:
        return bad
    view, images = memoryview(body), []
    for n in range(count):
        width, height, index, size = _RENDERED.unpack_from(body, start + n * _RENDERED.size)
        if not (0 < width <= MAX_SIDE and 0 < height <= MAX_SIDE and index < len(RENDER_FORMATS)):
            return bad
        fmt, data = RENDER_FORMATS[index], view[offset : offset + size]
        if len(data) != size or not _magic_ok(fmt, data):
            return bad
        images.append(RenderedImage(bytes(data), width, height, fmt, MEDIA_TYPES[fmt]))
        offset += size
    return images if offset == len(body) else bad


def write_all(fd: int, *parts: bytes | bytearray | memoryview) -> None:
    for part in parts:
        view = memoryview(part)
        while view:
            view = view[os.write(fd, view) :]


def enlarge_pipe(fd: int) -> None:
    with contextlib.suppress(OSError):  # above /proc/sys/fs/pipe-max-size: the default size still works
        import fcntl

        fcntl.fcntl(fd, _F_SETPIPE_SZ, _PIPE_SIZE)


# --- the server ----------------------------------------------------------------------------------------


def _read_exact(fd: int, n: int) -> bytearray | None:
    """``n`` bytes from ``fd``, or ``None`` at end of file (the parent is gone)."""
    buf = bytearray(n)
    view, got = memoryview(buf), 0
    while got < n:
        k = os.readv(fd, [view[got:]])
        if k == 0:
            return None
        got += k
    return buf


def _resolve(ref: str, cache: dict[str, ServerFn]) -> ServerFn:
    """A module-level function named by the parent (``module:qualname``), imported once."""
    if ref not in cache:
        module, _, name = ref.partition(":")
        obj: Any = importlib.import_module(module)
        for part in name.split("."):
            obj = getattr(obj, part)
        cache[ref] = obj
    return cache[ref]


def _status(key: str) -> int:
    """A ``/proc/self/status`` figure in bytes (``VmSize``, ``VmHWM``...); 0 where /proc is missing."""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith(key + ":"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def _reset_peak_rss() -> None:
    with contextlib.suppress(OSError), open("/proc/self/clear_refs", "w") as fh:
        fh.write("5")  # VmHWM := VmRSS, so that each reply reports that request's peak


def _run(
    fn: ServerFn, data: bytes, config: EngineConfig, args: tuple[object, ...], seconds: float
) -> tuple[bytes, bool]:
    """The body, and whether the decode or render failed (then the server leaves after answering)."""
    used = resource.getrusage(resource.RUSAGE_SELF)
    cpu = math.ceil(used.ru_utime + used.ru_stime + seconds)
    # Only the soft limit moves: an unprivileged process cannot raise a hard limit it lowered.
    resource.setrlimit(resource.RLIMIT_CPU, (cpu, resource.getrlimit(resource.RLIMIT_CPU)[1]))
    try:
        return encode_body(fn(data, config, *args)), False
    except CropError as exc:
        return encode_error(type(exc).__name__, str(exc)), True
    except MemoryError:
        message = "The image needs more memory to decode than its budget allows"
        return encode_error("ImageTooLarge", message), True
    except Exception as exc:  # a decoder failing in any way is the image's fault, not the worker's
        return encode_error("UnsupportedImage", f"The image cannot be decoded: {type(exc).__name__}"), True


def _warm_up() -> None:
    """Run each decoder once before the limits apply: their one-time set-up is then not charged to the
    first image (a cold first decode costs several times a warm one)."""
    import io

    import cv2
    from PIL import Image

    from worker.engine.decode import decode_in_process
    from worker.engine.render import RenderOptions, render_in_process
    from worker.engine.render_formats import supported_formats
    from worker.engine.types import Rect

    cv2.setNumThreads(1)  # as in the engine: one image, one core, so CPU time tracks wall time
    Image.init()
    config = EngineConfig()
    pixels = np.random.default_rng(0).integers(0, 255, (48, 64, 3), dtype=np.uint8)
    formats = (("JPEG", "RGB"), ("JPEG", "L"), ("PNG", "RGBA"), ("PNG", "P"), ("WEBP", "RGB"), ("GIF", "P"))
    for fmt, mode in formats:
        buf = io.BytesIO()
        Image.fromarray(pixels).convert(mode).save(buf, fmt)
        for long_side in (8, 32, None):  # OpenCV's DCT-scaled path, Pillow's draft and reduce, plain
            with contextlib.suppress(CropError):  # a format this build cannot read
                decode_in_process(buf.getvalue(), config, long_side)
    # Each encoder a render uses, from a reduced JPEG and a resampled RGBA PNG.
    for fmt, mode, side in (("JPEG", "RGB", 6), ("PNG", "RGBA", 40)):
        buf = io.BytesIO()
        Image.fromarray(pixels).convert(mode).save(buf, fmt)
        for out in sorted(supported_formats()):
            options = RenderOptions(format=out, max_width=side)  # type: ignore[arg-type]
            with contextlib.suppress(CropError):
                render_in_process(buf.getvalue(), [Rect(0, 0, 64, 48)], options, config)


def serve(parent: int, budget: int, inp: int, out: int) -> int:
    """Answer requests on ``inp`` until end of file, the parent's death, a failure or retirement."""
    _warm_up()
    gc.collect()
    base = _status("VmSize")
    if base:
        limit = base + budget + AS_SLACK
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))  # a crash is reported by its signal, not dumped
    for fd in (inp, out):
        enlarge_pipe(fd)
    cache: dict[str, ServerFn] = {}
    write_all(out, READY)
    for served in range(1, RECYCLE_AFTER + 1):
        while not select.select([inp], [], [], 1.0)[0]:
            if os.getppid() != parent:  # the parent died, and a fork of it may still hold our pipe
                return 0
        head = _read_exact(inp, REQUEST.size)
        if head is None:
            return 0
        meta_len, data_len = REQUEST.unpack(head)
        meta, data = _read_exact(inp, meta_len), _read_exact(inp, data_len)
        if meta is None or data is None:
            return 0
        ref, config, args, seconds = pickle.loads(meta)  # written by the parent, which started us
        _reset_peak_rss()
        body, failed = _run(_resolve(ref, cache), bytes(data), config, args, seconds)
        del data
        grown = base and _status("VmSize") > base + GROWTH_LIMIT
        retire = failed or bool(grown) or served == RECYCLE_AFTER
        write_all(out, REPLY.pack(RETIRING if retire else 0, _status("VmHWM"), len(body)), body)
        if retire:
            return 0
    return 0


def main(argv: list[str]) -> int:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the whole group: the parent decides
    # The protocol owns the real stdout; anything a library prints goes to stderr instead.
    out = os.dup(1)
    os.dup2(2, 1)
    return serve(int(argv[0]), int(argv[1]), 0, out)


if __name__ == "__main__":  # pragma: no cover - the sandbox's subprocess
    sys.exit(main(sys.argv[1:]))

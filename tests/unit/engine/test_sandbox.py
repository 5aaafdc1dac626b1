"""The decode sandbox: a long-lived decode server per process, bounded in memory, CPU and wall-clock
time, replaced after any failure, answering with checked raw pixels (never a pickle)."""

from __future__ import annotations

import dataclasses
import io
import os
import resource
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.security.hostile_images import photo
from worker.engine import decode_server, sandbox
from worker.engine.config import EngineConfig
from worker.engine.decode import Decoded, decode, decode_in_process
from worker.engine.errors import ImageTooComplex, ImageTooLarge, UnsupportedImage
from worker.engine.render import RenderedImage, RenderOptions
from worker.engine.types import Rect

ROOT = Path(__file__).resolve().parents[3]
ISOLATED = dataclasses.replace(EngineConfig(), decode_isolated=True, decode_memory_bytes=640 << 20)
SMALL = dataclasses.replace(ISOLATED, decode_time_limit=0.5, decode_memory_bytes=64 << 20)


def _jpeg(width: int = 1600, height: int = 1200) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(photo(width, height)).save(buf, "JPEG", quality=90)
    return buf.getvalue()


def _info(width: int, height: int = 1) -> Decoded:
    return Decoded(rgb=np.zeros((1, 1, 3), np.uint8), alpha=None, width=width, height=height)


# Module-level functions: the server imports them by name.
def _pid(data: bytes, config: EngineConfig, long_side: int | None) -> Decoded:
    return _info(os.getpid())


def _limits(data: bytes, config: EngineConfig, long_side: int | None) -> Decoded:
    used = resource.getrusage(resource.RUSAGE_SELF)
    cpu_left = resource.getrlimit(resource.RLIMIT_CPU)[0] - (used.ru_utime + used.ru_stime)
    return _info(max(1, int(cpu_left * 1000)), resource.getrlimit(resource.RLIMIT_AS)[0] >> 20)


def _spin(data: bytes, config: EngineConfig, long_side: int | None) -> Decoded:
    while True:
        pass


def _sleep(data: bytes, config: EngineConfig, long_side: int | None) -> Decoded:
    time.sleep(60)  # uses no CPU: only the wall-clock deadline ends it
    return _info(1)


def _allocate(data: bytes, config: EngineConfig, long_side: int | None) -> Decoded:
    bytes(config.decode_memory_bytes + (512 << 20))
    return _info(1)


def _crash(data: bytes, config: EngineConfig, long_side: int | None) -> Decoded:
    os.abort()


PATIENT = dataclasses.replace(SMALL, decode_time_limit=10.0)
"""The same server (its memory budget is SMALL's), but a budget no busy machine runs over: for the calls
that only ask the server something, where SMALL's 0.5 s would test the machine's load, not the sandbox."""


def _server_pid() -> int:
    return sandbox.run_isolated(_pid, b"", PATIENT).width


def test_the_sandbox_returns_the_same_pixels_as_an_in_process_decode() -> None:
    data = _jpeg()
    here, there = decode(data, EngineConfig()), decode(data, ISOLATED)
    assert (here.width, here.height) == (there.width, there.height)
    assert np.array_equal(here.rgb, there.rgb) and there.rgb.flags.writeable
    rgba = Image.fromarray(photo(400, 300)).convert("RGBA")
    rgba.putalpha(Image.linear_gradient("L").resize((400, 300)))
    buf = io.BytesIO()
    rgba.save(buf, "PNG")
    here, there = decode_in_process(buf.getvalue(), ISOLATED), decode(buf.getvalue(), ISOLATED)
    assert here.alpha is not None and there.alpha is not None
    assert np.array_equal(here.rgb, there.rgb) and np.array_equal(here.alpha, there.alpha)


def test_one_server_serves_many_images_under_a_cpu_and_an_address_space_limit() -> None:
    first = _server_pid()
    assert first != os.getpid() and _server_pid() == first  # long-lived, not a process per image
    limits = sandbox.run_isolated(_limits, b"", SMALL)
    assert 0 < limits.width <= 1500  # CPU seconds left (ms): the budget, rounded up to a whole second
    assert 64 < limits.height < 64 + 1024  # MB of address space: its own, the budget and some slack


def test_time_memory_and_crashes_end_in_clear_errors_and_a_fresh_server() -> None:
    before = _server_pid()
    t0 = time.monotonic()
    with pytest.raises(ImageTooComplex, match="time budget"):
        sandbox.run_isolated(_spin, b"", SMALL)
    with pytest.raises(ImageTooComplex, match="time budget"):
        sandbox.run_isolated(_sleep, b"", SMALL)
    assert time.monotonic() - t0 < 20  # the bound; each kill comes at 0.5 s
    with pytest.raises(ImageTooLarge, match="memory"):
        sandbox.run_isolated(_allocate, b"", SMALL)
    with pytest.raises(UnsupportedImage, match="SIGABRT"):
        sandbox.run_isolated(_crash, b"", SMALL)
    after = _server_pid()
    assert after != before  # replaced, and working
    with pytest.raises(UnsupportedImage):
        decode(_jpeg()[:5000], ISOLATED)  # a truncated image: a clean error, then a fresh server
    assert _server_pid() != after


def test_concurrent_decodes_from_threads_each_get_their_own_answer() -> None:
    images = [_jpeg(800 + 160 * i, 600) for i in range(4)]
    expected = [decode_in_process(d, ISOLATED).rgb for d in images]
    errors: list[BaseException] = []

    def work(i: int) -> None:
        try:
            for _ in range(3):
                assert np.array_equal(decode(images[i], ISOLATED).rgb, expected[i])
        except BaseException as exc:  # reported by the main thread
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors


def test_the_server_leaves_with_its_parent() -> None:
    script = textwrap.dedent(
        """
        import os, sys
        sys.path.insert(0, sys.argv[1])
        from test_sandbox import _server_pid
        print(_server_pid(), flush=True)
        os._exit(0)  # no atexit: the server must notice on its own
        """
    )
    here = str(Path(__file__).parent)
    out = subprocess.run(
        [sys.executable, "-c", script, here], capture_output=True, text=True, check=True, cwd=ROOT
    ).stdout
    pid = int(out.split()[-1])
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and _alive(pid):
        time.sleep(0.05)
    assert not _alive(pid)


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state not in ("Z", "X")


def test_a_forked_child_starts_its_own_server() -> None:
    parent_server = _server_pid()
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the forked child
        code = 1
        try:
            os.write(w, str(_server_pid()).encode())
            code = 0
        finally:
            os._exit(code)
    os.close(w)
    child_server = int(os.read(r, 64) or b"0")
    os.close(r)
    assert os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) == 0
    assert child_server not in (0, parent_server)
    assert _server_pid() == parent_server  # ours is untouched


def test_a_malformed_answer_is_refused_field_by_field() -> None:
    good = decode_server.encode_result(
        Decoded(
            rgb=np.ones((2, 3, 3), np.uint8), alpha=np.full((2, 3), np.nan, np.float32), width=30, height=20
        )
    )
    parsed = decode_server.parse_body(bytearray(good))
    assert (
        isinstance(parsed, Decoded)
        and parsed.rgb.shape == (2, 3, 3)
        and (parsed.width, parsed.height) == (30, 20)
    )
    assert parsed.alpha is not None and float(parsed.alpha.max()) == 0.0  # NaN cannot reach the engine
    for bad in (good[:-1], good + b"x", b"O" + b"\xff" * 17, b"", b"Zxyz", b"\x80\x04K\x01."):
        assert isinstance(decode_server.parse_body(bytearray(bad)), UnsupportedImage)
    unknown = decode_server.parse_body(bytearray(decode_server.encode_error("SystemExit", "no")))
    assert type(unknown) is UnsupportedImage
    known = decode_server.parse_body(bytearray(decode_server.encode_error("ImageTooLarge", "big")))
    assert isinstance(known, ImageTooLarge) and str(known) == "big"


def test_only_module_level_functions_can_be_sent() -> None:
    with pytest.raises(ValueError, match="module-level"):
        sandbox.run_isolated(lambda d, c, s: _info(1), b"", SMALL)


# --- renders: the second kind of request and of answer ------------------------------------------------

_JPEG_BYTES = b"\xff\xd8\xff\xe0" + bytes(20)


def _rendered(width: int = 40, height: int = 30) -> RenderedImage:
    return RenderedImage(_JPEG_BYTES, width, height, "jpeg", "image/jpeg")


def _slow_render(
    data: bytes, config: EngineConfig, rects: tuple[Rect, ...], options: RenderOptions
) -> list[RenderedImage]:
    time.sleep(1.0)  # longer than a decode's budget here, well within a render's
    return [_rendered(r.width, r.height) for r in rects]


def _spin_render(
    data: bytes, config: EngineConfig, rects: tuple[Rect, ...], options: RenderOptions
) -> list[RenderedImage]:
    while True:
        pass


def _decoded_for_a_render(
    data: bytes, config: EngineConfig, rects: tuple[Rect, ...], options: RenderOptions
) -> object:
    return _info(1)


def _rendered_for_a_decode(data: bytes, config: EngineConfig, long_side: int | None) -> object:
    return [_rendered()]


def test_a_render_runs_under_its_own_time_budget_and_is_killed_past_it() -> None:
    config = dataclasses.replace(SMALL, render_time_limit=5.0)  # decodes here get 0.5 s
    rects = [Rect(0, 0, 40, 30), Rect(0, 0, 10, 10)]
    out = sandbox.run_render_isolated(_slow_render, b"", config, rects, RenderOptions())
    assert [(r.width, r.height, r.data) for r in out] == [(40, 30, _JPEG_BYTES), (10, 10, _JPEG_BYTES)]
    before = _server_pid()
    with pytest.raises(ImageTooComplex, match="Rendering the image"):
        sandbox.run_render_isolated(
            _spin_render, b"", dataclasses.replace(SMALL, render_time_limit=0.5), rects, RenderOptions()
        )
    assert _server_pid() != before


def test_each_request_accepts_only_its_own_kind_of_answer() -> None:
    with pytest.raises(UnsupportedImage, match="malformed"):
        sandbox.run_render_isolated(
            _decoded_for_a_render,  # type: ignore[arg-type]
            b"",
            SMALL,
            [Rect(0, 0, 1, 1)],
            RenderOptions(),
        )
    with pytest.raises(UnsupportedImage, match="malformed"):
        sandbox.run_isolated(_rendered_for_a_decode, b"", SMALL)  # type: ignore[arg-type]


def test_a_malformed_rendered_answer_is_refused_field_by_field() -> None:
    png = b"\x89PNG\r\n\x1a\n" + bytes(8)
    webp = b"RIFF\x10\x00\x00\x00WEBPVP8 "
    images = [
        _rendered(),
        RenderedImage(png, 5, 6, "png", "image/png"),
        RenderedImage(webp, 7, 8, "webp", "x"),
    ]
    good = decode_server.encode_rendered(images)
    parsed = decode_server.parse_body(bytearray(good))
    assert isinstance(parsed, list) and [(i.format, i.width, i.data) for i in parsed] == [
        ("jpeg", 40, _JPEG_BYTES),
        ("png", 5, png),
        ("webp", 7, webp),
    ]
    assert parsed[2].media_type == "image/webp"  # from the format, never from the server
    header = 2 + 13 * 3
    bad_bodies = [
        good[:-1],  # a length that does not add up
        good + b"x",
        good[:1] + b"\x00" + good[2:],  # no images
        good[:1] + b"\x09" + good[2:],  # more than a render makes
        good[:10] + b"\x09" + good[11:],  # format index 9
        good[:header] + b"\x00" + good[header + 1 :],  # the JPEG does not start as a JPEG
        decode_server.encode_rendered([_rendered(0, 5)]),  # an empty side
        decode_server.encode_rendered([_rendered(decode_server.MAX_SIDE + 1, 5)]),
        b"R",
    ]
    for bad in bad_bodies:
        assert isinstance(decode_server.parse_body(bytearray(bad)), UnsupportedImage)
    assert decode_server.render_body_cap(EngineConfig()) > decode_server.MAX_BODY  # larger, and bounded
    assert decode_server.render_body_cap(EngineConfig()) < EngineConfig().render_max_output_bytes + 1024

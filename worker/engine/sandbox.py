"""Run a decode in a separate process that cannot outlive its time budget or exceed its memory budget.

A C decoder cannot be interrupted from Python: no soft time limit reaches into ``cv2.imdecode``, and a
hard limit kills the whole worker child (and the job is then re-run as if the worker had failed). So the
pixels are decoded in a small decode server (:mod:`worker.engine.decode_server`), started lazily once
per process with ``subprocess`` (Celery's prefork children are daemonic and may not start
``multiprocessing`` children). It holds numpy, Pillow and OpenCV only (about 50 MB), and decodes under
- ``RLIMIT_AS``: its own address space plus the decode memory budget (and some slack), so an allocation
  the header estimate did not foresee fails there (MemoryError, or the server dies);
- ``RLIMIT_CPU``: moved before each image to what it used so far plus the time budget; the kernel stops
  a spinning decoder with SIGXCPU;
- a wall-clock deadline kept here, after which it is SIGKILLed (a decoder blocked, or starved of CPU,
  uses no CPU time).
Only the small analysis copy (long side 320-640 px) comes back, as raw pixels (never a pickle).
A render (:mod:`worker.engine.render`: decode, resize and encode every crop of one image) runs there
too, under the same limits and one time budget for all of it; its encoded images come back as a
checked list of bytes, capped by the render's output limit.

Why a server rather than a fork per image: forking the worker child (300-450 MB with onnxruntime and
the models) cost 14 ms per image on a quiet machine and up to 4x the decode under load; forking a small
zygote per image still cost about 13 ms on a busy 2-core machine (page faults of the fresh child, its
teardown, two more process hand-offs); decoding inside the server costs 1-3 ms (two pipe hand-offs of
the image and of the small copy). A server that failed in any way, timed out, grew, or served
``RECYCLE_AFTER`` images is replaced by a fresh one (about 0.3 s, paid by the next decode). Any failure
of the exchange itself (an interrupted wait, a broken pipe) kills it too. A lock makes the exchange
safe from several threads; a fork of this process starts its own server.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import pickle
import select
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from worker.engine import decode_server as wire
from worker.engine.config import EngineConfig
from worker.engine.decode import Decoded
from worker.engine.errors import CropError, ImageTooComplex, UnsupportedImage
from worker.engine.render import RenderedImage, RenderFn, RenderOptions
from worker.engine.types import Rect

last_child_peak_rss: int = 0
"""Peak RSS in bytes of the decode server during the last sandboxed decode or render (``VmHWM`` reset
before each image; the kernel's ``wait4`` figure when the image killed it): what the hostile-image and
render benchmarks report."""

_START_TIMEOUT = 60.0
"""Seconds the server may take to import numpy, Pillow and OpenCV and warm up (about 0.3 s)."""


class _Server:
    def __init__(self, budget: int) -> None:
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p))  # the same modules
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "worker.engine.decode_server", str(os.getpid()), str(budget)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env=env,
        )
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.inp, self.out = self.proc.stdin.fileno(), self.proc.stdout.fileno()
        self.budget, self.owner, self.ready = budget, os.getpid(), False
        wire.enlarge_pipe(self.inp)

    def wait_ready(self) -> None:
        """Wait for the server's greeting (it imports and warms up while the caller goes on)."""
        if self.ready:
            return
        hello = _read(self.out, len(wire.READY), time.monotonic() + _START_TIMEOUT)
        if hello is None or bytes(hello) != wire.READY:
            raise SandboxError("The decode process did not start")
        self.ready = True

    def kill(self) -> int:
        """Kill and reap the server; its wait status (its peak RSS goes to ``last_child_peak_rss``)."""
        global last_child_peak_rss
        status = 0
        if self.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.proc.pid, signal.SIGKILL)
            with contextlib.suppress(ChildProcessError):
                _, status, usage = os.wait4(self.proc.pid, 0)
                last_child_peak_rss = usage.ru_maxrss * 1024  # kB on Linux
            self.proc.returncode = -1
        self.close()
        return status

    def close(self) -> None:
        for pipe in (self.proc.stdin, self.proc.stdout):
            if pipe is not None:
                with contextlib.suppress(OSError):
                    pipe.close()


@dataclass(frozen=True, slots=True)
class _Limits:
    seconds: float
    """Wall-clock deadline here, CPU limit (``RLIMIT_CPU``) there."""
    max_body: int
    activity: str
    """What the image was doing, for the errors ("Decoding the image")."""


class SandboxError(RuntimeError):
    """The sandbox itself failed (not the image): the caller's ordinary error handling applies."""


_lock = threading.Lock()
_server: _Server | None = None


def _reference(fn: Callable[..., object]) -> str:
    name = getattr(fn, "__qualname__", "")
    if "<" in name or not name:
        raise ValueError(f"run_isolated needs a module-level function, not {fn!r}")
    return f"{fn.__module__}:{name}"


class _Ended(Exception):
    """The server closed its end: it died (the image killed it) or left."""


def _read(fd: int, n: int, deadline: float) -> bytearray | None:
    """Exactly ``n`` bytes, or ``None`` when the deadline passes first; :class:`_Ended` at end of file."""
    buf = bytearray(n)
    view, got = memoryview(buf), 0
    while got < n:
        left = deadline - time.monotonic()
        if left <= 0:
            return None
        if select.select([fd], [], [], left)[0]:
            k = os.readv(fd, [view[got:]])
            if k == 0:
                raise _Ended
            got += k
    return buf


def _drop() -> int:
    """Kill the current server (if any); its wait status."""
    global _server
    server, _server = _server, None
    return server.kill() if server is not None else 0


def _forget_after_fork() -> None:
    """In a forked child: the parent's server is not ours; drop our copies of its pipes."""
    global _server, _lock
    _lock = threading.Lock()
    server, _server = _server, None
    if server is not None:
        server.close()
        server.proc.returncode = 0  # not our child: nothing to reap


os.register_at_fork(after_in_child=_forget_after_fork)


@atexit.register
def _close() -> None:
    if _server is not None and _server.owner == os.getpid():
        _drop()


def _exchange(server: _Server, meta: bytes, data: bytes, limits: _Limits) -> bytearray:
    """Send one request and return the body; raises the image's error when the server died of it."""
    global last_child_peak_rss
    wire.write_all(server.inp, wire.REQUEST.pack(len(meta), len(data)), meta, data)
    deadline = time.monotonic() + limits.seconds
    late = f"{limits.activity} took longer than its time budget ({limits.seconds:g} s)"
    try:
        head = _read(server.out, wire.REPLY.size, deadline)
        if head is None:
            raise ImageTooComplex(late)
        flags, peak, size = wire.REPLY.unpack(head)
        if size > limits.max_body:
            raise UnsupportedImage("The decoder answered with a malformed result")
        body = _read(server.out, size, deadline)
    except _Ended:
        raise _death(_drop(), limits) from None
    if body is None:
        raise ImageTooComplex(late)
    if flags & wire.RETIRING:
        _drop()
    last_child_peak_rss = peak  # this image's peak (the lifetime peak that _drop noted is not)
    return body


def run_isolated(
    fn: Callable[[bytes, EngineConfig, int | None], Decoded],
    data: bytes,
    config: EngineConfig,
    long_side: int | None = None,
) -> Decoded:
    """``fn(data, config, long_side)`` in the decode server; its result, or the engine error it raised.

    ``fn`` is a module-level function (the server imports it by name). A decode that runs out of time
    raises :class:`ImageTooComplex`; one that hits its memory limit :class:`ImageTooLarge`; one that
    crashes the server :class:`UnsupportedImage`. Whatever happens here (even the caller's own time
    limit interrupting the wait) a server in an unknown state is killed, never reused.
    """
    limits = _Limits(config.decode_time_limit, wire.MAX_BODY, "Decoding the image")
    body = _call(fn, (long_side,), data, config, limits)
    result = wire.parse_body(body)
    if isinstance(result, CropError):
        raise result
    if not isinstance(result, Decoded):  # a render's answer to a decode: the server is not to be trusted
        raise UnsupportedImage("The decoder answered with a malformed result")
    return result


def run_render_isolated(
    fn: RenderFn,
    data: bytes,
    config: EngineConfig,
    rects: Sequence[Rect],
    options: RenderOptions,
) -> list[RenderedImage]:
    """``fn(data, config, rects, options)`` (a render: decode, resize and encode every crop) in the decode
    server, under the same memory limit, one time budget (``render_time_limit``) for all of it, and the
    same errors as :func:`run_isolated`; the encoded images, checked, or the engine error it raised."""
    limits = _Limits(config.render_time_limit, wire.render_body_cap(config), "Rendering the image")
    body = _call(fn, (tuple(rects), options), data, config, limits)
    result = wire.parse_body(body)
    if isinstance(result, CropError):
        raise result
    if not isinstance(result, list):
        raise UnsupportedImage("The renderer answered with a malformed result")
    return result


def _call(
    fn: Callable[..., object], args: tuple[object, ...], data: bytes, config: EngineConfig, limits: _Limits
) -> bytearray:
    """One request to this process's decode server (started, or replaced, as needed): its body."""
    global _server
    meta = pickle.dumps((_reference(fn), config, args, limits.seconds), protocol=pickle.HIGHEST_PROTOCOL)
    with _lock:
        server = _server
        if (
            server is None
            or server.owner != os.getpid()
            or server.budget != config.decode_memory_bytes
            or server.proc.poll() is not None
        ):
            _drop()
            server = _server = _Server(config.decode_memory_bytes)
        done = False
        try:
            try:
                server.wait_ready()
            except _Ended:
                raise SandboxError("The decode process did not start") from None
            body = _exchange(server, meta, data, limits)
            done = True
        finally:
            if not done:
                _drop()
            if _server is None:  # dropped: its successor starts now, ready by the next image
                with contextlib.suppress(Exception):
                    _server = _Server(config.decode_memory_bytes)
    return body


def _death(wait_status: int, limits: _Limits) -> CropError:
    """The error for a server that died without answering."""
    if os.WIFSIGNALED(wait_status):
        sig = os.WTERMSIG(wait_status)
        if sig in (signal.SIGXCPU, signal.SIGKILL):
            return ImageTooComplex(f"{limits.activity} used more than its CPU budget ({limits.seconds:g} s)")
        try:
            name = signal.Signals(sig).name
        except ValueError:
            name = str(sig)
        return UnsupportedImage(f"The decoder crashed on this image (signal {name})")
    return UnsupportedImage("The decoder stopped without a result")

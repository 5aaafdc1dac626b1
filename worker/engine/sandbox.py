"""Run a decode in a forked child that cannot outlive its time budget or exceed its memory budget.

A C decoder cannot be interrupted from Python: no soft time limit reaches into ``cv2.imdecode``, and a
hard limit kills the whole worker child (and the job is then re-run as if the worker had failed). So the
pixels are decoded in a child forked for the one image, with
- ``RLIMIT_AS``: the address space it inherited plus the decode memory budget (and some slack), so an
  allocation the header estimate did not foresee fails in the child (MemoryError, or the child dies);
- ``RLIMIT_CPU``: the time budget, rounded up; the kernel stops a spinning decoder with SIGXCPU;
- a wall-clock deadline kept by the caller, which SIGKILLs the child (a decoder blocked, or starved of
  CPU, uses no CPU time).
Only the small analysis copy (long side 320-640 px) comes back through a pipe, pickled by our own code.

``os.fork`` rather than ``multiprocessing``: Celery's prefork children are daemonic and may not start
``multiprocessing`` children. The child runs only the decoder (no thread of the parent is used), and
leaves with ``os._exit`` so that nothing of the parent (atexit hooks, buffered logs, sockets) runs twice.
"""

from __future__ import annotations

import contextlib
import faulthandler
import math
import os
import pickle
import resource
import select
import signal
import time
from collections.abc import Callable
from typing import TypeVar

from worker.engine.config import EngineConfig
from worker.engine.errors import CropError, ImageTooComplex, ImageTooLarge, UnsupportedImage

T = TypeVar("T")

last_child_peak_rss: int = 0
"""Peak RSS in bytes of the last sandboxed child, from the kernel's accounting (``wait4``): what the
hostile-image benchmark reports."""

_AS_SLACK = 256 * 1024 * 1024
"""Address space granted above the budget: malloc arenas and the decoder's own tables reserve more
address space than they touch."""


def _vm_size() -> int:
    """This process's address space in bytes (Linux ``VmSize``); 0 where /proc is missing."""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmSize:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def _child(
    fn: Callable[[bytes, EngineConfig, int | None], T],
    data: bytes,
    config: EngineConfig,
    long_side: int | None,
    out: int,
) -> None:
    """In the forked child: limit, run, send ``("ok", result)`` or ``("error", code class, message)``."""
    status = 0
    try:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)  # the parent's handlers are not ours
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        faulthandler.disable()  # a crash is reported by its signal, not dumped into the parent's log
        vm = _vm_size()
        if vm:
            limit = vm + config.decode_memory_bytes + _AS_SLACK
            resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
        used = resource.getrusage(resource.RUSAGE_SELF)
        cpu = int(used.ru_utime + used.ru_stime) + math.ceil(config.decode_time_limit)
        resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 1))
        try:
            payload: tuple[object, ...] = ("ok", fn(data, config, long_side))
        except CropError as exc:
            payload = ("error", type(exc).__name__, str(exc))
        except MemoryError:
            payload = (
                "error",
                "ImageTooLarge",
                "The image needs more memory to decode than its budget allows",
            )
        except Exception as exc:  # a decoder failing in any way is the image's fault, not the worker's
            payload = ("error", "UnsupportedImage", f"The image cannot be decoded: {type(exc).__name__}")
        blob = pickle.dumps(payload, protocol=pickle.HIGHEST_PROTOCOL)
        view = memoryview(blob)
        while view:
            view = view[os.write(out, view) :]
    except BaseException:
        status = 1
    finally:
        os._exit(status)


_ERRORS: dict[str, type[CropError]] = {
    cls.__name__: cls for cls in (UnsupportedImage, ImageTooLarge, ImageTooComplex)
}


def _read_until(fd: int, deadline: float) -> bytes | None:
    """Everything the child writes, or ``None`` when the deadline passes first."""
    chunks: list[bytes] = []
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            return None
        ready, _, _ = select.select([fd], [], [], left)
        if not ready:
            continue
        chunk = os.read(fd, 1 << 20)
        if not chunk:
            return b"".join(chunks)
        chunks.append(chunk)


def run_isolated(
    fn: Callable[[bytes, EngineConfig, int | None], T],
    data: bytes,
    config: EngineConfig,
    long_side: int | None = None,
) -> T:
    """``fn(data, config, long_side)`` in a sandboxed child; its result, or the engine error it raised.

    A child that runs out of time raises :class:`ImageTooComplex`; one killed by its memory limit
    :class:`ImageTooLarge`; one that crashes otherwise :class:`UnsupportedImage`. Whatever happens here
    (even the caller's own time limit interrupting the wait) the child is killed and reaped.
    """
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - runs in the child, which leaves through os._exit
        os.close(read_fd)
        _child(fn, data, config, long_side, write_fd)
    os.close(write_fd)
    reaped = False
    try:
        blob = _read_until(read_fd, time.monotonic() + config.decode_time_limit)
        if blob is None:
            raise ImageTooComplex(
                f"Decoding the image took longer than its time budget ({config.decode_time_limit:g} s)"
            )
        wait_status = _reap(pid)
        reaped = True
        if not blob:
            raise _death(wait_status, config)
        payload = pickle.loads(blob)
        if payload[0] == "ok":
            result: T = payload[1]
            return result
        raise _ERRORS.get(payload[1], UnsupportedImage)(payload[2])
    finally:
        os.close(read_fd)
        if not reaped:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            _reap(pid)


def _reap(pid: int) -> int:
    global last_child_peak_rss
    _, wait_status, usage = os.wait4(pid, 0)
    last_child_peak_rss = usage.ru_maxrss * 1024  # kB on Linux
    return wait_status


def _death(wait_status: int, config: EngineConfig) -> CropError:
    """The error for a child that died without answering."""
    if os.WIFSIGNALED(wait_status):
        sig = os.WTERMSIG(wait_status)
        if sig in (signal.SIGXCPU, signal.SIGKILL):
            return ImageTooComplex(
                f"Decoding the image used more than its CPU budget ({config.decode_time_limit:g} s)"
            )
        return UnsupportedImage(f"The decoder crashed on this image (signal {signal.Signals(sig).name})")
    return UnsupportedImage("The decoder stopped without a result")

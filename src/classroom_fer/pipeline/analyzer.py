"""The analysis API: detect every face, classify all faces of a frame in one batch, track, smooth.

``Analyzer.analyze_image`` handles stills; ``Analyzer.stream()`` gives a stateful
:class:`AnalysisStream` for live frames (webcam, web dashboard); ``Analyzer.analyze_video`` runs a
stream over a video file. See docs/analysis.md for the contract.
"""
from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass, field

import cv2
import numpy as np

from ..classes import CLASS_NAMES
from ..errors import UserError
from ..inference import load_classifier
from .alignment import align_faces
from .detection import Detection, make_detector
from .sources import open_video
from .tracking import Tracker

log = logging.getLogger(__name__)

# Some videos stop decoding before the frame count their header announces; only a real
# shortfall (more than this share of frames) is worth a warning.
FRAME_COUNT_SLACK = 0.05
MAX_BAD_FRAMES_IN_A_ROW = 50  # undecodable frames in a row taken as the end of a video that does not say its length


@dataclass
class Face:
    box: tuple[int, int, int, int]  # x1, y1, x2, y2 in pixels
    det_score: float
    label: str
    confidence: float
    probabilities: dict[str, float]
    track_id: str

    def to_dict(self) -> dict:
        return {
            "box": list(self.box),
            "det_score": round(self.det_score, 4),
            "label": self.label,
            "confidence": round(self.confidence, 4),
            "probabilities": {name: round(p, 6) for name, p in self.probabilities.items()},
            "track_id": self.track_id,
        }


@dataclass
class FrameResult:
    index: int
    time_s: float
    faces: list[Face]
    image: np.ndarray | None = field(default=None, repr=False)
    source: str = ""
    crops: np.ndarray | None = field(default=None, repr=False)  # aligned 48x48 faces, only with keep_crops

    def to_dict(self) -> dict:
        return {"index": self.index, "time_s": round(self.time_s, 3), "source": self.source,
                "faces": [face.to_dict() for face in self.faces]}


def _face(box: np.ndarray, score: float, probabilities: np.ndarray, track_id: str, width: int, height: int) -> Face:
    x1, y1, x2, y2 = np.round(box).astype(int)
    probabilities = np.asarray(probabilities, dtype=np.float64)
    probabilities = probabilities / probabilities.sum()
    best = int(np.argmax(probabilities))
    return Face(
        box=(int(np.clip(x1, 0, width)), int(np.clip(y1, 0, height)), int(np.clip(x2, 0, width)), int(np.clip(y2, 0, height))),
        det_score=float(score),
        label=CLASS_NAMES[best],
        confidence=float(probabilities[best]),
        probabilities={name: float(p) for name, p in zip(CLASS_NAMES, probabilities)},
        track_id=track_id,
    )


class Analyzer:
    """Face detector + expression classifier; one instance serves stills, videos and live streams."""

    def __init__(
        self,
        model: str | os.PathLike | None = None,
        backend: str = "auto",
        detector: str = "centerface",
        det_threshold: float = 0.5,
        min_face: int = 20,
        det_size: int = 640,
        half_life_s: float = 1.0,
        miss_budget_s: float = 2.0,
        threads: int | None = None,
        keep_crops: bool = False,
        tta: bool = True,
    ) -> None:
        self.classifier = load_classifier(model, backend=backend, threads=threads, tta=tta)
        self.detector = make_detector(detector, threshold=det_threshold, min_face=min_face, threads=threads, max_side=det_size)
        self.half_life_s = half_life_s
        self.miss_budget_s = miss_budget_s
        self.keep_crops = keep_crops

    def detect(self, image: np.ndarray) -> list[Detection]:
        """Faces in a BGR image, best first."""
        return self.detector.detect(_as_bgr(image))

    def classify(self, image: np.ndarray, detections: list[Detection]) -> tuple[np.ndarray, np.ndarray]:
        """Align all faces of a frame and classify them in one batch: (faces N x 48 x 48, probabilities N x 7)."""
        faces = align_faces(_as_bgr(image), detections, self.detector.name)
        return faces, self.classifier.predict_proba(faces)

    def analyze_image(self, image: np.ndarray) -> list[Face]:
        """All faces of one still image; ids S1, S2, ... from left to right."""
        return self._analyze_still(image)[0]

    def _analyze_still(self, image: np.ndarray) -> tuple[list[Face], np.ndarray]:
        image = _as_bgr(image)
        detections = self.detect(image)
        crops, probabilities = self.classify(image, detections)
        order = sorted(range(len(detections)), key=lambda i: detections[i].box[0])
        ids = {index: f"S{rank + 1}" for rank, index in enumerate(order)}
        height, width = image.shape[:2]
        faces = [_face(d.box, d.score, p, ids[i], width, height) for i, (d, p) in enumerate(zip(detections, probabilities))]
        return faces, crops

    def analyze_frame(self, image: np.ndarray, index: int = 0, source: str = "") -> FrameResult:
        """One still as a :class:`FrameResult` (time 0), for summaries and reports of photos."""
        faces, crops = self._analyze_still(image)
        return FrameResult(index, 0.0, faces, image, source, crops if self.keep_crops else None)

    def stream(self, source: str = "stream") -> AnalysisStream:
        """A stateful stream: tracking and smoothing across successive frames."""
        return AnalysisStream(self, source)

    def analyze_video(self, path: str | os.PathLike, fps: float | None = None) -> Iterator[FrameResult]:
        """Yield one :class:`FrameResult` per analysed frame; ``fps`` frames per second of video (None: all)."""
        capture = open_video(path)
        try:
            yield from self.analyze_capture(capture, str(path), fps)
        finally:
            capture.release()

    def analyze_capture(self, capture: cv2.VideoCapture, source: str, fps: float | None = None) -> Iterator[FrameResult]:
        """Like :meth:`analyze_video`, on an already opened ``cv2.VideoCapture`` of a file."""
        native_fps = capture.get(cv2.CAP_PROP_FPS)
        native_fps = native_fps if native_fps and np.isfinite(native_fps) and native_fps > 0 else 30.0
        expected = int(capture.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
        step_s = 1.0 / fps if fps else 0.0
        stream = self.stream(source)
        next_time = 0.0
        index = -1  # position of the last frame grabbed
        failures = skipped = analysed = 0
        while True:
            # A damaged frame fails to grab but the frames after it may decode: only a run of
            # failures, or failing past the announced frame count, ends the video.
            if not capture.grab():
                failures += 1
                if failures > MAX_BAD_FRAMES_IN_A_ROW or (expected and index + failures >= expected):
                    break
                continue
            index += failures + 1  # a failed grab still used up its frame
            skipped += failures
            failures = 0
            time_s = index / native_fps
            if time_s + 1e-6 < next_time:
                continue
            ok, frame = capture.retrieve()
            if not ok or frame is None:
                skipped += 1
                continue
            next_time = max(next_time + step_s, time_s) if step_s else time_s
            analysed += 1
            yield stream.process(frame, time_s, index=index)
        if analysed == 0:
            raise UserError(f"{source}: no readable video frames")
        if skipped:
            log.warning("%s: %d damaged frame(s) skipped; the frames around them were analysed", source, skipped)
        read = index + 1
        if expected and read < expected * (1 - FRAME_COUNT_SLACK):
            log.warning("%s: frames stop being readable at frame %d of %d; analysed the frames before it", source, read, expected)


class AnalysisStream:
    """Successive frames of one scene: gives faces stable ids and smooths their probabilities."""

    def __init__(self, analyzer: Analyzer, source: str = "stream") -> None:
        self.analyzer = analyzer
        self.source = source
        self.tracker = Tracker(miss_budget_s=analyzer.miss_budget_s, half_life_s=analyzer.half_life_s)
        self.frames_seen = 0

    def reset(self) -> None:
        """Forget all tracks (a new lesson or camera)."""
        self.tracker.reset()
        self.frames_seen = 0

    def process(self, image: np.ndarray, time_s: float, index: int | None = None) -> FrameResult:
        """Analyse one frame taken at ``time_s`` seconds (non-decreasing across calls)."""
        image = _as_bgr(image)
        detections = self.analyzer.detect(image)
        crops, probabilities = self.analyzer.classify(image, detections)
        boxes = np.array([d.box for d in detections], dtype=np.float64).reshape(-1, 4)
        tracks = self.tracker.update(boxes, probabilities, time_s)
        height, width = image.shape[:2]
        faces = [_face(d.box, d.score, t.probabilities, t.track_id, width, height) for d, t in zip(detections, tracks)]
        frame_index = self.frames_seen if index is None else index
        self.frames_seen += 1
        return FrameResult(frame_index, float(time_s), faces, image, self.source, crops if self.analyzer.keep_crops else None)


def _as_bgr(image: np.ndarray) -> np.ndarray:
    """Accept gray, BGR or BGRA uint8 frames; the detectors want 3-channel BGR."""
    if image is None or isinstance(image, (str, os.PathLike)):
        raise UserError(f"expected a decoded image (an H x W x 3 uint8 array), got {image!r}; "
                        "read files with classroom_fer.preprocessing.read_image (cv2.imread gives None when it fails)")
    image = np.asarray(image)
    if image.size == 0:
        raise UserError(f"expected an image, got an empty array of shape {image.shape}")
    if image.dtype != np.uint8:
        raise UserError(f"expected an 8-bit image, got dtype {image.dtype}")
    if image.ndim == 2:
        return cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
    if image.ndim == 3 and image.shape[2] == 4:
        return cv2.cvtColor(image, cv2.COLOR_BGRA2BGR)
    if image.ndim == 3 and image.shape[2] == 3:
        return image
    raise UserError(f"expected a gray, BGR or BGRA image, got shape {image.shape}")

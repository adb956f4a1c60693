"""Drawing faces on frames and writing the per-face records (detections.jsonl and detections.csv)."""
from __future__ import annotations

import csv
import json
from pathlib import Path

import cv2
import numpy as np

from ..classes import CLASS_NAMES

# One colour per class, shared by the annotated images (BGR) and the report's plots (RGB hex).
CLASS_COLOURS_HEX = {
    "angry": "#d62728",
    "disgust": "#8c8c00",
    "fear": "#9467bd",
    "happy": "#f2b701",
    "sad": "#1f77b4",
    "surprise": "#ff7f0e",
    "neutral": "#7f7f7f",
}


def _bgr(hex_colour: str) -> tuple[int, int, int]:
    red, green, blue = (int(hex_colour[i:i + 2], 16) for i in (1, 3, 5))
    return blue, green, red


CLASS_COLOURS_BGR = {name: _bgr(colour) for name, colour in CLASS_COLOURS_HEX.items()}
CSV_COLUMNS = ["source", "frame", "time_s", "track_id", "x1", "y1", "x2", "y2", "label", "confidence",
               *(f"p_{name}" for name in CLASS_NAMES)]


def draw_faces(image: np.ndarray, faces: list) -> np.ndarray:
    """A copy of ``image`` with each face's box, id, label and confidence in its class colour."""
    canvas = image.copy()
    scale = max(canvas.shape[:2]) / 1000
    thickness = max(1, round(2 * scale))
    font_scale = max(0.4, 0.6 * scale)
    for face in faces:
        x1, y1, x2, y2 = face.box
        colour = CLASS_COLOURS_BGR[face.label]
        cv2.rectangle(canvas, (x1, y1), (x2, y2), colour, thickness)
        text = f"{face.track_id} {face.label} {face.confidence:.2f}"
        (width, height), baseline = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, font_scale, 1)
        top = y1 - height - baseline - 2 if y1 - height - baseline - 2 >= 0 else y2
        cv2.rectangle(canvas, (x1, top), (x1 + width + 2, top + height + baseline + 2), colour, cv2.FILLED)
        text_colour = (0, 0, 0) if face.label in ("happy", "surprise", "neutral") else (255, 255, 255)
        cv2.putText(canvas, text, (x1 + 1, top + height + 1), cv2.FONT_HERSHEY_SIMPLEX, font_scale, text_colour, 1, cv2.LINE_AA)
    return canvas


def face_record(frame, face) -> dict:
    """One line of detections.jsonl."""
    return {
        "source": frame.source,
        "frame": frame.index,
        "time_s": round(frame.time_s, 3),
        "track_id": face.track_id,
        "box": list(face.box),
        "label": face.label,
        "confidence": round(face.confidence, 4),
        "probabilities": {name: round(face.probabilities[name], 6) for name in CLASS_NAMES},
    }


class DetectionWriter:
    """Streams every face to detections.jsonl and detections.csv as frames arrive."""

    def __init__(self, directory: Path) -> None:
        self.jsonl_path = directory / "detections.jsonl"
        self.csv_path = directory / "detections.csv"
        self._jsonl = self.jsonl_path.open("w", encoding="utf-8")
        self._csv_file = self.csv_path.open("w", encoding="utf-8", newline="")
        self._csv = csv.writer(self._csv_file)
        self._csv.writerow(CSV_COLUMNS)

    def write(self, frame) -> None:
        for face in frame.faces:
            record = face_record(frame, face)
            self._jsonl.write(json.dumps(record) + "\n")
            self._csv.writerow([record["source"], record["frame"], record["time_s"], record["track_id"], *record["box"],
                                record["label"], record["confidence"], *record["probabilities"].values()])

    def close(self) -> None:
        self._jsonl.close()
        self._csv_file.close()

    def __enter__(self) -> DetectionWriter:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class VideoSink:
    """Annotated video (mp4v), opened on the first frame so its size is known."""

    def __init__(self, path: Path, fps: float) -> None:
        self.path = path
        self.fps = fps
        self.writer: cv2.VideoWriter | None = None

    def write(self, image: np.ndarray) -> None:
        if self.writer is None:
            height, width = image.shape[:2]
            self.writer = cv2.VideoWriter(str(self.path), cv2.VideoWriter_fourcc(*"mp4v"), self.fps, (width, height))
            if not self.writer.isOpened():
                raise OSError(f"{self.path} could not be created")
        self.writer.write(image)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.release()


def save_crops(directory: Path, frame, stem: str) -> None:
    """The aligned 48x48 faces the model saw (only with --save-crops)."""
    if frame.crops is None:
        return
    directory.mkdir(parents=True, exist_ok=True)
    for face, crop in zip(frame.faces, frame.crops):
        path = directory / f"{stem}_f{frame.index:06d}_{face.track_id}.png"
        if not cv2.imwrite(str(path), crop):
            raise OSError(f"{path} could not be written")

"""Checking uploads by their content: images are decoded with OpenCV, videos opened with OpenCV's
VideoCapture, and a file's name or extension is never trusted (or used: files on disk get
server-made names).

The request body's size is capped by FastAPI's ``max_body_size`` while it streams in; the checks
here come after, on what was received.
"""
from __future__ import annotations

import shutil
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import cv2
import numpy as np
from fastapi import HTTPException

IMAGE_FORMATS = "JPEG, PNG, WebP, BMP or TIFF"


def decode_image(source: BinaryIO, max_pixels: int) -> np.ndarray:
    """An uploaded file -> BGR uint8 image, or an HTTP 4xx that says what is wrong.

    The size an image *declares* is read from its header first (Pillow reads headers without
    decoding), so a small file claiming 20000 x 20000 pixels is refused before OpenCV would
    allocate a buffer for it, and a non-image is refused before it is read into memory.
    """
    if not source.read(1):
        raise HTTPException(422, "the uploaded file is empty")
    source.seek(0)
    width, height = _declared_size(source, max_pixels)
    if width * height > max_pixels:
        raise HTTPException(413, f"the image is {width} x {height} pixels; the limit is {_megapixels(max_pixels)} megapixels")
    source.seek(0)
    image = cv2.imdecode(np.frombuffer(source.read(), np.uint8), cv2.IMREAD_COLOR)
    if image is None or image.size == 0:
        raise HTTPException(415, f"the file could not be decoded as an image (send a {IMAGE_FORMATS} picture)")
    return image


def _declared_size(source: BinaryIO, max_pixels: int) -> tuple[int, int]:
    from PIL import Image, UnidentifiedImageError

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(source) as header:  # a file object passed in stays open
                return header.size
    except Image.DecompressionBombError:
        raise HTTPException(413, f"the image declares far more pixels than the limit of {_megapixels(max_pixels)} megapixels") from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError):
        raise HTTPException(415, f"the file is not an image this server reads (send a {IMAGE_FORMATS} picture)") from None


def _megapixels(pixels: int) -> str:
    return f"{pixels / 1e6:g}"


@dataclass
class VideoInfo:
    width: int
    height: int
    fps: float
    frames: int

    @property
    def duration_s(self) -> float | None:
        """Length from the container's frame count and rate; None where the container does not say."""
        if self.fps > 0 and self.frames > 0:
            return self.frames / self.fps
        return None


def save_upload(source: BinaryIO, path: Path) -> None:
    """Copy an upload (already size-capped) to a server-named file."""
    with open(path, "wb") as target:
        shutil.copyfileobj(source, target, length=1 << 20)


def probe_video(path: Path, max_pixels: int) -> VideoInfo:
    """Open a saved upload with OpenCV and read its first frame: the content decides, not the name."""
    capture = cv2.VideoCapture(str(path))
    try:
        if not capture.isOpened():
            raise HTTPException(415, "the file could not be opened as a video (send an MP4, AVI, MKV, MOV or WebM file)")
        width = int(capture.get(cv2.CAP_PROP_FRAME_WIDTH))
        height = int(capture.get(cv2.CAP_PROP_FRAME_HEIGHT))
        if width * height > max_pixels:
            raise HTTPException(413, f"the video is {width} x {height} pixels; the limit is {_megapixels(max_pixels)} megapixels")
        ok, frame = capture.read()
        if not ok or frame is None:
            raise HTTPException(415, "the video has no frame that could be decoded")
        return VideoInfo(width=frame.shape[1], height=frame.shape[0], fps=float(capture.get(cv2.CAP_PROP_FPS) or 0.0),
                         frames=int(capture.get(cv2.CAP_PROP_FRAME_COUNT) or 0))
    finally:
        capture.release()

"""What ``analyze`` can read: an image, a folder of images, a video file, a webcam, the demo photo."""
from __future__ import annotations

import logging
import os
import re
import warnings
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from ..errors import UserError

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".gif", ".jfif"}
VIDEO_SUFFIXES = {".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv", ".flv", ".3gp"}
_WEBCAM = re.compile(r"^(?:webcam:)?(\d+)$")
DEMO_NAME = "astronaut.png"


@dataclass
class Source:
    kind: str  # "image", "folder", "video", "webcam" or "demo"
    name: str  # what messages and outputs call it
    path: Path | None = None
    camera: int | None = None


def resolve_source(text: str | None, demo: bool = False) -> Source:
    """Classify the SOURCE argument; raises UserError for anything that cannot be analysed."""
    if demo:
        if text is not None:
            raise UserError(f"{text}: give either a SOURCE or --demo, not both")
        return Source("demo", DEMO_NAME)
    if text is None:
        raise UserError("no SOURCE given (an image, a folder, a video, webcam:N, or --demo)")
    match = _WEBCAM.match(text.strip())
    if match and not Path(text).exists():
        return Source("webcam", f"webcam:{match.group(1)}", camera=int(match.group(1)))
    path = Path(text)
    if not path.exists():
        raise UserError(f"{path}: no such file or folder")
    if path.is_dir():
        return Source("folder", str(path), path)
    if path.suffix.lower() in VIDEO_SUFFIXES:
        return Source("video", str(path), path)
    if path.suffix.lower() in IMAGE_SUFFIXES:
        return Source("image", str(path), path)
    # Unknown extension: decide by content.
    if _looks_like_image(path):
        return Source("image", str(path), path)
    _quiet_opencv()
    capture = cv2.VideoCapture(str(path))
    opened = capture.isOpened() and capture.grab()
    capture.release()
    if opened:
        return Source("video", str(path), path)
    raise UserError(f"{path}: not an image or video that can be read")


def _quiet_opencv() -> None:
    """OpenCV's video back ends log each failed probe; our UserError says it once, in one line."""
    if "OPENCV_LOG_LEVEL" not in os.environ:
        cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_SILENT)


def _looks_like_image(path: Path) -> bool:
    from PIL import Image, UnidentifiedImageError

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path):
                return True
    except Image.DecompressionBombError:
        return True  # an image, which read_image will refuse for its size
    except (UnidentifiedImageError, OSError):
        return False


def list_folder(folder: Path, exclude: Path | None = None) -> tuple[list[Path], list[Path]]:
    """Images under ``folder`` (recursive, sorted) and the other files found there (to warn about).

    Hidden files and the ``exclude`` folder (the run's own output, when it lies inside) are left out.
    A subfolder that cannot be listed is a warning; ``folder`` itself not being readable is an error.
    """
    excluded = exclude.resolve() if exclude is not None else None

    def unreadable(error: OSError) -> None:
        if Path(error.filename) == folder:
            raise UserError(f"{folder}: folder not readable ({error.strerror})")
        log.warning("%s: folder not readable (%s), skipped", error.filename, error.strerror)

    images, others = [], []
    for root, folders, names in os.walk(folder, onerror=unreadable):
        folders[:] = [name for name in folders if not name.startswith(".")]
        for path in (Path(root, name) for name in names if not name.startswith(".")):
            if not path.is_file() or (excluded is not None and path.resolve().is_relative_to(excluded)):
                continue
            (images if path.suffix.lower() in IMAGE_SUFFIXES else others).append(path)
    return sorted(images), sorted(others)


def demo_image() -> np.ndarray:
    """The public-domain astronaut portrait shipped inside scikit-image, as BGR."""
    from skimage import data

    return cv2.cvtColor(data.astronaut(), cv2.COLOR_RGB2BGR)


def open_video(path: str | os.PathLike) -> cv2.VideoCapture:
    _quiet_opencv()
    capture = cv2.VideoCapture(str(path))
    if not capture.isOpened():
        capture.release()
        raise UserError(f"{path}: not a readable video")
    return capture


def open_webcam(camera: int) -> cv2.VideoCapture:
    _quiet_opencv()
    capture = cv2.VideoCapture(camera)
    if not capture.isOpened() or not capture.grab():
        capture.release()
        raise UserError(f"webcam:{camera}: cannot be opened (is a camera connected and free?)")
    return capture

"""The single preprocessing path from any face image to the model's input.

Training, evaluation and inference all go through :func:`to_fer_face` (any image -> 48x48
grayscale uint8, the FER2013 format) and :func:`faces_to_input` (uint8 faces -> float32 in
[0, 1], N x 1 x 48 x 48). Resizing to the network's input size, the 0.5/0.5 normalisation and
grayscale -> 3 channels happen inside the model itself, so an exported ONNX graph cannot drift
from training. Image files, for datasets and for analysis alike, are decoded by :func:`read_image`.
"""
from __future__ import annotations

import os
import warnings

import cv2
import numpy as np

from .errors import UserError

FACE_SIZE = 48
# Largest image decoded from a file. The size in the header is checked before any pixel is decoded,
# so a small file declaring 20000 x 20000 pixels costs nothing; 100 megapixels (a 300 MB RGB buffer)
# is above what phones and DSLRs write today.
MAX_IMAGE_PIXELS = 100_000_000


def to_fer_face(image: np.ndarray) -> np.ndarray:
    """Convert an image (gray, BGR or BGRA; uint8 or uint16) to a 48x48 grayscale uint8 face."""
    if image.dtype == np.uint16:
        image = (image >> 8).astype(np.uint8)
    elif image.dtype != np.uint8:
        image = np.clip(image, 0, 255).astype(np.uint8)
    if image.ndim == 3:
        if image.shape[2] == 4:
            image = cv2.cvtColor(image, cv2.COLOR_BGRA2GRAY)
        elif image.shape[2] == 3:
            image = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
        else:
            image = image[:, :, 0]
    if image.shape != (FACE_SIZE, FACE_SIZE):
        shrinking = image.shape[0] > FACE_SIZE or image.shape[1] > FACE_SIZE
        interpolation = cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR
        image = cv2.resize(image, (FACE_SIZE, FACE_SIZE), interpolation=interpolation)
    return np.ascontiguousarray(image)


def faces_to_input(faces: np.ndarray) -> np.ndarray:
    """uint8 faces (N x 48 x 48) -> float32 model input (N x 1 x 48 x 48) in [0, 1]."""
    faces = np.asarray(faces)
    if faces.ndim == 2:
        faces = faces[None]
    return (faces.astype(np.float32) / 255.0)[:, None, :, :]


def read_image(path: str | os.PathLike, max_pixels: int = MAX_IMAGE_PIXELS) -> np.ndarray:
    """Decode an image file fully into BGR uint8, upright by its EXIF orientation.

    Pillow rather than cv2.imread: OpenCV silently returns a half-grey picture for a truncated
    JPEG and prints libjpeg's complaints on stderr, while Pillow reports it as an error. 16-bit
    images keep their contrast (Pillow's own conversion clips them to white), CMYK becomes RGB and
    an alpha channel is dropped. Raises UserError for anything that is not a readable image.
    """
    from PIL import Image, ImageOps, UnidentifiedImageError

    try:
        handle = open(path, "rb")
    except OSError as error:
        raise UserError(f"{path}: cannot read ({error.strerror})") from None
    try:
        with handle, warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # our own cap applies below
            with Image.open(handle) as image:
                width, height = image.size
                if width * height > max_pixels:
                    raise UserError(f"{path}: image of {width} x {height} pixels is over the limit of {max_pixels / 1e6:g} megapixels")
                image.load()
                image = ImageOps.exif_transpose(image)
                if image.mode.startswith("I"):  # 16-bit gray
                    gray = (np.clip(np.asarray(image, dtype=np.int64), 0, 65535) >> 8).astype(np.uint8)
                    return cv2.cvtColor(gray, cv2.COLOR_GRAY2BGR)
                return cv2.cvtColor(np.asarray(image.convert("RGB")), cv2.COLOR_RGB2BGR)
    except Image.DecompressionBombError:
        raise UserError(f"{path}: image declares far more pixels than the limit of {max_pixels / 1e6:g} megapixels") from None
    except UnidentifiedImageError:
        raise UserError(f"{path}: not an image that can be read") from None
    except (OSError, ValueError, SyntaxError) as error:
        raise UserError(f"{path}: unreadable image ({str(error).splitlines()[0] if str(error) else type(error).__name__})") from None

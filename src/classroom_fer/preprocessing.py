"""The single preprocessing path from any face image to the model's input.

Training, evaluation and inference all go through :func:`to_fer_face` (any image -> 48x48
grayscale uint8, the FER2013 format) and :func:`faces_to_input` (uint8 faces -> float32 in
[0, 1], N x 1 x 48 x 48). Resizing to the network's input size, the 0.5/0.5 normalisation and
grayscale -> 3 channels happen inside the model itself, so an exported ONNX graph cannot drift
from training.
"""
from __future__ import annotations

import cv2
import numpy as np

FACE_SIZE = 48


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

"""Cut a detected face out of a frame with FER2013's framing, upright, as the model's 48x48 input.

The framing was measured, not guessed: CenterFace run on 600 FER2013 training faces (upscaled and
padded) finds its own box at 0.81 x 0.90 of the 48x48 frame, centred at (0.50, 0.52), with the eyes
at 0.41 of the height; OpenCV's Haar box covers 0.97 of the frame, centred. FER2013 itself was cut
out by a face detector's box, so placing the crop by the box reproduces its framing better than
placing it by the eyes (checked on re-embedded FER2013 test faces, see docs/analysis.md); the eye
landmarks, where the detector gives them, set the rotation that turns the face upright.
"""
from __future__ import annotations

import math

import cv2
import numpy as np

from ..preprocessing import FACE_SIZE, to_fer_face
from .detection import Detection

CROP_SCALE = {"centerface": 1.17, "haar": 1.03}  # FER frame side / mean box side, per detector
BOX_CENTRE = {"centerface": (0.504, 0.521), "haar": (0.5, 0.497)}  # box centre in the FER frame
MAX_TILT_DEG = 60.0  # eye lines steeper than this are landmark errors, not head tilt
MAX_CROP = 144  # warp at most at 3x the model's size, then to_fer_face shrinks with INTER_AREA


def _crop_side(detection: Detection, detector: str) -> float:
    x1, y1, x2, y2 = detection.box
    return CROP_SCALE[detector] * float((x2 - x1) + (y2 - y1)) / 2


def roll_angle(detection: Detection) -> float:
    """Head roll in degrees from the eye landmarks (0 without landmarks or when they are implausible)."""
    if detection.landmarks is None:
        return 0.0
    left_eye, right_eye = sorted(detection.landmarks[:2].astype(np.float64).tolist())
    angle = math.degrees(math.atan2(right_eye[1] - left_eye[1], right_eye[0] - left_eye[0]))
    return angle if abs(angle) <= MAX_TILT_DEG else 0.0


def face_transform(detection: Detection, detector: str, size: int) -> np.ndarray:
    """2x3 affine matrix from the frame to an upright ``size`` x ``size`` FER-framed face."""
    x1, y1, x2, y2 = detection.box.astype(np.float64)
    centre = ((x1 + x2) / 2, (y1 + y2) / 2)
    matrix = cv2.getRotationMatrix2D(centre, roll_angle(detection), size / _crop_side(detection, detector))
    matrix[:, 2] += np.array(BOX_CENTRE[detector]) * size - np.array(centre)
    return matrix


def align_face(image: np.ndarray, detection: Detection, detector: str = "centerface") -> np.ndarray:
    """BGR frame + detection -> 48x48 grayscale uint8 face, through the model's own ``to_fer_face``."""
    size = int(np.clip(round(_crop_side(detection, detector)), FACE_SIZE, MAX_CROP))
    matrix = face_transform(detection, detector, size)
    crop = cv2.warpAffine(image, matrix, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    return to_fer_face(crop)


def align_faces(image: np.ndarray, detections: list[Detection], detector: str = "centerface") -> np.ndarray:
    """All faces of a frame as one uint8 batch (N x 48 x 48) for ``predict_proba``."""
    if not detections:
        return np.zeros((0, FACE_SIZE, FACE_SIZE), np.uint8)
    return np.stack([align_face(image, detection, detector) for detection in detections])

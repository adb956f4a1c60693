"""Face detection and alignment on real photographs (../shared/data/group-photos, FER2013)."""
from __future__ import annotations

import xml.etree.ElementTree as ElementTree
from pathlib import Path

import cv2
import numpy as np
import pytest

from classroom_fer.pipeline.alignment import align_face, roll_angle
from classroom_fer.pipeline.detection import CenterFaceDetector, Detection, HaarDetector, make_detector
from classroom_fer.pipeline.sources import demo_image
from classroom_fer.pipeline.tracking import box_iou

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
GROUP_PHOTOS = SHARED / "data" / "group-photos"
FER_TEST = SHARED / "data" / "fer2013" / "test"


def annotated_faces() -> dict[str, np.ndarray]:
    """Hand-made boxes of training.xml and testing.xml as {file: N x 4 [x1, y1, x2, y2]}."""
    faces = {}
    for name in ("training.xml", "testing.xml"):
        for image in ElementTree.parse(GROUP_PHOTOS / name).getroot().iter("image"):
            boxes = [[int(b.get("left")), int(b.get("top")), int(b.get("left")) + int(b.get("width")),
                      int(b.get("top")) + int(b.get("height"))] for b in image.iter("box")]
            faces[image.get("file")] = np.array(boxes, dtype=np.float64)
    return faces


@pytest.fixture(scope="module")
def centerface() -> CenterFaceDetector:
    return make_detector("centerface")


def match(truth: np.ndarray, detections: list[Detection]) -> tuple[int, int]:
    """(annotated faces found with IoU >= 0.3, detections matching no annotated face)."""
    if not detections:
        return 0, 0
    iou = box_iou(truth, np.array([d.box for d in detections], dtype=np.float64))
    found = int((iou.max(axis=1) >= 0.3).sum())
    false = int((iou.max(axis=0) < 0.3).sum())
    return found, false


def test_centerface_finds_the_annotated_faces_with_few_false_detections(centerface):
    truth = annotated_faces()
    assert sum(len(boxes) for boxes in truth.values()) == 43
    found = false = 0
    for name, boxes in truth.items():
        detections = centerface.detect(cv2.imread(str(GROUP_PHOTOS / name)))
        hits, extra = match(boxes, detections)
        found += hits
        false += extra
    dogs = centerface.detect(cv2.imread(str(GROUP_PHOTOS / "dogs.jpg")))
    assert found >= 42, f"found {found} of 43 annotated faces"
    assert false + len(dogs) <= 2, f"{false} false detections on the photos, {len(dogs)} on dogs.jpg"
    assert dogs == [], f"faces reported on dogs.jpg: {[d.box.tolist() for d in dogs]}"


def test_centerface_landmarks_lie_on_the_face(centerface):
    image = cv2.imread(str(GROUP_PHOTOS / "2008_002079.jpg"))
    detections = centerface.detect(image)
    assert len(detections) >= 5
    for detection in detections:
        x1, y1, x2, y2 = detection.box
        left_eye, right_eye, nose, mouth_left, mouth_right = detection.landmarks
        assert (detection.landmarks[:, 0] >= x1).all() and (detection.landmarks[:, 0] <= x2).all()
        assert (detection.landmarks[:, 1] >= y1).all() and (detection.landmarks[:, 1] <= y2).all()
        assert left_eye[0] < right_eye[0] and mouth_left[0] < mouth_right[0]
        assert max(left_eye[1], right_eye[1]) < nose[1] < min(mouth_left[1], mouth_right[1])


def test_min_face_and_threshold_filter_detections():
    image = cv2.imread(str(GROUP_PHOTOS / "2008_004176.jpg"))  # seven faces of about 37 px
    assert len(make_detector("centerface", min_face=20).detect(image)) == 7
    assert make_detector("centerface", min_face=60).detect(image) == []
    assert make_detector("centerface", threshold=0.999).detect(image) == []


def test_detection_works_on_large_images_through_downscaling(centerface):
    image = cv2.imread(str(GROUP_PHOTOS / "bald_guys.jpg"))  # 1986 x 1545, many faces, no annotations
    detections = centerface.detect(image)
    assert len(detections) >= 15
    height, width = image.shape[:2]
    for detection in detections:
        x1, y1, x2, y2 = detection.box
        assert 0 <= x1 < x2 <= width and 0 <= y1 < y2 <= height


def test_haar_detector_finds_most_annotated_faces():
    haar = HaarDetector()
    truth = annotated_faces()
    found = sum(match(boxes, haar.detect(cv2.imread(str(GROUP_PHOTOS / name))))[0] for name, boxes in truth.items())
    assert found >= 35
    assert all(d.landmarks is None for d in haar.detect(cv2.imread(str(GROUP_PHOTOS / "2008_007676.jpg"))))


def test_demo_photo_has_one_face(centerface):
    detections = centerface.detect(demo_image())
    assert len(detections) == 1


def _fer_faces(count: int) -> list[np.ndarray]:
    paths = sorted(FER_TEST.glob("*/*.jpg"))[:: max(1, len(sorted(FER_TEST.glob("*/*.jpg"))) // count)][:count]
    faces = [cv2.imread(str(path), cv2.IMREAD_GRAYSCALE) for path in paths]
    return [face for face in faces if face.std() > 10]


def _embed(face: np.ndarray, angle: float) -> np.ndarray:
    """A FER face upscaled 3x into a larger scene and rotated by ``angle`` degrees (counter-clockwise)."""
    large = cv2.resize(face, (144, 144), interpolation=cv2.INTER_CUBIC)
    scene = cv2.copyMakeBorder(large, 80, 80, 80, 80, cv2.BORDER_CONSTANT, value=int(face.mean()))
    rotation = cv2.getRotationMatrix2D((152, 152), angle, 1.0)
    scene = cv2.warpAffine(scene, rotation, (304, 304), borderValue=int(face.mean()))
    return cv2.cvtColor(scene, cv2.COLOR_GRAY2BGR)


def _correlation(a: np.ndarray, b: np.ndarray) -> float:
    a = a.astype(np.float64).ravel() - a.mean()
    b = b.astype(np.float64).ravel() - b.mean()
    return float(a @ b / np.sqrt((a @ a) * (b @ b)))


def test_alignment_turns_faces_upright_with_fer_framing(centerface):
    """Rotated FER faces come back upright, framed like the original 48x48 image."""
    upright, unrotated, roll_errors = [], [], []
    for number, face in enumerate(_fer_faces(60)):
        angle = 25.0 if number % 2 else -25.0
        scene = _embed(face, angle)
        detections = centerface.detect(scene)
        if not detections:
            continue
        detection = detections[0]
        roll_errors.append(abs(roll_angle(detection) + angle))
        aligned = align_face(scene, detection)
        assert aligned.shape == (48, 48) and aligned.dtype == np.uint8
        upright.append(_correlation(aligned, face))
        unrotated.append(_correlation(align_face(scene, Detection(detection.box, detection.score, None)), face))
    assert len(upright) >= 40
    assert np.median(roll_errors) < 10, "the eye landmarks do not recover the applied rotation"
    assert np.median(upright) > 0.35, "aligned faces do not look like the original FER faces"
    assert np.median(upright) > np.median(unrotated) + 0.1, "turning faces upright does not help"

"""Tracking ids and probability smoothing, on synthetic boxes and on a video made from a group photo."""
from __future__ import annotations

import xml.etree.ElementTree as ElementTree
from pathlib import Path

import cv2
import numpy as np
import pytest

from classroom_fer.classes import CLASS_NAMES, class_index
from classroom_fer.pipeline import Analyzer
from classroom_fer.pipeline.tracking import Tracker, box_iou, ema_weight

GROUP_PHOTOS = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "group-photos"
UNIFORM = np.full(len(CLASS_NAMES), 1 / len(CLASS_NAMES))


def one_hot(name: str) -> np.ndarray:
    probabilities = np.zeros(len(CLASS_NAMES))
    probabilities[class_index(name)] = 1.0
    return probabilities


def boxes_at(*corners) -> np.ndarray:
    return np.array([[x, y, x + 40, y + 40] for x, y in corners], dtype=np.float64)


def test_ids_follow_moving_faces_and_survive_short_misses():
    tracker = Tracker(miss_budget_s=1.0, half_life_s=0.5)
    ids = [t.track_id for t in tracker.update(boxes_at((100, 100), (300, 100)), np.stack([UNIFORM] * 2), 0.0)]
    assert ids == ["S1", "S2"]
    for step in range(1, 10):  # both move 15 px per frame at 10 fps; order of boxes in the input swaps
        tracks = tracker.update(boxes_at((300 + 15 * step, 100), (100 + 15 * step, 100)), np.stack([UNIFORM] * 2), step / 10)
        assert [t.track_id for t in tracks] == ["S2", "S1"]
    # S1 is missed for 0.6 s (inside the 1 s budget) and reappears where its motion predicts.
    for step in range(10, 16):
        assert [t.track_id for t in tracker.update(boxes_at((300 + 15 * step, 100)), UNIFORM[None], step / 10)] == ["S2"]
    tracks = tracker.update(boxes_at((100 + 15 * 16, 100), (300 + 15 * 16, 100)), np.stack([UNIFORM] * 2), 1.6)
    assert [t.track_id for t in tracks] == ["S1", "S2"]
    # Gone longer than the budget: a face there is a new student.
    tracker.update(np.zeros((0, 4)), np.zeros((0, 7)), 2.0)
    tracks = tracker.update(boxes_at((100 + 15 * 16, 100)), UNIFORM[None], 2.9)
    assert [t.track_id for t in tracks] == ["S3"]


def test_a_face_that_stops_or_turns_back_keeps_its_id():
    tracker = Tracker(miss_budget_s=2.0)
    for step in range(6):
        tracker.update(boxes_at((100 + 20 * step, 50)), UNIFORM[None], step / 10)
    # Missing for 0.5 s, then back at its last position (the pan reversed): still S1.
    assert tracker.update(boxes_at((200, 50)), UNIFORM[None], 1.0)[0].track_id == "S1"


def test_distant_or_much_larger_boxes_start_new_tracks():
    tracker = Tracker()
    tracker.update(boxes_at((100, 100)), UNIFORM[None], 0.0)
    assert tracker.update(boxes_at((400, 300)), UNIFORM[None], 0.1)[0].track_id == "S2"
    big = np.array([[380, 280, 560, 460]], dtype=np.float64)
    assert tracker.update(big, UNIFORM[None], 0.2)[0].track_id == "S3"


def test_time_going_backwards_is_refused():
    tracker = Tracker()
    tracker.update(boxes_at((0, 0)), UNIFORM[None], 1.0)
    with pytest.raises(ValueError):
        tracker.update(boxes_at((0, 0)), UNIFORM[None], 0.5)
    tracker.reset()
    assert tracker.update(boxes_at((0, 0)), UNIFORM[None], 0.5)[0].track_id == "S1"


def test_ema_half_life_is_in_seconds_whatever_the_frame_rate():
    assert ema_weight(1.0, 1.0) == pytest.approx(0.5)
    assert ema_weight(0.3, 0.0) == 1.0
    results = []
    for fps in (5, 30):
        tracker = Tracker(half_life_s=1.0)
        tracker.update(boxes_at((50, 50)), one_hot("neutral")[None], 0.0)
        for frame in range(1, fps + 1):  # the student smiles from t > 0 on, for one second
            track = tracker.update(boxes_at((50, 50)), one_hot("happy")[None], frame / fps)[0]
        results.append(track.probabilities)
    for probabilities in results:
        assert probabilities[class_index("happy")] == pytest.approx(0.5, abs=1e-9)
        assert probabilities.sum() == pytest.approx(1.0)


def _pan_video(path: Path, fps: float = 10.0) -> tuple[list[int], np.ndarray, float]:
    """A slow pan across 2008_007676.jpg and back, 640x480: the leftmost face leaves and returns.

    Returns the window's left edge per frame, the annotated boxes and the zoom factor.
    """
    photo = cv2.imread(str(GROUP_PHOTOS / "2008_007676.jpg"))  # 500 x 334, seven annotated faces
    root = ElementTree.parse(GROUP_PHOTOS / "testing.xml").getroot()
    image = next(i for i in root.iter("image") if i.get("file") == "2008_007676.jpg")
    truth = np.array([[int(b.get("left")), int(b.get("top")), int(b.get("left")) + int(b.get("width")),
                       int(b.get("top")) + int(b.get("height"))] for b in image.iter("box")], dtype=np.float64)
    width, height, top, zoom = 300, 225, 20, 640 / 300
    offsets = [round(x) for x in np.concatenate([np.linspace(0, 190, 20), np.full(3, 190), np.linspace(190, 0, 20)])]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps, (640, 480))
    for left in offsets:
        window = photo[top:top + height, left:left + width]
        writer.write(cv2.resize(window, (640, 480), interpolation=cv2.INTER_LINEAR))
    writer.release()
    return offsets, truth, zoom


@pytest.fixture(scope="module")
def analyzer() -> Analyzer:
    return Analyzer(backend="onnx", half_life_s=1.0, miss_budget_s=2.0)


def test_track_ids_stay_stable_through_a_pan_in_a_real_video(tmp_path, analyzer):
    video = tmp_path / "pan.avi"
    offsets, truth, zoom = _pan_video(video)
    ids_per_face: dict[int, set[str]] = {i: set() for i in range(len(truth))}
    seen_leftmost = []
    frames = list(analyzer.analyze_video(video))
    assert [f.index for f in frames] == list(range(len(offsets)))
    assert frames[1].time_s == pytest.approx(0.1)
    for frame, left in zip(frames, offsets):
        in_frame = (truth - [left, 20, left, 20]) * zoom
        if not frame.faces:
            seen_leftmost.append(False)
            continue
        iou = box_iou(in_frame, np.array([f.box for f in frame.faces], dtype=np.float64))
        for face_number, face in enumerate(frame.faces):
            best = int(iou[:, face_number].argmax())
            assert iou[best, face_number] >= 0.3, f"frame {frame.index}: {face.box} is not an annotated face"
            ids_per_face[best].add(face.track_id)
        leftmost = int(truth[:, 0].argmin())
        seen_leftmost.append(bool((iou[leftmost] >= 0.3).any()))
    assert all(len(ids) == 1 for ids in ids_per_face.values()), ids_per_face
    all_ids = [next(iter(ids)) for ids in ids_per_face.values()]
    assert len(set(all_ids)) == len(truth), "two students share an id"
    # The leftmost student really left the picture for a while, then came back.
    first_gone = seen_leftmost.index(False)
    assert seen_leftmost[0] and not any(seen_leftmost[first_gone:first_gone + 3]) and seen_leftmost[-1]


def test_fps_option_samples_frames_by_video_time(tmp_path, analyzer):
    video = tmp_path / "pan.avi"
    offsets, _, _ = _pan_video(video)
    frames = list(analyzer.analyze_video(video, fps=2.5))
    assert [f.index for f in frames] == list(range(0, len(offsets), 4))
    assert np.allclose(np.diff([f.time_s for f in frames]), 0.4)


class BrightnessClassifier:
    """Stands in for the model so that the expected probabilities move with the pixels: happier when brighter."""

    backend = "test"
    source = "test"

    def predict_proba(self, faces: np.ndarray) -> np.ndarray:
        brightness = faces.reshape(len(faces), -1).mean(axis=1) / 255.0
        logits = np.outer(brightness, np.arange(len(CLASS_NAMES))) * 4.0
        exp = np.exp(logits - logits.max(axis=1, keepdims=True))
        return (exp / exp.sum(axis=1, keepdims=True)).astype(np.float32)


def test_stream_smooths_each_track_over_time():
    """A stream's probabilities are the EMA of the per-frame ones, per student."""
    analyzer = Analyzer(backend="onnx", half_life_s=1.0)
    analyzer.classifier = BrightnessClassifier()
    photo = cv2.imread(str(GROUP_PHOTOS / "2008_002470.jpg"))
    darker = cv2.convertScaleAbs(photo, alpha=0.6, beta=10)
    still_1, still_2 = analyzer.analyze_image(photo), analyzer.analyze_image(darker)
    stream = analyzer.stream()
    first = stream.process(photo, 0.0)
    second = stream.process(darker, 0.2)
    assert [f.track_id for f in first.faces] == [f.track_id for f in still_1]
    assert sorted(f.track_id for f in second.faces) == sorted(f.track_id for f in first.faces)
    weight = ema_weight(0.2, 1.0)
    for face in second.faces:
        before = next(f for f in still_1 if f.track_id == face.track_id)
        after = max(still_2, key=lambda f: box_iou(np.array([f.box], float), np.array([face.box], float))[0, 0])
        assert max(abs(after.probabilities[n] - before.probabilities[n]) for n in CLASS_NAMES) > 0.01
        for name in CLASS_NAMES:
            expected = before.probabilities[name] + weight * (after.probabilities[name] - before.probabilities[name])
            assert face.probabilities[name] == pytest.approx(expected, abs=1e-5)
        assert face.label == max(face.probabilities, key=face.probabilities.get)
        assert sum(face.probabilities.values()) == pytest.approx(1.0, abs=1e-6)

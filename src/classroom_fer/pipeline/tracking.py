"""Anonymous face tracks across frames, and per-track smoothing of the expression probabilities.

Matching is one Hungarian assignment per frame (scipy's ``linear_sum_assignment``) on a cost that
mixes overlap (1 - IoU) and centre distance relative to the face size, against both the track's
last box and a constant-velocity prediction of it; the better of the two counts, so a face that
stops or turns back (a camera pan reversing) is still found. A track survives ``miss_budget_s``
seconds without a detection. Probabilities are smoothed with an exponential moving average whose
half-life is given in seconds, so smoothing does not depend on the frame rate.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy.optimize import linear_sum_assignment

MAX_CENTRE_DISTANCE = 1.0  # in face sizes: farther detections never continue a track
MAX_SIZE_RATIO = 2.0  # a track's face cannot grow or shrink more than this between sightings
MAX_PREDICTION_S = 1.0  # extrapolate the motion at most this far; beyond it the guess is worthless
VELOCITY_MEMORY = 0.5  # weight of the previous velocity when a new sighting updates it
_FORBIDDEN = 1e6


def ema_weight(dt: float, half_life_s: float) -> float:
    """Weight of a new observation after ``dt`` seconds in an EMA with the given half-life."""
    if half_life_s <= 0:
        return 1.0
    return 1.0 - 0.5 ** (max(dt, 0.0) / half_life_s)


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU between every box of ``a`` (N x 4) and of ``b`` (M x 4), as N x M."""
    top_left = np.maximum(a[:, None, :2], b[None, :, :2])
    bottom_right = np.minimum(a[:, None, 2:], b[None, :, 2:])
    intersection = np.prod(np.clip(bottom_right - top_left, 0, None), axis=2)
    area_a = np.prod(a[:, 2:] - a[:, :2], axis=1)
    area_b = np.prod(b[:, 2:] - b[:, :2], axis=1)
    return intersection / np.maximum(area_a[:, None] + area_b[None, :] - intersection, 1e-9)


@dataclass
class Track:
    track_id: str
    box: np.ndarray  # last seen box, float [x1, y1, x2, y2]
    last_seen_s: float
    probabilities: np.ndarray  # smoothed, CLASS_NAMES order
    velocity: np.ndarray = field(default_factory=lambda: np.zeros(4))  # box corners, pixels per second
    hits: int = 1

    def predicted_box(self, time_s: float) -> np.ndarray:
        return self.box + self.velocity * min(time_s - self.last_seen_s, MAX_PREDICTION_S)


class Tracker:
    """Give each face a stable anonymous id (S1, S2, ...) and smooth its probabilities over time."""

    def __init__(self, miss_budget_s: float = 2.0, half_life_s: float = 1.0) -> None:
        self.miss_budget_s = miss_budget_s
        self.half_life_s = half_life_s
        self.tracks: list[Track] = []
        self.next_number = 1
        self.last_time_s: float | None = None

    def reset(self) -> None:
        self.tracks = []
        self.next_number = 1
        self.last_time_s = None

    def update(self, boxes: np.ndarray, probabilities: np.ndarray, time_s: float) -> list[Track]:
        """Match this frame's boxes (N x 4) to tracks; returns the track of each box, in order."""
        if self.last_time_s is not None and time_s < self.last_time_s:
            raise ValueError(f"time went backwards ({time_s} s after {self.last_time_s} s); call reset() for a new stream")
        self.last_time_s = time_s
        self.tracks = [t for t in self.tracks if time_s - t.last_seen_s <= self.miss_budget_s]
        boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
        matched: dict[int, Track] = {}
        if self.tracks and len(boxes):
            cost = self._cost(boxes, time_s)
            for track_index, box_index in zip(*linear_sum_assignment(cost)):
                if cost[track_index, box_index] < _FORBIDDEN:
                    matched[box_index] = self.tracks[track_index]
        result = []
        # New faces are numbered left to right, so ids read naturally on the first frame.
        for index in sorted(range(len(boxes)), key=lambda i: boxes[i, 0]):
            track = matched.get(index)
            if track is None:
                track = Track(f"S{self.next_number}", boxes[index], time_s, probabilities[index].astype(np.float64))
                self.next_number += 1
                self.tracks.append(track)
            else:
                self._observe(track, boxes[index], probabilities[index], time_s)
            result.append((index, track))
        return [track for _, track in sorted(result, key=lambda pair: pair[0])]

    def _cost(self, boxes: np.ndarray, time_s: float) -> np.ndarray:
        last = np.stack([t.box for t in self.tracks])
        predicted = np.stack([t.predicted_box(time_s) for t in self.tracks])
        sizes = np.sqrt(np.prod(last[:, 2:] - last[:, :2], axis=1))[:, None]
        box_sizes = np.sqrt(np.prod(boxes[:, 2:] - boxes[:, :2], axis=1))[None, :]
        centres = (boxes[:, :2] + boxes[:, 2:]) / 2
        costs = []
        for reference in (last, predicted):
            ref_centres = (reference[:, :2] + reference[:, 2:]) / 2
            distance = np.linalg.norm(ref_centres[:, None, :] - centres[None, :, :], axis=2) / np.maximum(sizes, 1.0)
            cost = (1.0 - box_iou(reference, boxes)) + distance
            cost[distance > MAX_CENTRE_DISTANCE] = _FORBIDDEN
            costs.append(cost)
        cost = np.minimum(*costs)
        ratio = np.maximum(sizes / np.maximum(box_sizes, 1.0), box_sizes / np.maximum(sizes, 1.0))
        cost[ratio > MAX_SIZE_RATIO] = _FORBIDDEN
        return cost

    def _observe(self, track: Track, box: np.ndarray, probabilities: np.ndarray, time_s: float) -> None:
        dt = time_s - track.last_seen_s
        if dt > 0:
            velocity = (box - track.box) / dt
            track.velocity = VELOCITY_MEMORY * track.velocity + (1 - VELOCITY_MEMORY) * velocity if track.hits > 1 else velocity
        weight = ema_weight(dt, self.half_life_s)
        track.probabilities = track.probabilities + weight * (probabilities - track.probabilities)
        track.box = box
        track.last_seen_s = time_s
        track.hits += 1

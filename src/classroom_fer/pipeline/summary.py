"""Class-level summary of an analysis: faces per frame, mood over time, per-student shares, engagement.

The engagement indicator is a heuristic, not a measurement (see docs/analysis.md): each face
contributes the expected value of ENGAGEMENT_WEIGHTS under its class probabilities, and the class
indicator of a frame is the mean over its faces.
"""
from __future__ import annotations

from collections import Counter, defaultdict

import numpy as np

from ..classes import CLASS_NAMES

ENGAGEMENT_WEIGHTS = {"neutral": 0.9, "happy": 0.6, "surprise": 0.6, "sad": 0.3, "fear": 0.3, "angry": 0.25, "disgust": 0.2}
_WEIGHTS = np.array([ENGAGEMENT_WEIGHTS[name] for name in CLASS_NAMES])


def _probabilities(face) -> np.ndarray:
    return np.array([face.probabilities[name] for name in CLASS_NAMES])


def _shares(labels: list[str]) -> dict[str, float]:
    counts = Counter(labels)
    total = sum(counts.values())
    return {name: (counts[name] / total if total else 0.0) for name in CLASS_NAMES}


def _round(value: float | None) -> float | None:
    return None if value is None else round(float(value), 4)


def summarize(frames: list, window_s: float = 10.0) -> dict:
    """Summarise analysed frames (``FrameResult``s) into a JSON-ready dict; see docs/analysis.md."""
    frames = list(frames)
    timed = len({(frame.source, frame.time_s) for frame in frames}) > 1 and len({frame.source for frame in frames}) == 1
    all_faces = [face for frame in frames for face in frame.faces]
    labels = [face.label for face in all_faces]
    face_counts = [len(frame.faces) for frame in frames]

    timeline = []
    for frame in frames:
        if frame.faces:
            mood = np.mean([_probabilities(face) for face in frame.faces], axis=0)
            engagement = float(mood @ _WEIGHTS)
        else:
            mood, engagement = None, None
        timeline.append({
            "source": frame.source,
            "frame": frame.index,
            "time_s": round(frame.time_s, 3),
            "faces": len(frame.faces),
            "mood": None if mood is None else {name: _round(p) for name, p in zip(CLASS_NAMES, mood)},
            "engagement": _round(engagement),
        })

    windows = []
    if timed and frames:
        by_window: dict[int, list] = defaultdict(list)
        for frame in frames:
            by_window[int(frame.time_s // window_s)].append(frame)
        for number in sorted(by_window):
            members = by_window[number]
            faces = [face for frame in members for face in frame.faces]
            windows.append({
                "start_s": round(number * window_s, 3),
                "end_s": round((number + 1) * window_s, 3),
                "frames": len(members),
                "faces": len(faces),
                "distribution": _shares([face.label for face in faces]),
                "engagement": _engagement(faces),
            })

    tracks: dict[tuple[str, str], list] = defaultdict(list)
    for frame in frames:
        for face in frame.faces:
            tracks[(frame.source, face.track_id)].append((frame.time_s, face))
    students = []
    for (source, track_id), sightings in tracks.items():
        shares = _shares([face.label for _, face in sightings])
        students.append({
            "source": source,
            "track_id": track_id,
            "observations": len(sightings),
            "first_s": round(min(t for t, _ in sightings), 3),
            "last_s": round(max(t for t, _ in sightings), 3),
            "dominant": max(CLASS_NAMES, key=lambda name: shares[name]),
            "share": shares,
            "mean_confidence": _round(np.mean([face.confidence for _, face in sightings])),
            "engagement": _engagement([face for _, face in sightings]),
        })
    students.sort(key=lambda s: (s["source"], int(s["track_id"][1:]) if s["track_id"][1:].isdigit() else 0, s["track_id"]))

    return {
        "kind": "timeline" if timed else "stills",
        "sources": sorted({frame.source for frame in frames}),
        "classes": list(CLASS_NAMES),
        "frames": len(frames),
        "faces": len(all_faces),
        "frames_without_faces": sum(1 for count in face_counts if count == 0),
        "duration_s": round(max((f.time_s for f in frames), default=0.0) - min((f.time_s for f in frames), default=0.0), 3),
        "faces_per_frame": {
            "mean": _round(np.mean(face_counts)) if frames else 0.0,
            "min": min(face_counts, default=0),
            "max": max(face_counts, default=0),
        },
        "class_counts": {name: labels.count(name) for name in CLASS_NAMES},
        "class_distribution": _shares(labels),
        "engagement": {
            "overall": _engagement(all_faces),
            "weights": ENGAGEMENT_WEIGHTS,
            "definition": "mean over faces of sum_c p(c) * weight(c); a heuristic indicator in [0.2, 0.9], not a measurement",
        },
        "window_s": window_s,
        "windows": windows,
        "timeline": timeline,
        "students": students,
    }


def _engagement(faces: list) -> float | None:
    if not faces:
        return None
    return _round(np.mean([_probabilities(face) @ _WEIGHTS for face in faces]))

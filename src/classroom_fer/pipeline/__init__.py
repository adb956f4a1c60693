"""Classroom analysis: face detection, alignment, expression classification, tracking, summaries, reports.

The public API (documented in docs/analysis.md) is re-exported here, loaded on first use so that
registering the ``analyze`` verb does not import OpenCV or onnxruntime.
"""
import os
from importlib import import_module

# FFmpeg (inside OpenCV) prints its own lines for broken videos; our errors and warnings say it in
# one line instead. It reads this once, at its first use in a process, hence here.
os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")

_EXPORTS = {
    "Analyzer": "analyzer",
    "AnalysisStream": "analyzer",
    "Face": "analyzer",
    "FrameResult": "analyzer",
    "draw_faces": "outputs",
    "summarize": "summary",
    "write_report": "report",
}
__all__ = list(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(import_module(f".{_EXPORTS[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

"""classroom-fer: facial expression recognition for classrooms."""
from .classes import CLASS_NAMES

__version__ = "0.1.0"
__all__ = ["CLASS_NAMES", "Analyzer", "__version__"]


def __getattr__(name: str):
    # Loaded on first use, so `import classroom_fer` does not pull in OpenCV and onnxruntime.
    if name == "Analyzer":
        from .pipeline.analyzer import Analyzer

        return Analyzer
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

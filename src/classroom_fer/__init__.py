"""classroom-fer: facial expression recognition for classrooms."""
from .classes import CLASS_NAMES

__version__ = "0.1.0"
__all__ = ["CLASS_NAMES", "__version__"]

"""The one definition of the expression classes and their order (FER2013's label order).

Every reader, plot and output maps classes through :func:`class_index` by *name*; nothing
relies on folder order or a column position.
"""
from __future__ import annotations

from .errors import UserError

CLASS_NAMES: tuple[str, ...] = ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")
NUM_CLASSES = len(CLASS_NAMES)

_ALIASES = {
    "anger": "angry",
    "mad": "angry",
    "disgusted": "disgust",
    "contempt": "disgust",
    "fearful": "fear",
    "afraid": "fear",
    "scared": "fear",
    "happiness": "happy",
    "joy": "happy",
    "sadness": "sad",
    "unhappy": "sad",
    "surprised": "surprise",
    "calm": "neutral",
    "none": "neutral",
}


def canonical_name(name: str) -> str:
    """Return the canonical class name for ``name`` (case-insensitive, aliases allowed)."""
    key = str(name).strip().lower()
    key = _ALIASES.get(key, key)
    if key not in CLASS_NAMES:
        raise ValueError(f"unknown expression class {name!r} (expected one of {', '.join(CLASS_NAMES)})")
    return key


def class_index(name: str) -> int:
    return CLASS_NAMES.index(canonical_name(name))


def column_order(class_names: list[str]) -> list[int]:
    """Column permutation that maps a model's own class order onto CLASS_NAMES, by name."""
    positions = [class_index(name) for name in class_names]
    if sorted(positions) != list(range(NUM_CLASSES)):
        raise UserError(f"model classes {list(class_names)} do not match {list(CLASS_NAMES)}")
    return sorted(range(NUM_CLASSES), key=positions.__getitem__)

"""Readers for the dataset layouts users actually have, recognised automatically.

1. FER2013 CSV (``emotion,pixels,Usage``), including ``icml_face_data.csv`` (leading spaces in
   the column names, another column order);
2. a ``pixels,emotion`` CSV without Usage (e.g. ``fer2013v2_clean.csv``): split 80/10/10,
   stratified, fixed seed, as the thesis did;
3. an image-folder root with ``train/`` and ``test/`` of class folders (``PublicTest_*`` and
   ``PrivateTest_*`` files in ``test/`` can be selected separately);
4. a single folder of class folders, taken as one split.
"""
from __future__ import annotations

import csv
import hashlib
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..classes import CLASS_NAMES, NUM_CLASSES, canonical_name
from ..errors import UserError
from ..preprocessing import FACE_SIZE, read_image, to_fer_face
from .cache import cached

log = logging.getLogger(__name__)

SPLITS = ("train", "val", "test", "publictest", "privatetest", "all")
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".pgm", ".tif", ".tiff", ".webp"}
SPLIT_SEED = 1234
_USAGE_TO_SPLIT = {"training": "train", "publictest": "publictest", "privatetest": "privatetest"}


@dataclass
class FaceDataset:
    """Faces as one uint8 array (N x 48 x 48) with integer labels in CLASS_NAMES order."""

    images: np.ndarray
    labels: np.ndarray
    source: str
    split: str
    notes: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.labels)

    def class_counts(self) -> dict[str, int]:
        counts = np.bincount(self.labels, minlength=NUM_CLASSES)
        return {name: int(c) for name, c in zip(CLASS_NAMES, counts)}

    def subset(self, index: np.ndarray) -> "FaceDataset":
        return FaceDataset(self.images[index], self.labels[index], self.source, self.split, list(self.notes))


def load_dataset(
    path: str | os.PathLike,
    split: str = "train",
    *,
    drop_blank: bool = False,
    drop_duplicates: bool = False,
    max_samples: int | None = None,
    seed: int = 0,
) -> FaceDataset:
    """Load ``split`` of the dataset at ``path``, whatever its layout."""
    path = Path(path)
    split = split.lower()
    if split not in SPLITS:
        raise UserError(f"{path}: unknown split {split!r} (choose from {', '.join(SPLITS)})")
    if not path.exists():
        raise UserError(f"{path}: dataset not found")
    if max_samples is not None and max_samples < 1:
        raise UserError(f"{path}: the number of samples to keep must be at least 1 (got {max_samples})")
    if path.is_file():
        if path.suffix.lower() != ".csv":
            raise UserError(f"{path}: not a dataset (expected a FER2013-style .csv file or a folder of class folders)")
        dataset = _load_csv(path, split)
    else:
        dataset = _load_folder(path, split)
    if drop_blank:
        keep = dataset.images.reshape(len(dataset), -1).std(axis=1) > 1.0
        dataset = _filtered(dataset, keep, "blank")
    if drop_duplicates:
        dataset = _filtered(dataset, _first_occurrences(dataset.images), "duplicate")
    if max_samples is not None and max_samples < len(dataset):
        dataset = dataset.subset(_stratified_pick(dataset.labels, max_samples, seed))
    if len(dataset) == 0:
        raise UserError(f"{path}: split {split!r} holds no usable images")
    return dataset


def _filtered(dataset: FaceDataset, keep: np.ndarray, what: str) -> FaceDataset:
    dropped = int((~keep).sum())
    subset = dataset.subset(np.flatnonzero(keep))
    subset.notes.append(f"dropped {dropped} {what} image(s)")
    log.info("%s [%s]: dropped %d %s image(s)", dataset.source, dataset.split, dropped, what)
    return subset


def _first_occurrences(images: np.ndarray) -> np.ndarray:
    seen: set[bytes] = set()
    keep = np.zeros(len(images), dtype=bool)
    for i, image in enumerate(images):
        digest = hashlib.blake2b(image.tobytes(), digest_size=16).digest()
        if digest not in seen:
            seen.add(digest)
            keep[i] = True
    return keep


def _stratified_pick(labels: np.ndarray, count: int, seed: int) -> np.ndarray:
    """Indices of a class-stratified sample of ``count`` items (at least one per present class)."""
    from sklearn.model_selection import train_test_split

    index = np.arange(len(labels))
    counts = np.bincount(labels)
    present = np.count_nonzero(counts)
    if min(count, len(labels) - count) < present or counts[counts > 0].min() < 2:
        return np.sort(np.random.default_rng(seed).choice(index, count, replace=False))
    picked, _ = train_test_split(index, train_size=count, stratify=labels, random_state=seed)
    return np.sort(picked)


def _split_train_val_test(labels: np.ndarray, fractions: tuple[float, float, float], source: Path) -> dict[str, np.ndarray]:
    """Stratified split with a fixed seed, so every run sees the same partition."""
    index = np.arange(len(labels))
    stratify = labels if np.bincount(labels)[np.bincount(labels) > 0].min() >= 3 else None
    train_frac, val_frac, test_frac = fractions
    try:
        train, rest = _split_off(index, train_frac, stratify)
        if test_frac == 0:
            return {"train": np.sort(train), "val": np.sort(rest), "test": np.array([], dtype=int)}
        rest_labels = labels[rest] if stratify is not None else None
        if rest_labels is not None and np.bincount(rest_labels)[np.bincount(rest_labels) > 0].min() < 2:
            rest_labels = None
        val, test = _split_off(rest, val_frac / (val_frac + test_frac), rest_labels)
    except ValueError:
        held_out = "validation and test sets" if test_frac else "a validation set"
        raise UserError(f"{source}: {len(labels)} usable image(s) are too few to split off {held_out}") from None
    return {"train": np.sort(train), "val": np.sort(val), "test": np.sort(test)}


def _split_off(index: np.ndarray, train_size: float, stratify: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """sklearn's split; unstratified when the smaller part cannot hold every class (small datasets)."""
    from sklearn.model_selection import train_test_split

    try:
        return train_test_split(index, train_size=train_size, stratify=stratify, random_state=SPLIT_SEED)
    except ValueError:
        if stratify is None:
            raise
        return train_test_split(index, train_size=train_size, random_state=SPLIT_SEED)


# --------------------------------------------------------------------------- CSV


def _parse_label(value: str, row_number: int, path: Path) -> int:
    value = value.strip()
    if value.lstrip("-").isdigit():
        label = int(value)
        if not 0 <= label < NUM_CLASSES:
            raise ValueError(f"label {label} out of range 0-{NUM_CLASSES - 1}")
        return label  # FER2013's numeric labels are in CLASS_NAMES order
    return CLASS_NAMES.index(canonical_name(value))


def _parse_pixels(value: str) -> np.ndarray:
    pixels = np.array(value.split(), dtype=np.int64)
    side = int(round(len(pixels) ** 0.5))
    if side * side != len(pixels) or side < 8:
        raise ValueError(f"{len(pixels)} pixel values do not form a square image")
    if pixels.min() < 0 or pixels.max() > 255:
        raise ValueError("pixel values outside 0-255")
    image = pixels.astype(np.uint8).reshape(side, side)
    return image if side == FACE_SIZE else to_fer_face(image)


def _read_csv(path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Parse a FER CSV into images, labels and (if present) the usage split of each row."""
    try:
        handle = open(path, newline="", encoding="utf-8-sig")
    except OSError as error:
        raise UserError(f"{path}: cannot read ({error.strerror})") from None
    with handle:
        reader = csv.reader(handle)
        try:
            header = next(reader)
        except (StopIteration, csv.Error):
            raise UserError(f"{path}: empty or not a CSV file") from None
        except UnicodeDecodeError:
            raise UserError(f"{path}: not a UTF-8 text file (a CSV must be saved as UTF-8)") from None
        columns = {name.strip().lower(): i for i, name in enumerate(header)}
        if "pixels" not in columns or "emotion" not in columns:
            raise UserError(
                f"{path}: CSV needs 'emotion' and 'pixels' columns (found: {', '.join(h.strip() for h in header) or 'none'})"
            )
        pixels_col, label_col, usage_col = columns["pixels"], columns["emotion"], columns.get("usage")
        images, labels, usages, bad = [], [], [], 0
        try:
            for row_number, row in enumerate(reader, start=2):
                if not row or all(not cell.strip() for cell in row):
                    continue
                try:
                    label = _parse_label(row[label_col], row_number, path)
                    image = _parse_pixels(row[pixels_col])
                    usage = None
                    if usage_col is not None:
                        usage = _USAGE_TO_SPLIT.get(row[usage_col].strip().lower())
                        if usage is None:
                            raise ValueError(f"unknown Usage {row[usage_col].strip()!r}")
                except (ValueError, IndexError) as error:
                    bad += 1
                    if bad <= 5:
                        log.warning("%s: row %d skipped: %s", path, row_number, error)
                    continue
                images.append(image)
                labels.append(label)
                usages.append(usage)
        except csv.Error as error:
            raise UserError(f"{path}: malformed CSV ({error})") from None
        except UnicodeDecodeError:
            raise UserError(f"{path}: not a UTF-8 text file (a CSV must be saved as UTF-8)") from None
    if bad:
        log.warning("%s: %d malformed row(s) skipped", path, bad)
    if not images:
        raise UserError(f"{path}: no valid rows")
    usage_array = np.array(usages, dtype=object) if usage_col is not None else None
    return np.stack(images), np.array(labels, dtype=np.int64), usage_array


def _load_csv(path: Path, split: str) -> FaceDataset:
    images, labels, usages = cached(path, "csv", lambda: _read_csv(path))
    if usages is not None:
        split_index = _csv_usage_split(usages, labels, split, path)
    else:
        if split in ("publictest", "privatetest"):
            raise UserError(f"{path}: this CSV has no Usage column, so it has no {split} split (use train, val or test)")
        split_index = np.arange(len(labels)) if split == "all" else _split_train_val_test(labels, (0.8, 0.1, 0.1), path)[split]
    return FaceDataset(images[split_index], labels[split_index], str(path), split)


def _csv_usage_split(usages: np.ndarray, labels: np.ndarray, split: str, path: Path) -> np.ndarray:
    if split == "all":
        return np.arange(len(labels))
    if split == "val":
        split = "publictest"
    if split == "test":
        return np.flatnonzero((usages == "publictest") | (usages == "privatetest"))
    index = np.flatnonzero(usages == split)
    if len(index) == 0:
        raise UserError(f"{path}: no rows with Usage for split {split!r}")
    return index


# --------------------------------------------------------------------------- folders


def _class_folders(folder: Path) -> dict[int, Path]:
    """Map class index -> subfolder, by name. Unknown folder names are an error."""
    found: dict[int, Path] = {}
    try:
        children = sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
    except PermissionError:
        raise UserError(f"{folder}: folder not readable (permission denied)") from None
    for child in children:
        try:
            index = CLASS_NAMES.index(canonical_name(child.name))
        except ValueError:
            raise UserError(f"{child}: folder name is not an expression class ({', '.join(CLASS_NAMES)})") from None
        if index in found:
            raise UserError(f"{folder}: two folders map to class {CLASS_NAMES[index]!r}: {found[index].name}, {child.name}")
        found[index] = child
    return found


def _list_images(folder: Path) -> tuple[list[str], np.ndarray]:
    files, labels = [], []

    def unreadable(error: OSError) -> None:
        log.warning("%s: folder not readable (%s), its images are skipped", error.filename, error.strerror)

    for index, class_folder in sorted(_class_folders(folder).items()):
        for root, _, names in os.walk(class_folder, onerror=unreadable):
            for name in sorted(names):
                if Path(name).suffix.lower() in IMAGE_SUFFIXES:
                    files.append(os.path.join(root, name))
                    labels.append(index)
    return files, np.array(labels, dtype=np.int64)


def _decode_files(files: list[str], labels: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Decode every file once (upright by EXIF, size-capped, see read_image); bad files are reported and skipped."""
    images, keep, bad = [], [], []
    for i, file in enumerate(files):
        try:
            images.append(to_fer_face(read_image(file)))
        except UserError as error:
            bad.append(str(error))
            continue
        keep.append(i)
    for problem in bad[:5]:
        log.warning("%s, skipped", problem)
    if len(bad) > 5:
        log.warning("... and %d more unreadable image(s) skipped", len(bad) - 5)
    stacked = np.stack(images) if images else np.zeros((0, FACE_SIZE, FACE_SIZE), np.uint8)
    names = np.array([os.path.basename(files[i]) for i in keep], dtype=object)
    return stacked, labels[keep], names


def _decode_folder(folder: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    files, labels = _list_images(folder)
    if not files:
        raise UserError(f"{folder}: no images found in class folders")
    return cached(folder, "folder", lambda: _decode_files(files, labels), files=files)


def _load_folder(path: Path, split: str) -> FaceDataset:
    train_dir, test_dir = path / "train", path / "test"
    if train_dir.is_dir() or test_dir.is_dir():
        return _load_folder_root(path, train_dir, test_dir, split)
    images, labels, _ = _decode_folder(path)
    if split not in ("all", "train", "test"):
        log.info("%s is a single folder of classes: using all of it as split %r", path, split)
    return FaceDataset(images, labels, str(path), split)


def _load_folder_root(path: Path, train_dir: Path, test_dir: Path, split: str) -> FaceDataset:
    has_test = test_dir.is_dir()
    if split in ("test", "publictest", "privatetest") or (split == "val" and has_test and _has_prefix(test_dir, "PublicTest_")):
        if not has_test:
            raise UserError(f"{path}: no test/ folder for split {split!r}")
        images, labels, names = _decode_folder(test_dir)
        if split == "test":
            index = np.arange(len(labels))
        else:
            prefix = "PrivateTest_" if split == "privatetest" else "PublicTest_"
            index = np.flatnonzero([str(n).startswith(prefix) for n in names])
            if len(index) == 0:
                raise UserError(f"{test_dir}: no {prefix}* files for split {split!r}")
        return FaceDataset(images[index], labels[index], str(path), split)
    if not train_dir.is_dir():
        raise UserError(f"{path}: no train/ folder for split {split!r}")
    images, labels, _ = _decode_folder(train_dir)
    if split == "all" or (split == "train" and has_test and _has_prefix(test_dir, "PublicTest_")):
        return FaceDataset(images, labels, str(path), split)
    # No PublicTest half to validate on: hold out a stratified 10% of train.
    parts = _split_train_val_test(labels, (0.9, 0.1, 0.0), path)
    index = parts["train"] if split == "train" else parts["val"]
    return FaceDataset(images[index], labels[index], str(path), split)


def _has_prefix(folder: Path, prefix: str) -> bool:
    for _, _, names in os.walk(folder):
        if any(name.startswith(prefix) for name in names):
            return True
    return False

"""The four dataset layouts, on real FER2013 images from ../shared."""
from __future__ import annotations

import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest

from classroom_fer.classes import CLASS_NAMES, class_index
from classroom_fer.data import load_dataset
from classroom_fer.errors import UserError

# FER2013's CSV numbering (not alphabetical folder order).
CSV_LABEL = {"angry": 0, "disgust": 1, "fear": 2, "happy": 3, "sad": 4, "surprise": 5, "neutral": 6}


def _sample_files(fer_root: Path, folder: str, per_class: int) -> list[tuple[Path, str]]:
    picked = []
    for class_dir in sorted((fer_root / folder).iterdir()):
        picked += [(f, class_dir.name) for f in sorted(class_dir.iterdir())[:per_class]]
    return picked


def _pixels(path: Path) -> str:
    return " ".join(map(str, cv2.imread(str(path), cv2.IMREAD_GRAYSCALE).ravel()))


def _write_fer_csv(path: Path, rows: list[tuple[Path, str, str]], icml: bool = False) -> None:
    with open(path, "w") as handle:
        if icml:
            handle.write("emotion, Usage, pixels\n")
            for file, name, usage in rows:
                handle.write(f"{CSV_LABEL[name]},{usage},{_pixels(file)}\n")
        else:
            handle.write("emotion,pixels,Usage\n")
            for file, name, usage in rows:
                handle.write(f"{CSV_LABEL[name]},{_pixels(file)},{usage}\n")


@pytest.mark.parametrize("icml", [False, True])
def test_fer2013_csv_splits_and_labels_by_name(tmp_path, fer_root, icml):
    train = _sample_files(fer_root, "train", 3)
    test = _sample_files(fer_root, "test", 2)
    rows = [(f, n, "Training") for f, n in train] + [(f, n, "PublicTest") for f, n in test[::2]] + [(f, n, "PrivateTest") for f, n in test[1::2]]
    csv_path = tmp_path / ("icml_face_data.csv" if icml else "fer2013.csv")
    _write_fer_csv(csv_path, rows, icml=icml)

    train_set = load_dataset(csv_path, "train")
    assert len(train_set) == len(train)
    # Same pixels and the same class *name* as the folder the image came from.
    for i, (file, name) in enumerate(train):
        assert np.array_equal(train_set.images[i], cv2.imread(str(file), cv2.IMREAD_GRAYSCALE))
        assert CLASS_NAMES[train_set.labels[i]] == name
    assert len(load_dataset(csv_path, "publictest")) == len(test[::2])
    assert len(load_dataset(csv_path, "privatetest")) == len(test[1::2])
    assert len(load_dataset(csv_path, "val")) == len(test[::2])
    assert len(load_dataset(csv_path, "test")) == len(test)


def test_clean_csv_is_split_80_10_10_stratified_and_fixed(tmp_path, fer_root):
    files = _sample_files(fer_root, "train", 20)
    csv_path = tmp_path / "fer2013v2_clean.csv"
    with open(csv_path, "w") as handle:
        handle.write("pixels,emotion\n")
        for file, name in files:
            handle.write(f"{_pixels(file)},{CSV_LABEL[name]}\n")
    parts = {split: load_dataset(csv_path, split) for split in ("train", "val", "test")}
    assert [len(parts[s]) for s in ("train", "val", "test")] == [112, 14, 14]
    for split in ("val", "test"):  # stratified: every class present in each 10%
        assert set(parts[split].labels.tolist()) == set(range(7))
    again = load_dataset(csv_path, "val")
    assert np.array_equal(again.images, parts["val"].images)
    with pytest.raises(UserError, match="no Usage column"):
        load_dataset(csv_path, "privatetest")


def test_folder_root_selects_publictest_and_privatetest_by_file_name(tmp_path, fer_root):
    root = tmp_path / "fer"
    for file, name in _sample_files(fer_root, "train", 4):
        (root / "train" / name).mkdir(parents=True, exist_ok=True)
        shutil.copy(file, root / "train" / name / file.name)
    public = _sample_files(fer_root, "test", 3)
    for i, (file, name) in enumerate(public):
        target_dir = root / "test" / name.capitalize()  # case-insensitive folder names
        target_dir.mkdir(parents=True, exist_ok=True)
        shutil.copy(file, target_dir / file.name)
        if i % 3 == 0:  # a user's full copy mixes PrivateTest files into test/
            shutil.copy(file, target_dir / file.name.replace("PublicTest_", "PrivateTest_"))
    assert len(load_dataset(root, "train")) == 28
    assert len(load_dataset(root, "publictest")) == 21
    assert len(load_dataset(root, "privatetest")) == 7
    assert len(load_dataset(root, "test")) == 28
    assert len(load_dataset(root, "val")) == 21  # validation is PublicTest when present
    private = load_dataset(root, "privatetest")
    assert sorted(CLASS_NAMES[i] for i in private.labels) == sorted(n for i, (_, n) in enumerate(public) if i % 3 == 0)


def test_folder_root_without_publictest_holds_out_10_percent(tmp_path, fer_root):
    root = tmp_path / "fer"
    for file, name in _sample_files(fer_root, "train", 10):
        (root / "train" / name).mkdir(parents=True, exist_ok=True)
        shutil.copy(file, root / "train" / name / file.name)
    train, val = load_dataset(root, "train"), load_dataset(root, "val")
    assert (len(train), len(val)) == (63, 7)
    train_bytes = {image.tobytes() for image in train.images}
    assert not any(image.tobytes() in train_bytes for image in val.images)


def test_single_class_folder_with_aliases_and_colour_images(tmp_path, fer_root):
    root = tmp_path / "faces"
    (root / "Happiness").mkdir(parents=True)
    (root / "anger").mkdir()
    happy = sorted((fer_root / "train" / "happy").iterdir())[0]
    colour = cv2.cvtColor(cv2.resize(cv2.imread(str(happy)), (96, 96)), cv2.COLOR_BGR2BGRA)
    cv2.imwrite(str(root / "Happiness" / "big.png"), colour)
    shutil.copy(sorted((fer_root / "train" / "angry").iterdir())[0], root / "anger" / "a.jpg")
    (root / "anger" / "broken.jpg").write_bytes(b"not an image")
    dataset = load_dataset(root, "all")
    assert dataset.images.shape == (2, 48, 48)
    assert sorted(dataset.labels.tolist()) == [class_index("angry"), class_index("happy")]


def test_drop_blank_and_duplicates_report_counts(fer_root):
    dataset = load_dataset(fer_root, "train", drop_blank=True, drop_duplicates=True)
    notes = " ".join(dataset.notes)
    assert "blank" in notes and "duplicate" in notes
    flat = dataset.images.reshape(len(dataset), -1)
    assert (flat.std(axis=1) > 1).all()
    assert len({row.tobytes() for row in flat}) == len(dataset)
    assert len(dataset) < 28709


def test_cache_is_invalidated_when_a_file_changes(tmp_path, fer_root):
    root = tmp_path / "faces"
    (root / "sad").mkdir(parents=True)
    source = sorted((fer_root / "train" / "sad").iterdir())[:2]
    for file in source:
        shutil.copy(file, root / "sad" / file.name)
    first = load_dataset(root, "all")
    (root / "sad" / source[0].name).unlink()
    assert len(load_dataset(root, "all")) == len(first) - 1


@pytest.mark.parametrize("content,message", [
    ("emotion,Usage\n0,Training\n", "needs 'emotion' and 'pixels'"),
    ("", "empty or not a CSV"),
    ("emotion,pixels,Usage\n9,1 2 3,Training\n", "no valid rows"),
])
def test_bad_csv_is_a_clear_error(tmp_path, content, message):
    path = tmp_path / "bad.csv"
    path.write_text(content)
    with pytest.raises(UserError, match=message):
        load_dataset(path, "train")


def test_unknown_class_folder_and_missing_path(tmp_path):
    (tmp_path / "bored").mkdir()
    with pytest.raises(UserError, match="not an expression class"):
        load_dataset(tmp_path, "all")
    with pytest.raises(UserError, match="not found"):
        load_dataset(tmp_path / "nope", "train")

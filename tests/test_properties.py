"""Property-based tests (hypothesis) of the dataset readers and the tracker.

Readers: whatever rows or folders a user has, the only outcomes are a dataset whose labels come from
the class *names* (a skipped-row warning for each bad row) or a UserError; never another exception.
Tracker: ids are unique within a frame, stay with a face that moves slowly (through short misses),
and are never handed out twice.
"""
from __future__ import annotations

import logging
import tempfile
from pathlib import Path

import cv2
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from classroom_fer.classes import _ALIASES, CLASS_NAMES, class_index
from classroom_fer.data import load_dataset
from classroom_fer.errors import UserError
from classroom_fer.pipeline.tracking import Tracker

READER_SETTINGS = settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
NAMES = list(CLASS_NAMES) + list(_ALIASES)  # every spelling a user may use for a class
USAGES = {"Training": "train", "PublicTest": "publictest", "PrivateTest": "privatetest"}


@pytest.fixture(autouse=True, scope="module")
def no_dataset_cache():
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("CLASSROOM_FER_CACHE", "off")
        yield


def spaced(draw, text: str) -> str:
    """``text`` with stray spaces or tabs around it, as hand-edited CSVs have."""
    return draw(st.sampled_from(["", " ", "  ", "\t"])) + text + draw(st.sampled_from(["", " ", "\t "]))


def any_case(draw, name: str) -> str:
    return draw(st.sampled_from([name, name.upper(), name.title()]))


@st.composite
def csv_rows(draw) -> tuple[list[str], list[dict]]:
    """A header and rows, each valid or not; returns the CSV lines and what each row should give."""
    with_usage = draw(st.booleans())
    columns = ["emotion", "pixels"] + (["Usage"] if with_usage else [])
    columns = draw(st.permutations(columns))
    header = ",".join(spaced(draw, any_case(draw, column)) for column in columns)
    lines, expected = [header], []
    for _ in range(draw(st.integers(0, 8))):
        cells, outcome = {}, {}
        # The label: a FER2013 number, a name or alias in any case, or something wrong.
        label_kind = draw(st.sampled_from(["number", "name", "bad number", "bad word", "empty"]))
        if label_kind == "number":
            number = draw(st.integers(0, 6))
            cells["emotion"], outcome["label"] = str(number), number
        elif label_kind == "name":
            name = draw(st.sampled_from(NAMES))
            cells["emotion"], outcome["label"] = any_case(draw, name), class_index(name)
        else:
            cells["emotion"] = {"bad number": str(draw(st.sampled_from([-1, 7, 12, 100]))),
                                "bad word": draw(st.sampled_from(["bored", "3.0", "--3", "x"])), "empty": ""}[label_kind]
            outcome["bad"] = True
        # The pixels: a square image (resized to 48 x 48 when not 48), or a broken string.
        pixel_kind = draw(st.sampled_from(["48", "square", "short", "not square", "out of range", "word", "empty"]))
        rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
        side = {"48": 48, "square": draw(st.sampled_from([8, 16, 64]))}.get(pixel_kind, 48)
        values = rng.integers(0, 256, side * side)
        if pixel_kind in ("48", "square"):
            image = values.astype(np.uint8).reshape(side, side)
            outcome["image"] = image if side == 48 else cv2.resize(image, (48, 48), interpolation=cv2.INTER_AREA if side > 48 else cv2.INTER_LINEAR)
        else:
            outcome["bad"] = True
            values = {"short": values[:49], "not square": values[:-1], "out of range": np.append(values[:-1], 256)}.get(pixel_kind, values)
        pixels = " ".join(map(str, values))
        cells["pixels"] = {"word": pixels.replace(" ", " x ", 1), "empty": ""}.get(pixel_kind, pixels)
        if with_usage:
            usage = draw(st.sampled_from(list(USAGES) + ["Validation", ""]))
            cells["Usage"] = usage
            outcome["bad"] = outcome.get("bad", False) or usage not in USAGES
        cells = {column: spaced(draw, value) for column, value in cells.items()}
        written = [cells[c] for c in columns]
        if draw(st.integers(0, 9)) == 0:  # a row cut short
            written = written[:-1]
            outcome["bad"] = True
        if all(not cell.strip() for cell in written):
            outcome = {"blank": True}  # a blank line: passed over, neither a face nor a bad row
        lines.append(",".join(written))
        expected.append(outcome)
    return lines, expected


@READER_SETTINGS
@given(csv_rows())
def test_csv_rows_load_by_name_or_are_skipped_with_a_warning(caplog, drawn):
    lines, expected = drawn
    good = [row for row in expected if not row.get("bad") and not row.get("blank")]
    bad = sum(1 for row in expected if row.get("bad"))
    caplog.clear()
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "fer.csv"
        path.write_text("\n".join(lines) + "\n")
        with caplog.at_level(logging.WARNING):
            if not good:
                with pytest.raises(UserError, match="no valid rows"):
                    load_dataset(path, "all")
                return
            dataset = load_dataset(path, "all")
    assert [CLASS_NAMES[label] for label in dataset.labels] == [CLASS_NAMES[row["label"]] for row in good]
    for decoded, row in zip(dataset.images, good):
        assert np.array_equal(decoded, row["image"])
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert sum("skipped:" in message for message in warnings) == min(bad, 5)
    assert any(f"{bad} malformed row(s) skipped" in message for message in warnings) == (bad > 0)


FOLDER_NAMES = NAMES + ["bored", "Students", "misc"]


@st.composite
def class_folders(draw) -> dict[str, list[str]]:
    """Folder name -> kinds of files in it (good images, broken files, other files)."""
    names = draw(st.lists(st.sampled_from(FOLDER_NAMES).flatmap(lambda n: st.sampled_from([n, n.upper(), n.title()])),
                          min_size=0, max_size=4, unique=True))
    kinds = st.sampled_from(["png", "jpg", "gray png", "empty", "garbage", "truncated", "notes.txt"])
    return {name: draw(st.lists(kinds, max_size=3)) for name in names}


def write_file(path: Path, kind: str, rng: np.random.Generator) -> bool:
    """Write one file of ``kind``; whether it is a readable image."""
    face = rng.integers(0, 256, (48, 48, 3), dtype=np.uint8)
    if kind in ("png", "jpg", "gray png"):
        image = face[:, :, 0] if kind == "gray png" else face
        path.with_suffix(".jpg" if kind == "jpg" else ".png").write_bytes(cv2.imencode(".jpg" if kind == "jpg" else ".png", image)[1].tobytes())
        return True
    if kind == "truncated":
        path.with_suffix(".png").write_bytes(cv2.imencode(".png", face)[1].tobytes()[:300])
    elif kind == "notes.txt":
        path.with_suffix(".txt").write_text("not a face")
    else:
        path.with_suffix(".jpg").write_bytes(b"" if kind == "empty" else rng.bytes(200))
    return False


@READER_SETTINGS
@given(class_folders(), st.integers(0, 2**32 - 1))
def test_class_folders_load_by_name_or_fail_with_a_user_error(caplog, folders, seed):
    rng = np.random.default_rng(seed)
    with tempfile.TemporaryDirectory() as root:
        expected_labels = []
        for name, kinds in folders.items():
            (Path(root) / name).mkdir()
            for number, kind in enumerate(kinds):
                if write_file(Path(root) / name / f"f{number}", kind, rng):
                    expected_labels.append(name)
        try:
            canonical = [class_index(name) for name in folders]
        except ValueError:
            canonical = None
        if canonical is None or len(set(canonical)) < len(canonical):  # the first bad folder in sorted order is named
            with pytest.raises(UserError, match="not an expression class|two folders map to class"):
                load_dataset(root, "all")
        elif not expected_labels:
            with pytest.raises(UserError, match="no images found|no usable images"):
                load_dataset(root, "all")
        else:
            dataset = load_dataset(root, "all")
            assert dataset.images.shape == (len(expected_labels), 48, 48)
            assert sorted(dataset.labels.tolist()) == sorted(class_index(name) for name in expected_labels)


@st.composite
def scenes(draw) -> tuple[int, list[list[tuple[int, np.ndarray]]]]:
    """Faces far apart, each drifting slowly (under a tenth of its size per frame) and sometimes missed
    for a few frames; a second group of faces appears after all of the first left for longer than the
    miss budget. Returns (faces in the first group, frames of (face number, box))."""
    first, second = draw(st.integers(1, 4)), draw(st.integers(0, 3))
    frames_each = draw(st.integers(2, 15))
    faces = []
    for number in range(first + second):
        size = draw(st.integers(24, 90))
        start = np.array([number * 1000.0 + draw(st.integers(0, 200)), draw(st.integers(0, 200))])
        velocity = np.array([draw(st.floats(-0.1, 0.1)), draw(st.floats(-0.1, 0.1))]) * size
        missed = set(draw(st.lists(st.integers(1, frames_each - 1), max_size=3))) if frames_each > 2 else set()
        faces.append((size, start, velocity, missed))
    frames = []
    for group, members in ((0, range(first)), (1, range(first, first + second))):
        for step in range(frames_each):
            visible = []
            for number in members:
                size, start, velocity, missed = faces[number]
                if step in missed:
                    continue
                corner = start + velocity * step
                visible.append((number, np.array([*corner, *(corner + size)])))
            frames.append(draw(st.permutations(visible)))  # detector order is arbitrary
        if group == 0:
            frames += [[]] * 12  # 12 empty frames at 0.2 s: longer than the 2 s miss budget
    return first, frames


@settings(max_examples=150, deadline=None)
@given(scenes())
def test_tracker_ids_are_unique_stable_and_never_reused(scene):
    first, frames = scene
    tracker = Tracker(miss_budget_s=2.0, half_life_s=1.0)
    face_to_id: dict[int, str] = {}
    id_to_face: dict[str, int] = {}
    probabilities = np.full((8, len(CLASS_NAMES)), 1 / len(CLASS_NAMES))
    for step, visible in enumerate(frames):
        boxes = np.array([box for _, box in visible]).reshape(-1, 4)
        tracks = tracker.update(boxes, probabilities[: len(visible)], time_s=0.2 * step)
        ids = [track.track_id for track in tracks]
        assert len(ids) == len(set(ids)), "two faces share an id in one frame"
        for (face, _), track_id in zip(visible, ids):
            assert face_to_id.setdefault(face, track_id) == track_id, f"face {face} changed id"
            assert id_to_face.setdefault(track_id, face) == face, f"id {track_id} was given to another face"
    assert len(face_to_id) == len(id_to_face)  # so no id was ever reused
    assert sorted(int(i[1:]) for i in id_to_face) == list(range(1, len(id_to_face) + 1))  # S1, S2, ... in order of appearance

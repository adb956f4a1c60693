"""`classroom-fer analyze` end to end: outputs, bad inputs, the Python API."""
from __future__ import annotations

import csv
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from classroom_fer.classes import CLASS_NAMES
from classroom_fer.cli import main

GROUP_PHOTOS = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "group-photos"
PHOTO = GROUP_PHOTOS / "2008_007676.jpg"  # seven faces
JSONL_KEYS = {"source", "frame", "time_s", "track_id", "box", "label", "confidence", "probabilities"}


def run_cli(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(["analyze", *argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def read_outputs(out: Path) -> tuple[list[dict], list[dict], dict, str]:
    records = [json.loads(line) for line in (out / "detections.jsonl").read_text().splitlines()]
    with (out / "detections.csv").open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    summary = json.loads((out / "summary.json").read_text())
    report = (out / "report.html").read_text()
    return records, rows, summary, report


def check_records(records: list[dict], rows: list[dict], sizes: dict[str, tuple[int, int]]) -> None:
    """Every face record is complete, inside its image, with probabilities summing to 1; CSV says the same."""
    assert len(rows) == len(records)
    for record, row in zip(records, rows):
        assert set(record) == JSONL_KEYS
        width, height = sizes[record["source"]]
        x1, y1, x2, y2 = record["box"]
        assert 0 <= x1 < x2 <= width and 0 <= y1 < y2 <= height
        assert list(record["probabilities"]) == list(CLASS_NAMES)
        assert sum(record["probabilities"].values()) == pytest.approx(1.0, abs=1e-4)
        assert record["label"] == max(record["probabilities"], key=record["probabilities"].get)
        assert record["confidence"] == pytest.approx(record["probabilities"][record["label"]], abs=1e-4)
        assert re.fullmatch(r"S\d+", record["track_id"])
        assert row["track_id"] == record["track_id"] and row["label"] == record["label"]
        assert [int(row[k]) for k in ("x1", "y1", "x2", "y2")] == record["box"]
        assert float(row[f"p_{CLASS_NAMES[0]}"]) == pytest.approx(record["probabilities"][CLASS_NAMES[0]])


def check_report(report: str) -> None:
    assert report.startswith("<!DOCTYPE html>")
    assert not re.search(r"""(?:src|href)\s*=\s*["']?\s*(?:https?:)?//""", report, re.IGNORECASE)
    assert "<script" not in report.lower()


def test_single_photo(tmp_path, capsys):
    out = tmp_path / "out"
    code, stdout, _ = run_cli(capsys, str(PHOTO), "--out", str(out))
    assert code == 0 and "7 face(s)" in stdout
    records, rows, summary, report = read_outputs(out)
    image = cv2.imread(str(PHOTO))
    check_records(records, rows, {str(PHOTO): (image.shape[1], image.shape[0])})
    assert len(records) == 7 and sorted(r["track_id"] for r in records) == sorted(f"S{i}" for i in range(1, 8))
    assert summary["kind"] == "stills" and summary["faces"] == 7 and summary["frames"] == 1
    assert sum(summary["class_counts"].values()) == 7
    assert sum(summary["class_distribution"].values()) == pytest.approx(1.0)
    assert len(summary["students"]) == 7 and all(s["dominant"] in CLASS_NAMES for s in summary["students"])
    assert 0.2 <= summary["engagement"]["overall"] <= 0.9
    check_report(report)
    assert report.count("data:image/png;base64,") == 2 and "S7" in report
    annotated = cv2.imread(str(out / "annotated" / "2008_007676.jpg"))
    assert annotated.shape == image.shape and not np.array_equal(annotated, image)
    assert not (out / "crops").exists(), "face crops must be opt-in"


def test_folder_with_bad_items_warns_and_goes_on(tmp_path, capsys, caplog):
    folder = tmp_path / "photos"
    (folder / "day2").mkdir(parents=True)
    shutil.copy(PHOTO, folder / "a.jpg")
    shutil.copy(GROUP_PHOTOS / "dogs.jpg", folder / "day2" / "dogs.jpg")
    (folder / "notes.txt").write_text("not an image")
    (folder / "fake.jpg").write_text("not an image either")
    (folder / "day2" / "cut.jpg").write_bytes((GROUP_PHOTOS / "2008_002470.jpg").read_bytes()[:20000])
    out = tmp_path / "out"
    code, _, _ = run_cli(capsys, str(folder), "--out", str(out), "--save-crops")
    assert code == 0
    warnings = "\n".join(r.getMessage() for r in caplog.records if r.levelname == "WARNING")
    for name in ("notes.txt", "fake.jpg", "cut.jpg", "dogs.jpg"):
        assert name in warnings
    records, rows, summary, report = read_outputs(out)
    sizes = {str(folder / "a.jpg"): (500, 334), str(folder / "day2" / "dogs.jpg"): (900, 916)}
    check_records(records, rows, sizes)
    assert {r["source"] for r in records} == {str(folder / "a.jpg")}
    assert summary["frames"] == 2 and summary["frames_without_faces"] == 1
    assert sorted(Path(p).name for p in summary["unreadable"]) == ["cut.jpg", "fake.jpg"]
    assert (out / "annotated" / "day2" / "dogs.jpg").is_file()
    crops = sorted((out / "crops").glob("*.png"))
    assert len(crops) == len(records) and cv2.imread(str(crops[0]), cv2.IMREAD_UNCHANGED).shape == (48, 48)
    check_report(report)
    # Run again with the output inside the folder: its own annotated images are not analysed.
    inside = folder / "analysis"
    assert run_cli(capsys, str(folder), "--out", str(inside))[0] == 0
    assert run_cli(capsys, str(folder), "--out", str(inside))[0] == 0
    assert json.loads((inside / "summary.json").read_text())["frames"] == 2


def test_photo_without_faces_is_not_an_error(tmp_path, capsys, caplog):
    out = tmp_path / "out"
    code, stdout, _ = run_cli(capsys, str(GROUP_PHOTOS / "dogs.jpg"), "--out", str(out))
    assert code == 0 and "0 face(s)" in stdout
    assert any("no faces found" in r.getMessage() for r in caplog.records)
    records, rows, summary, report = read_outputs(out)
    assert records == [] and rows == [] and summary["faces"] == 0
    assert "No faces were found" in report
    check_report(report)


@pytest.mark.parametrize("make_input, message", [
    (lambda d: d / "missing.jpg", "no such file"),
    (lambda d: _write(d / "text.jpg", b"hello"), "not an image"),
    (lambda d: _write(d / "cut.jpg", (GROUP_PHOTOS / "2008_007676.jpg").read_bytes()[:30000]), "truncated"),
    (lambda d: _write(d / "blob.dat", b"\x00\x01" * 500), "not an image or video"),
    (lambda d: _write(d / "broken.mp4", b"not a video at all"), "not a readable video"),
    (lambda d: (d / "empty").mkdir() or d / "empty", "no images"),
    (lambda d: _folder_of_bad_images(d), "none of the 2 images"),
    (lambda d: "webcam:7", "cannot be opened"),
])
def test_bad_inputs_give_one_line_and_exit_2(tmp_path, capsys, make_input, message):
    source = make_input(tmp_path)
    code, _, stderr = run_cli(capsys, str(source), "--out", str(tmp_path / "out"))
    assert code == 2
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], stderr


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def _folder_of_bad_images(directory: Path) -> Path:
    folder = directory / "bad"
    folder.mkdir()
    (folder / "a.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    (folder / "b.jpg").write_bytes(b"")
    return folder


def test_a_broken_video_fails_with_one_line_from_a_fresh_process(tmp_path):
    """No OpenCV or FFmpeg chatter around the error either (they write to the process's stderr)."""
    broken = _write(tmp_path / "broken.mp4", b"\x00\x00\x00\x18ftypmp42" + b"\x00" * 200)
    result = subprocess.run([sys.executable, "-m", "classroom_fer.cli", "analyze", str(broken), "--out", str(tmp_path / "o")],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [f"error: {broken}: not a readable video"]


def _make_video(path: Path, frames: int = 30, fps: float = 10.0) -> tuple[int, int]:
    photo = cv2.imread(str(PHOTO))
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps, (640, 480))
    for step in range(frames):
        window = photo[20:245, 2 * step:2 * step + 300]
        writer.write(cv2.resize(window, (640, 480)))
    writer.release()
    return 640, 480


def test_video_outputs(tmp_path, capsys):
    video = tmp_path / "lesson.avi"
    size = _make_video(video)
    out = tmp_path / "out"
    code, _, _ = run_cli(capsys, str(video), "--out", str(out), "--fps", "5", "--window", "1")
    assert code == 0
    records, rows, summary, report = read_outputs(out)
    check_records(records, rows, {str(video): size})
    frames = sorted({r["frame"] for r in records})
    assert frames == list(range(0, 30, 2))
    assert all(r["time_s"] == pytest.approx(r["frame"] / 10) for r in records)
    assert summary["kind"] == "timeline" and summary["frames"] == 15 and summary["duration_s"] == pytest.approx(2.8)
    assert [w["start_s"] for w in summary["windows"]] == [0.0, 1.0, 2.0]
    assert sum(w["frames"] for w in summary["windows"]) == 15
    for student in summary["students"]:
        assert sum(student["share"].values()) == pytest.approx(1.0)
    assert len(summary["timeline"]) == 15 and all(p["faces"] >= 5 for p in summary["timeline"])
    assert len({r["track_id"] for r in records}) <= 8, "ids should persist across frames"
    check_report(report)
    annotated = cv2.VideoCapture(str(out / "annotated.mp4"))
    assert annotated.get(cv2.CAP_PROP_FRAME_COUNT) == 15 and annotated.get(cv2.CAP_PROP_FRAME_WIDTH) == 640
    annotated.release()


def test_video_broken_half_way_keeps_the_readable_part(tmp_path, capsys, caplog):
    video = tmp_path / "whole.avi"
    _make_video(video, frames=40)
    cut = _write(tmp_path / "cut.avi", video.read_bytes()[: video.stat().st_size // 2])
    out = tmp_path / "out"
    code, _, _ = run_cli(capsys, str(cut), "--out", str(out), "--fps", "0")
    assert code == 0
    assert any("cut.avi" in r.getMessage() and "frame" in r.getMessage() for r in caplog.records if r.levelname == "WARNING")
    summary = json.loads((out / "summary.json").read_text())
    assert 5 <= summary["frames"] < 40


def test_webcam_path_with_a_recorded_camera(tmp_path, capsys, caplog, monkeypatch):
    """The live loop, fed by a video file standing in for the camera until it runs dry."""
    from classroom_fer.pipeline import sources

    video = tmp_path / "camera.avi"
    _make_video(video, frames=12)
    monkeypatch.setattr(sources, "open_webcam", lambda camera: cv2.VideoCapture(str(video)))
    out = tmp_path / "out"
    code, stdout, _ = run_cli(capsys, "webcam:0", "--out", str(out), "--fps", "0", "--duration", "60")
    assert code == 0 and stdout.startswith("webcam:0: 12 frame(s)")
    assert any("stopped delivering frames" in r.getMessage() for r in caplog.records)
    records, rows, summary, report = read_outputs(out)
    check_records(records, rows, {"webcam:0": (640, 480)})
    times = [point["time_s"] for point in summary["timeline"]]
    assert times == sorted(times) and summary["kind"] == "timeline"
    assert (out / "annotated.mp4").stat().st_size > 0


def test_demo_runs_on_the_onnx_backend(tmp_path, capsys):
    out = tmp_path / "demo"
    code, stdout, _ = run_cli(capsys, "--demo", "--out", str(out), "--backend", "onnx")
    assert code == 0 and "1 face(s)" in stdout
    records, rows, summary, report = read_outputs(out)
    check_records(records, rows, {"astronaut.png": (512, 512)})
    assert run_cli(capsys, str(PHOTO), "--demo", "--out", str(out))[0] == 2
    assert (out / "annotated" / "astronaut.jpg").is_file()
    check_report(report)


def test_haar_detector_option(tmp_path, capsys):
    out = tmp_path / "out"
    code, _, _ = run_cli(capsys, str(PHOTO), "--out", str(out), "--detector", "haar")
    assert code == 0
    records, _, _, _ = read_outputs(out)
    assert 5 <= len(records) <= 8


def test_python_api(tmp_path):
    import classroom_fer
    from classroom_fer.pipeline import FrameResult, draw_faces, summarize, write_report

    analyzer = classroom_fer.Analyzer(backend="onnx", min_face=20)
    image = cv2.imread(str(PHOTO))
    faces = analyzer.analyze_image(image)
    assert len(faces) == 7 and [f.track_id for f in sorted(faces, key=lambda f: f.box[0])] == [f"S{i}" for i in range(1, 8)]
    record = json.loads(json.dumps(faces[0].to_dict()))
    assert set(record) == {"box", "det_score", "label", "confidence", "probabilities", "track_id"}
    stream = analyzer.stream()
    results = [stream.process(image, t) for t in (0.0, 0.5, 1.0)]
    assert all(isinstance(r, FrameResult) and len(r.faces) == 7 for r in results)
    assert [sorted(f.track_id for f in r.faces) for r in results] == [sorted(f.track_id for f in faces)] * 3
    drawn = draw_faces(image, results[-1].faces)
    assert drawn.shape == image.shape and not np.array_equal(drawn, image)
    summary = summarize(results, window_s=0.5)
    assert summary["kind"] == "timeline" and len(summary["windows"]) == 3 and len(summary["students"]) == 7
    write_report(summary, tmp_path / "r.html")
    check_report((tmp_path / "r.html").read_text())


def test_demo_works_without_torch(tmp_path):
    """The light install (no PyTorch) runs the README quick start."""
    code = ("import sys; sys.modules['torch'] = None; from classroom_fer.cli import main; "
            f"sys.exit(main(['analyze', '--demo', '--out', {str(tmp_path / 'demo')!r}]))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert json.loads((tmp_path / "demo" / "summary.json").read_text())["faces"] == 1


def test_import_stays_light():
    code = ("import sys, classroom_fer, classroom_fer.pipeline.cli; "
            "heavy = [m for m in ('cv2', 'onnxruntime', 'torch', 'matplotlib') if m in sys.modules]; assert not heavy, heavy; "
            "from classroom_fer.pipeline.analyzer import Analyzer; assert classroom_fer.Analyzer is Analyzer")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)

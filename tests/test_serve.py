"""The dashboard's JSON API through FastAPI's TestClient, on the real group photos in ../shared."""
from __future__ import annotations

import asyncio
import re
import socket
import struct
import time
import xml.etree.ElementTree as ET
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest

pytest.importorskip("fastapi")
from fastapi.testclient import TestClient  # noqa: E402

from classroom_fer.classes import CLASS_NAMES  # noqa: E402
from classroom_fer.cli import main  # noqa: E402
from classroom_fer.pipeline import Analyzer  # noqa: E402
from classroom_fer.serve.app import STATIC_DIR, ServeSettings, create_app  # noqa: E402

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
PHOTOS = SHARED / "data" / "group-photos"
BASE_URL = "http://127.0.0.1"
MAX_UPLOAD_MB = 4


def hand_boxes() -> dict[str, list[tuple[int, int, int, int]]]:
    """Hand-made face boxes (x1, y1, x2, y2) per photo, from the dataset's XML files."""
    boxes = {}
    for name in ("training.xml", "testing.xml"):
        for image in ET.parse(PHOTOS / name).getroot().iter("image"):
            boxes[image.get("file")] = [
                (int(b.get("left")), int(b.get("top")), int(b.get("left")) + int(b.get("width")), int(b.get("top")) + int(b.get("height")))
                for b in image.iter("box")
            ]
    return boxes


def iou(a, b) -> float:
    width = max(0, min(a[2], b[2]) - max(a[0], b[0]))
    height = max(0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = width * height
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


@pytest.fixture(scope="module")
def analyzer() -> Analyzer:
    return Analyzer(threads=1)


@pytest.fixture(scope="module")
def client(analyzer):
    settings = ServeSettings(max_upload_mb=MAX_UPLOAD_MB, video_fps=4.0)
    with TestClient(create_app(analyzer, settings), base_url=BASE_URL) as test_client:
        yield test_client


def upload(client: TestClient, url: str, data: bytes, name: str = "upload.jpg", content_type: str = "image/jpeg"):
    return client.post(url, files={"file": (name, data, content_type)})


def check_face(face: dict, width: int, height: int) -> None:
    x1, y1, x2, y2 = face["box"]
    assert 0 <= x1 < x2 <= width and 0 <= y1 < y2 <= height
    assert face["label"] in CLASS_NAMES
    assert set(face["probabilities"]) == set(CLASS_NAMES)
    assert sum(face["probabilities"].values()) == pytest.approx(1.0, abs=1e-4)
    assert face["confidence"] == pytest.approx(max(face["probabilities"].values()), abs=1e-4)
    assert face["probabilities"][face["label"]] == pytest.approx(face["confidence"], abs=1e-4)
    assert re.fullmatch(r"S\d+", face["track_id"])


# ---- the page ------------------------------------------------------------------------------------


def test_page_and_assets_come_from_the_app_under_a_strict_policy(client):
    page = client.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    policy = page.headers["content-security-policy"]
    assert "default-src 'self'" in policy and "script-src 'self'" in policy and "unsafe" not in policy
    assert page.headers["x-content-type-options"] == "nosniff"
    references = re.findall(r'(?:src|href)="([^"]+)"', page.text)
    assert references and all(ref.startswith("/static/") for ref in references)
    for ref in references:
        assert client.get(ref).status_code == 200
    for path in STATIC_DIR.iterdir():
        text = path.read_text(encoding="utf-8").replace('xmlns="http://www.w3.org/2000/svg"', "")  # a name, not a fetch
        assert not re.search(r"(?:https?:)?//[a-z0-9.-]+\.[a-z]{2,}/", text), f"{path.name} refers to another site"
        assert "<script>" not in text and " style=" not in text  # nothing inline: the policy would block it


def test_api_is_documented_without_cdn_pages(client):
    assert client.get("/docs").status_code == 404
    assert client.get("/redoc").status_code == 404
    schema = client.get("/api/openapi.json").json()
    for path in ("/api/analyze", "/api/videos", "/api/videos/{job_id}", "/api/live", "/api/live/{session_id}/frames"):
        assert path in schema["paths"]
    info = client.get("/api/info").json()
    assert info["classes"] == list(CLASS_NAMES)
    assert info["max_upload_mb"] == MAX_UPLOAD_MB
    assert client.get("/api/info").headers["cache-control"] == "no-store"


def test_other_hosts_are_refused_when_bound_to_loopback(analyzer):
    app = create_app(analyzer, allowed_hosts=["127.0.0.1", "localhost"])
    with TestClient(app, base_url=BASE_URL) as test_client:
        assert test_client.get("/api/info").status_code == 200
        assert test_client.get("/api/info", headers={"host": "attacker.example"}).status_code == 400


# ---- photos --------------------------------------------------------------------------------------


def test_analyze_finds_the_hand_marked_faces_on_group_photos(client):
    truth = hand_boxes()
    assert len(truth) == 9
    found = total = 0
    for name, boxes in truth.items():
        data = (PHOTOS / name).read_bytes()
        response = upload(client, "/api/analyze", data, name="photo")
        assert response.status_code == 200, response.text
        result = response.json()
        height, width = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR).shape[:2]
        assert (result["width"], result["height"]) == (width, height)
        for face in result["faces"]:
            check_face(face, width, height)
        assert len({face["track_id"] for face in result["faces"]}) == len(result["faces"])
        summary = result["summary"]
        assert summary["faces"] == len(result["faces"])
        assert summary["class_counts"] == {c: sum(f["label"] == c for f in result["faces"]) for c in CLASS_NAMES}
        found += sum(any(iou(box, face["box"]) >= 0.3 for face in result["faces"]) for box in boxes)
        total += len(boxes)
    assert found >= 0.8 * total, f"only {found} of {total} hand-marked faces found"


def test_photo_without_people_has_no_faces(client):
    result = upload(client, "/api/analyze", (PHOTOS / "dogs.jpg").read_bytes()).json()
    assert result["faces"] == [] and result["summary"]["faces"] == 0


def test_annotate_answers_the_annotated_picture(client):
    data = (PHOTOS / "2008_002506.jpg").read_bytes()
    response = upload(client, "/api/annotate", data)
    assert response.status_code == 200 and response.headers["content-type"] == "image/jpeg"
    annotated = cv2.imdecode(np.frombuffer(response.content, np.uint8), cv2.IMREAD_COLOR)
    original = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    assert annotated.shape == original.shape
    assert np.abs(annotated.astype(int) - original.astype(int)).mean() > 1  # boxes were drawn


# ---- bad input -----------------------------------------------------------------------------------


@pytest.mark.parametrize("data, name, status", [
    (b"name,label\nalice,happy\n", "class.jpg", 415),  # a CSV named like a photo
    (b"\xff\xd8\xff\xe0" + b"\0" * 200, "broken.jpg", 415),  # a JPEG header with nothing behind it
    (b"", "empty.png", 422),
])
def test_non_images_get_a_readable_4xx(client, data, name, status):
    response = upload(client, "/api/analyze", data, name=name)
    assert response.status_code == status
    detail = response.json()["detail"]
    assert isinstance(detail, str) and len(detail) > 10


def test_missing_file_field_is_a_readable_422(client):
    response = client.post("/api/analyze", data={"photo": "x"})
    assert response.status_code == 422
    assert "file" in response.json()["detail"]


def png_header_claiming(width: int, height: int) -> bytes:
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 1000)) + chunk(b"IEND", b"")


@pytest.mark.parametrize("side", [20000, 7000])
def test_image_declaring_too_many_pixels_is_refused_before_decoding(client, side):
    response = upload(client, "/api/analyze", png_header_claiming(side, side), name="huge.png", content_type="image/png")
    assert response.status_code == 413
    assert "megapixels" in response.json()["detail"]


def test_upload_over_the_cap_is_413(client):
    response = upload(client, "/api/analyze", b"\0" * (MAX_UPLOAD_MB * 2**20 + 1))
    assert response.status_code == 413
    assert "--max-upload-mb" in response.json()["detail"]


def test_upload_cap_is_enforced_while_the_body_streams(analyzer):
    """A chunked 64 MB body against a 1 MB cap: the server must answer 413 after reading about 1 MB."""
    cap_mb, chunk, chunks = 1, b"\0" * 65536, 1024
    app = create_app(analyzer, ServeSettings(max_upload_mb=cap_mb))
    head = b'--xyz\r\nContent-Disposition: form-data; name="file"; filename="a.jpg"\r\nContent-Type: image/jpeg\r\n\r\n'
    pulled = 0

    async def endless_body() -> dict:
        nonlocal pulled
        pulled += 1
        return {"type": "http.request", "body": head if pulled == 1 else chunk, "more_body": pulled <= chunks}

    sent = []

    async def send(message: dict) -> None:
        sent.append(message)

    scope = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST", "scheme": "http",
        "path": "/api/analyze", "raw_path": b"/api/analyze", "query_string": b"", "root_path": "",
        "headers": [(b"host", b"127.0.0.1"), (b"content-type", b"multipart/form-data; boundary=xyz"), (b"transfer-encoding", b"chunked")],
        "client": ("127.0.0.1", 50000), "server": ("127.0.0.1", 80),
    }
    with TestClient(app):  # runs the app's startup and shutdown around the raw call
        asyncio.run(asyncio.wait_for(app(scope, endless_body, send), timeout=30))
    assert sent[0]["type"] == "http.response.start" and sent[0]["status"] == 413
    assert (pulled - 1) * len(chunk) <= cap_mb * 2**20 + len(chunk)


# ---- videos --------------------------------------------------------------------------------------


def make_video(path: Path, names: list[str], frames_each: int, fps: float, size=(480, 360)) -> None:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps, size)
    assert writer.isOpened()
    for name in names:
        image = cv2.resize(cv2.imread(str(PHOTOS / name)), size)
        for _ in range(frames_each):
            writer.write(image)
    writer.release()


def wait_for_job(client: TestClient, job_id: str, timeout_s: float = 120) -> dict:
    deadline = time.monotonic() + timeout_s
    seen_progress = []
    while time.monotonic() < deadline:
        job = client.get(f"/api/videos/{job_id}").json()
        seen_progress.append(job["progress"])
        if job["status"] not in ("queued", "running"):
            assert seen_progress == sorted(seen_progress)  # progress never goes back
            return job
        time.sleep(0.2)
    raise AssertionError(f"video job still {job['status']} after {timeout_s} s")


def test_video_job_runs_to_completion(client, tmp_path):
    video = tmp_path / "lesson.avi"
    make_video(video, ["2008_002470.jpg", "2008_004176.jpg", "2007_007763.jpg"], frames_each=4, fps=4)
    escape = Path("/tmp/classroom-fer-escape-test.avi")
    escape.unlink(missing_ok=True)
    response = upload(client, "/api/videos", video.read_bytes(), name=f"../../../..{escape}", content_type="video/x-msvideo")
    assert response.status_code == 202, response.text
    job = response.json()
    assert job["status"] in ("queued", "running") and job["duration_s"] == pytest.approx(3.0, abs=0.3)

    job = wait_for_job(client, job["id"])
    assert job["status"] == "done", job["error"]
    assert job["progress"] == 1.0 and job["frames_done"] == 12
    summary = job["summary"]
    assert summary["frames"] == 12 and summary["kind"] == "timeline"
    assert summary["faces"] >= 12  # every frame shows a group of people
    assert len(summary["windows"]) >= 3
    assert all(sum(w["distribution"].values()) == pytest.approx(1.0, abs=1e-3) for w in summary["windows"] if w["faces"])
    assert summary["students"] and all(s["dominant"] in CLASS_NAMES for s in summary["students"])
    assert summary["sources"] == ["video"]  # not the server's temporary path

    report = client.get(job["report_url"])
    assert report.status_code == 200 and report.headers["content-type"].startswith("text/html")
    assert "attachment" in report.headers["content-disposition"]
    rows = client.get(job["csv_url"]).text.strip().splitlines()
    assert rows[0].startswith("source,frame,time_s,track_id") and len(rows) == summary["faces"] + 1

    job_dir = client.app.state.workdir / f"video-{job['id']}"
    assert sorted(p.name for p in job_dir.iterdir()) == ["detections.csv", "detections.jsonl", "report.html"]
    assert not escape.exists()
    assert client.delete(f"/api/videos/{job['id']}").status_code == 204
    assert client.get(f"/api/videos/{job['id']}").status_code == 404
    assert not job_dir.exists()


def test_cancelling_a_video_job_deletes_it(client, tmp_path):
    video = tmp_path / "long.avi"
    make_video(video, ["2008_002079.jpg"], frames_each=60, fps=5)  # 12 s: still running when cancelled
    response = upload(client, "/api/videos", video.read_bytes(), name="long.avi", content_type="video/x-msvideo")
    assert response.status_code == 202, response.text
    job = response.json()
    job_dir = client.app.state.workdir / f"video-{job['id']}"
    assert job_dir.exists()
    assert client.delete(f"/api/videos/{job['id']}").status_code == 204
    assert client.get(f"/api/videos/{job['id']}").status_code == 404
    deadline = time.monotonic() + 30
    while job_dir.exists():  # the worker removes the folder as soon as it sees the cancel flag
        assert time.monotonic() < deadline, "a cancelled job's files were not removed"
        time.sleep(0.1)


def test_non_video_upload_is_refused_and_leaves_nothing(client):
    before = set(client.app.state.workdir.iterdir())
    response = upload(client, "/api/videos", b"this is not a video\n" * 100, name="lesson.mp4", content_type="video/mp4")
    assert response.status_code == 415
    assert "video" in response.json()["detail"]
    assert set(client.app.state.workdir.iterdir()) == before


def test_unknown_job_is_404(client):
    assert client.get("/api/videos/nope").status_code == 404
    assert client.get("/api/videos/nope/report.html").status_code == 404


# ---- live ----------------------------------------------------------------------------------------


def jpeg(image: np.ndarray) -> bytes:
    return cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 85])[1].tobytes()


def test_live_session_tracks_faces_and_saves_only_on_request(client):
    session = client.post("/api/live")
    assert session.status_code == 201
    session_id = session.json()["id"]
    assert client.post(f"/api/live/{session_id}/save").status_code == 409  # nothing analysed yet

    photo = cv2.imread(str(PHOTOS / "2008_004176.jpg"))
    shifted = np.roll(photo, 4, axis=1)  # the class moved a little between frames
    results = []
    for frame in (photo, shifted, photo):
        response = upload(client, f"/api/live/{session_id}/frames", jpeg(frame), name="frame.jpg")
        assert response.status_code == 200, response.text
        results.append(response.json())
    height, width = photo.shape[:2]
    for result in results:
        assert result["faces"]
        for face in result["faces"]:
            check_face(face, width, height)
        assert sum(result["mood"].values()) == pytest.approx(1.0)
    assert results[0]["time_s"] <= results[1]["time_s"] <= results[2]["time_s"]
    ids = [sorted(face["track_id"] for face in result["faces"]) for result in results]
    assert ids[0] == ids[1] == ids[2]  # the same students keep their ids across frames

    assert not (client.app.state.workdir / f"live-{session_id}").exists()  # nothing written before saving
    saved = client.post(f"/api/live/{session_id}/save").json()
    assert saved["summary"]["frames"] == 3 and saved["summary"]["faces"] == sum(len(r["faces"]) for r in results)
    assert client.get(saved["report_url"]).status_code == 200
    assert len(client.get(saved["csv_url"]).text.strip().splitlines()) == saved["summary"]["faces"] + 1

    assert client.delete(f"/api/live/{session_id}").status_code == 204
    assert not (client.app.state.workdir / f"live-{session_id}").exists()
    assert upload(client, f"/api/live/{session_id}/frames", jpeg(photo)).status_code == 404


def test_idle_live_sessions_expire(analyzer):
    with TestClient(create_app(analyzer, ServeSettings(live_idle_s=0.3)), base_url=BASE_URL) as test_client:
        session_id = test_client.post("/api/live").json()["id"]
        frame = jpeg(cv2.imread(str(PHOTOS / "2009_004587.jpg")))
        assert upload(test_client, f"/api/live/{session_id}/frames", frame).status_code == 200
        time.sleep(1.0)
        response = upload(test_client, f"/api/live/{session_id}/frames", frame)
        assert response.status_code == 404 and "expired" in response.json()["detail"]


def test_the_workdir_is_removed_at_shutdown(analyzer):
    app = create_app(analyzer)
    with TestClient(app, base_url=BASE_URL) as test_client:
        session_id = test_client.post("/api/live").json()["id"]
        upload(test_client, f"/api/live/{session_id}/frames", jpeg(cv2.imread(str(PHOTOS / "2009_004587.jpg"))))
        assert test_client.post(f"/api/live/{session_id}/save").status_code == 200
        assert app.state.workdir.exists()
    assert not app.state.workdir.exists()


# ---- the CLI verb ----------------------------------------------------------------------------------


def test_serve_defaults_to_loopback():
    from classroom_fer.cli import build_parser

    args = build_parser().parse_args(["serve"])
    assert (args.host, args.port) == ("127.0.0.1", 8000)


def test_serve_reports_a_busy_port_in_one_line(capsys):
    with socket.create_server(("127.0.0.1", 0)) as busy:
        port = busy.getsockname()[1]
        assert main(["serve", "--port", str(port)]) == 2
    error = capsys.readouterr().err.strip()
    assert error.startswith(f"error: 127.0.0.1:{port}") and "\n" not in error


def test_serve_rejects_a_non_positive_upload_cap(capsys):
    assert main(["serve", "--max-upload-mb", "0"]) == 2
    assert "--max-upload-mb" in capsys.readouterr().err


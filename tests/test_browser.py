"""End to end: the dashboard page in headless Chromium (Debian's package), driven by Playwright.

The app runs under uvicorn on a free loopback port. Chromium's fake camera plays a group photo
(a Y4M file made here), so the live view has real faces to find.
"""
from __future__ import annotations

import os
import socket
import threading
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

CHROMIUM = Path("/usr/bin/chromium")
if not CHROMIUM.exists():
    pytest.skip(f"{CHROMIUM} is not installed (apt-get install chromium)", allow_module_level=True)
sync_api = pytest.importorskip("playwright.sync_api")
uvicorn = pytest.importorskip("uvicorn")

from classroom_fer.pipeline import Analyzer  # noqa: E402
from classroom_fer.serve.app import ServeSettings, create_app  # noqa: E402
from classroom_fer.serve.cli import LOOPBACK_NAMES  # noqa: E402

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
PHOTOS = SHARED / "data" / "group-photos"
CAMERA_PHOTO = "2008_004176.jpg"
BROWSER_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                "--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream"]
SCREENSHOTS = Path(os.environ.get("CLASSROOM_FER_SCREENSHOTS", "/tmp/classroom-fer-screenshots"))


@pytest.fixture(scope="module")
def server():
    """The dashboard on http://127.0.0.1:<free port>, in a thread."""
    app = create_app(Analyzer(threads=1), ServeSettings(video_fps=4.0), allowed_hosts=LOOPBACK_NAMES)
    listener = socket.create_server(("127.0.0.1", 0))
    uvicorn_server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
    thread = threading.Thread(target=uvicorn_server.run, kwargs={"sockets": [listener]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not uvicorn_server.started:
        assert time.monotonic() < deadline and thread.is_alive(), "the server did not start"
        time.sleep(0.05)
    yield f"http://127.0.0.1:{listener.getsockname()[1]}"
    uvicorn_server.should_exit = True
    thread.join(timeout=30)
    listener.close()


def write_y4m(path: Path, image: np.ndarray, frames: int = 10, fps: int = 10) -> None:
    """A raw YUV 4:2:0 video Chromium's fake camera can play (even sides required)."""
    height, width = (side - side % 2 for side in image.shape[:2])
    image = image[:height, :width]
    planes = cv2.cvtColor(image, cv2.COLOR_BGR2YUV_I420).tobytes()
    with open(path, "wb") as out:
        out.write(f"YUV4MPEG2 W{width} H{height} F{fps}:1 Ip A1:1 C420jpeg\n".encode())
        for _ in range(frames):
            out.write(b"FRAME\n" + planes)


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    camera = tmp_path_factory.mktemp("camera") / "class.y4m"
    write_y4m(camera, cv2.imread(str(PHOTOS / CAMERA_PHOTO)))
    with sync_api.sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM),
                                              args=BROWSER_ARGS + [f"--use-file-for-fake-video-capture={camera}"])
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser, server):
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    problems = []
    page.on("pageerror", lambda error: problems.append(f"page error: {error}"))
    # Chrome logs every 4xx as a console error; API errors are expected in some tests, asset errors never.
    page.on("console", lambda message: message.type == "error" and not message.text.startswith("Failed to load resource")
            and problems.append(f"console: {message.text}"))
    page.on("response", lambda response: response.status >= 400 and "/api/" not in response.url
            and problems.append(f"{response.status} for {response.url}"))
    external = []
    page.on("request", lambda request: request.url.startswith(server) or external.append(request.url))
    page.goto(server + "/")
    page.wait_for_selector("body[data-ready=true]")
    yield page
    context.close()
    assert not problems, problems  # includes Content-Security-Policy violations
    assert not external, f"the page loaded from elsewhere: {external}"


def wait_until(condition, timeout_s: float = 60, what: str = "condition") -> None:
    """Poll from Python: the page's CSP forbids the eval that Playwright's wait_for_function needs."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


def painted_pixels(page, canvas_id: str) -> int:
    return page.evaluate(
        """(id) => {
            const canvas = document.getElementById(id);
            const data = canvas.getContext("2d").getImageData(0, 0, canvas.width, canvas.height).data;
            let painted = 0;
            for (let i = 3; i < data.length; i += 4) if (data[i] > 0) painted += 1;
            return painted;
        }""",
        canvas_id,
    )


def test_photo_upload_lists_the_faces(page, server):
    photo = PHOTOS / "2008_002470.jpg"
    page.set_input_files("#photo-file", str(photo))
    page.wait_for_selector("#photo-result:not([hidden])", timeout=60_000)
    rows = page.locator("#photo-faces tbody tr")
    assert rows.count() >= 5  # six people in this photo
    for index in range(rows.count()):
        student, expression, confidence = (cell.strip() for cell in rows.nth(index).locator("td").all_inner_texts())
        assert student.startswith("S") and expression in ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")
        assert confidence.endswith("%")
    assert f"{rows.count()} faces found" in page.inner_text("#photo-status")
    height, width = cv2.imread(str(photo)).shape[:2]
    assert page.eval_on_selector("#photo-canvas", "c => [c.width, c.height]") == [width, height]
    assert painted_pixels(page, "photo-chart") > 0
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / "photo.png"), full_page=True)


def test_bad_upload_shows_the_servers_message(page, tmp_path):
    fake = tmp_path / "notes.jpg"
    fake.write_text("not a picture")
    page.set_input_files("#photo-file", str(fake))
    page.wait_for_selector("#photo-status.error")
    assert "not an image" in page.inner_text("#photo-status")


def test_video_upload_shows_progress_then_results(page, tmp_path):
    video = tmp_path / "lesson.avi"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 4, (480, 360))
    for name in ("2008_002470.jpg", "2007_007763.jpg"):
        for _ in range(6):
            writer.write(cv2.resize(cv2.imread(str(PHOTOS / name)), (480, 360)))
    writer.release()
    page.click("#tab-video")
    page.set_input_files("#video-file", str(video))
    page.wait_for_selector("#video-result:not([hidden])", timeout=120_000)
    assert page.inner_text("#video-status").startswith("Done:")
    assert page.locator("#video-students tbody tr").count() >= 5
    assert painted_pixels(page, "video-timeline") > 0
    report = page.get_attribute("#video-report", "href")
    with page.expect_download() as download:
        page.click("#video-report")
    assert report.endswith("/report.html") and download.value.suggested_filename.endswith(".html")
    page.screenshot(path=str(SCREENSHOTS / "video.png"), full_page=True)


def test_live_view_sends_frames_and_draws_the_overlay(page):
    page.click("#tab-live")
    page.click("#live-start")

    def frames() -> int:
        return int(page.get_attribute("#live-overlay", "data-frames") or 0)

    wait_until(lambda: frames() >= 3, what="three analysed webcam frames")
    first = frames()
    wait_until(lambda: frames() > first, what="the overlay to keep updating")
    assert int(page.get_attribute("#live-overlay", "data-faces")) >= 5  # the fake camera shows a class
    assert painted_pixels(page, "live-overlay") > 0
    assert page.locator("#live-faces tbody tr").count() >= 5
    assert painted_pixels(page, "live-chart") > 0
    page.screenshot(path=str(SCREENSHOTS / "live.png"), full_page=True)

    assert page.is_hidden("#live-saved")  # nothing saved until asked
    page.click("#live-save")
    page.wait_for_selector("#live-saved:not([hidden])")
    assert page.get_attribute("#live-csv", "href").endswith("/detections.csv")
    page.click("#live-stop")
    stopped = frames()
    time.sleep(1.0)
    assert frames() == stopped  # no frame is sent once the camera is off


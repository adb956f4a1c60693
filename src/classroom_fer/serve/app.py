"""The teacher dashboard: a local web app over the same :class:`Analyzer` the CLI uses.

The page (``static/``) talks to the server only through the JSON API below, which is documented
in docs/dashboard.md and as OpenAPI at ``/api/openapi.json``. Everything the page loads is served
by the app itself (no CDN), under a same-origin-only Content-Security-Policy.
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil
import tempfile
import time
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from fastapi import FastAPI, File, HTTPException, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.middleware.trustedhost import TrustedHostMiddleware

from .. import __version__
from ..classes import CLASS_NAMES
from ..errors import UserError
from .jobs import LiveSessions, Outputs, SharedAnalyzer, VideoJob, VideoJobs, new_id
from .limits import SecurityHeaders, UploadSizeLimit
from .uploads import decode_image, probe_video, save_upload

log = logging.getLogger("classroom_fer.serve")

STATIC_DIR = Path(str(resources.files("classroom_fer") / "serve" / "static"))
REPORT_FILE = "report.html"
TIMELINE_POINTS = 30  # a short video's timeline still gets about this many bins


@dataclass(frozen=True)
class ServeSettings:
    max_upload_mb: float = 512.0  # request bodies beyond this get 413 while they stream in
    max_image_megapixels: float = 40.0  # per photo or video frame, checked before decoding
    video_fps: float | None = 2.0  # frames analysed per second of video (None: every frame)
    window_s: float = 10.0  # summary timeline bin
    live_idle_s: float = 120.0  # a live session with no frame for this long is forgotten
    job_ttl_s: float = 3600.0  # a finished video job's results are kept this long
    max_live_sessions: int = 8
    max_pending_videos: int = 4
    max_live_frames: int = 36_000  # in-memory results per live session (2 h at 5 frames/s)

    @property
    def max_upload_bytes(self) -> int:
        return int(self.max_upload_mb * 2**20)

    @property
    def max_image_pixels(self) -> int:
        return int(self.max_image_megapixels * 1e6)


def create_app(analyzer, settings: ServeSettings | None = None, allowed_hosts: list[str] | None = None) -> FastAPI:
    """Build the dashboard app around a ready :class:`classroom_fer.pipeline.Analyzer`.

    ``allowed_hosts`` (e.g. ``["127.0.0.1", "localhost"]``) refuses requests for any other Host,
    which stops a web page from reaching a loopback-only server through DNS rebinding.
    """
    from ..pipeline import summarize, write_report
    from ..pipeline.outputs import DetectionWriter

    settings = settings or ServeSettings()
    shared = SharedAnalyzer(analyzer)
    workdir = Path(tempfile.mkdtemp(prefix="classroom-fer-serve-"))

    def write_outputs(frames: list, directory: Path, window_s: float) -> Outputs:
        directory.mkdir(parents=True, exist_ok=True)
        summary = summarize(frames, window_s=window_s)
        report = directory / REPORT_FILE
        write_report(summary, report)
        with DetectionWriter(directory) as detections:
            for frame in frames:
                detections.write(frame)
        return Outputs(summary=summary, report=report, csv=detections.csv_path)

    jobs = VideoJobs(shared, write_outputs, fps=settings.video_fps, ttl_s=settings.job_ttl_s, max_pending=settings.max_pending_videos)
    live = LiveSessions(shared, workdir, idle_s=settings.live_idle_s, max_sessions=settings.max_live_sessions,
                        max_frames=settings.max_live_frames)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI):
        janitor = asyncio.create_task(_sweep_forever(jobs, live, period_s=min(30.0, settings.live_idle_s / 4)))
        try:
            yield
        finally:
            janitor.cancel()
            await asyncio.to_thread(jobs.shutdown)
            shutil.rmtree(workdir, ignore_errors=True)

    app = FastAPI(
        title="classroom-fer dashboard",
        version=__version__,
        description="Facial expression analysis of classroom photos, videos and a live webcam. See docs/dashboard.md.",
        docs_url=None,  # the Swagger and ReDoc pages load their scripts from a CDN
        redoc_url=None,
        openapi_url="/api/openapi.json",
        lifespan=lifespan,
    )
    app.state.workdir = workdir  # server-named files only; removed at shutdown
    app.add_middleware(UploadSizeLimit, max_bytes=settings.max_upload_bytes)
    if allowed_hosts:
        app.add_middleware(TrustedHostMiddleware, allowed_hosts=allowed_hosts)
    app.add_middleware(SecurityHeaders)
    _add_error_handlers(app)
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")

    @app.get("/", include_in_schema=False)
    def index() -> FileResponse:
        return FileResponse(STATIC_DIR / "index.html")

    @app.get("/api/info", summary="Classes, model and limits of this server")
    def info() -> dict:
        classifier = getattr(analyzer, "classifier", None)
        return {
            "version": __version__,
            "classes": list(CLASS_NAMES),
            "model": getattr(classifier, "source", None),
            "backend": getattr(classifier, "backend", None),
            "max_upload_mb": settings.max_upload_mb,
            "max_image_megapixels": settings.max_image_megapixels,
            "video_fps": settings.video_fps,
            "live_idle_s": settings.live_idle_s,
        }

    @app.post("/api/analyze", summary="Analyse one photo: faces, expressions and a class summary")
    def analyze(file: UploadFile = File(..., description="the photo (JPEG, PNG, WebP, BMP, TIFF)")) -> dict:
        image = decode_image(file.file, settings.max_image_pixels)
        frame = _run(shared.analyze_frame, image, "photo")
        return {
            "width": int(image.shape[1]),
            "height": int(image.shape[0]),
            "faces": [face.to_dict() for face in frame.faces],
            "summary": summarize([frame], window_s=settings.window_s),
        }

    @app.post("/api/annotate", summary="Analyse one photo and answer the annotated picture (JPEG)",
              response_class=Response, responses={200: {"content": {"image/jpeg": {}}}})
    def annotate(file: UploadFile = File(...)) -> Response:
        import cv2

        from ..pipeline import draw_faces

        image = decode_image(file.file, settings.max_image_pixels)
        frame = _run(shared.analyze_frame, image, "photo")
        _, encoded = cv2.imencode(".jpg", draw_faces(image, frame.faces), [cv2.IMWRITE_JPEG_QUALITY, 90])
        return Response(encoded.tobytes(), media_type="image/jpeg")

    @app.post("/api/videos", status_code=202, summary="Start analysing a video in the background; poll its status")
    def start_video(file: UploadFile = File(..., description="the video (MP4, AVI, MKV, MOV, WebM)")) -> dict:
        job_id = new_id()
        directory = workdir / f"video-{job_id}"
        directory.mkdir()
        video = directory / "upload.video"
        try:
            save_upload(file.file, video)
            info = probe_video(video, settings.max_image_pixels)
        except BaseException:
            shutil.rmtree(directory, ignore_errors=True)
            raise
        window_s = _video_window(settings, info.duration_s)
        job = jobs.submit(VideoJob(id=job_id, directory=directory, video=video, duration_s=info.duration_s, window_s=window_s))
        return job.public()

    @app.get("/api/videos/{job_id}", summary="Status and progress of a video job; the summary once done")
    def video_status(job_id: str) -> dict:
        return jobs.get(job_id).public()

    @app.delete("/api/videos/{job_id}", status_code=204, summary="Cancel a video job and delete its results")
    def delete_video(job_id: str) -> Response:
        jobs.remove(job_id)
        return Response(status_code=204)

    @app.get("/api/videos/{job_id}/report.html", summary="The video's HTML report (download)")
    def video_report(job_id: str) -> FileResponse:
        return _download(jobs.get(job_id).outputs, "report", f"classroom-video-{job_id[:8]}.html")

    @app.get("/api/videos/{job_id}/detections.csv", summary="Every face in every analysed frame, as CSV (download)")
    def video_csv(job_id: str) -> FileResponse:
        return _download(jobs.get(job_id).outputs, "csv", f"classroom-video-{job_id[:8]}.csv")

    @app.post("/api/live", status_code=201, summary="Open a live webcam session (tracking state lives on the server)")
    def open_live() -> dict:
        session = live.create()
        return {"id": session.id, "idle_timeout_s": settings.live_idle_s, "max_image_megapixels": settings.max_image_megapixels}

    @app.post("/api/live/{session_id}/frames", summary="Analyse one webcam frame of a live session")
    def live_frame(session_id: str, file: UploadFile = File(..., description="the frame (JPEG from canvas.toBlob)")) -> dict:
        session = live.get(session_id)
        image = decode_image(file.file, settings.max_image_pixels)
        result = _run(live.process, session, image)
        return {
            "time_s": round(result.time_s, 3),
            "width": int(image.shape[1]),
            "height": int(image.shape[0]),
            "faces": [face.to_dict() for face in result.faces],
            "mood": label_shares(result.faces),
        }

    @app.post("/api/live/{session_id}/save", summary="Summarise the session so far and make its report downloadable")
    def save_live(session_id: str) -> dict:
        session = live.get(session_id)
        frames = live.frames(session)
        if not frames:
            raise HTTPException(409, "the session has no analysed frame yet; start the camera first")
        session.outputs = _run(write_outputs, frames, session.directory, settings.window_s)
        base = f"/api/live/{session_id}"
        return {"summary": session.outputs.summary, "report_url": f"{base}/report.html", "csv_url": f"{base}/detections.csv"}

    @app.get("/api/live/{session_id}/report.html", summary="The saved live session's HTML report (download)")
    def live_report(session_id: str) -> FileResponse:
        return _download(live.get(session_id).outputs, "report", f"classroom-live-{session_id[:8]}.html")

    @app.get("/api/live/{session_id}/detections.csv", summary="The saved live session's faces as CSV (download)")
    def live_csv(session_id: str) -> FileResponse:
        return _download(live.get(session_id).outputs, "csv", f"classroom-live-{session_id[:8]}.csv")

    @app.delete("/api/live/{session_id}", status_code=204, summary="End a live session and forget its results")
    def close_live(session_id: str) -> Response:
        live.close(session_id)
        return Response(status_code=204)

    return app


def label_shares(faces: list) -> dict[str, float]:
    """Share of the faces showing each expression (all zero when there is no face)."""
    counts = dict.fromkeys(CLASS_NAMES, 0)
    for face in faces:
        counts[face.label] += 1
    total = max(len(faces), 1)
    return {name: count / total for name, count in counts.items()}


def _video_window(settings: ServeSettings, duration_s: float | None) -> float:
    """The timeline bin: the configured one, shorter for a short video so its timeline has some shape,
    but never shorter than the gap between analysed frames."""
    if not duration_s:
        return settings.window_s
    frame_gap = 1.0 / settings.video_fps if settings.video_fps else 0.0
    return max(min(settings.window_s, duration_s / TIMELINE_POINTS), frame_gap, 0.1)


def _run(function, *args):
    """Call into the analyzer, turning a user-caused error into a 422 the page can show."""
    try:
        return function(*args)
    except UserError as error:
        raise HTTPException(422, str(error)) from None


def _download(outputs: Outputs | None, kind: str, filename: str) -> FileResponse:
    if outputs is None:
        raise HTTPException(409, "nothing to download yet")
    path = outputs.report if kind == "report" else outputs.csv
    media_type = "text/html" if kind == "report" else "text/csv"
    # An attachment: the report opens from disk, outside this app's Content-Security-Policy.
    return FileResponse(path, media_type=media_type, filename=filename, content_disposition_type="attachment")


async def _sweep_forever(jobs: VideoJobs, live: LiveSessions, period_s: float) -> None:
    while True:
        await asyncio.sleep(period_s)
        now = time.monotonic()
        jobs.sweep(now)
        live.sweep(now)


def _add_error_handlers(app: FastAPI) -> None:
    """Every error is JSON ``{"detail": "<one readable sentence>"}``."""

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, error: RequestValidationError) -> JSONResponse:
        problems = []
        for item in error.errors():
            where = ".".join(str(part) for part in item.get("loc", ()) if part != "body")
            problems.append(f"{where}: {item.get('msg', 'invalid')}" if where else item.get("msg", "invalid"))
        return JSONResponse({"detail": "; ".join(problems) or "invalid request"}, status_code=422)

    @app.exception_handler(Exception)
    async def unexpected_error(request: Request, error: Exception) -> JSONResponse:
        log.exception("unexpected error on %s %s", request.method, request.url.path)
        return JSONResponse({"detail": f"internal error ({type(error).__name__}); see the server log"}, status_code=500)

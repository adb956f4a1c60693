"""Shared analyzer access, background video jobs and live webcam sessions.

One :class:`Analyzer` serves every request. Its detector and classifier run one call at a time
behind a lock: the machine's cores are better spent inside one inference than split between
several, and a live frame never waits longer than one video frame for its turn.
"""
from __future__ import annotations

import contextlib
import logging
import secrets
import shutil
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from fastapi import HTTPException

from ..errors import UserError

log = logging.getLogger("classroom_fer.serve")
VIDEO_SOURCE = "video"  # what reports and CSVs call an uploaded video
LIVE_SOURCE = "live"


class SharedAnalyzer:
    """The one Analyzer of the app, used by one thread at a time."""

    def __init__(self, analyzer) -> None:
        self.analyzer = analyzer
        self._lock = threading.Lock()

    def analyze_frame(self, image: np.ndarray, source: str):
        with self._lock:
            return self.analyzer.analyze_frame(image, source=source)

    def stream(self, source: str):
        return self.analyzer.stream(source)

    def process(self, stream, image: np.ndarray, time_s: float):
        with self._lock:
            return stream.process(image, time_s)

    def video_frames(self, path: Path, fps: float | None) -> Iterator:
        """Frames of a video analysed one at a time, taking the lock per frame, not per video."""
        frames = self.analyzer.analyze_video(path, fps=fps)
        try:
            while True:
                with self._lock:
                    frame = next(frames, None)
                if frame is None:
                    return
                yield frame
        finally:
            frames.close()  # releases the video file at once when a job is cancelled


def new_id() -> str:
    """An unguessable id: it is the only key to a job's or a session's results."""
    return secrets.token_urlsafe(12)


@dataclass
class Outputs:
    """What a finished video job or a saved live session offers for download."""

    summary: dict
    report: Path
    csv: Path


@dataclass
class VideoJob:
    id: str
    directory: Path
    video: Path
    duration_s: float | None
    window_s: float
    status: str = "queued"  # queued -> running -> done | failed | cancelled
    progress: float = 0.0
    frames_done: int = 0
    video_time_s: float = 0.0
    error: str | None = None
    outputs: Outputs | None = None
    finished_at: float | None = None
    cancel: threading.Event = field(default_factory=threading.Event)

    def public(self) -> dict:
        """The job as the API shows it."""
        state = {
            "id": self.id,
            "status": self.status,
            "progress": round(self.progress, 4),
            "frames_done": self.frames_done,
            "video_time_s": round(self.video_time_s, 3),
            "duration_s": self.duration_s,
            "error": self.error,
        }
        if self.outputs is not None:
            state["summary"] = self.outputs.summary
            state["report_url"] = f"/api/videos/{self.id}/report.html"
            state["csv_url"] = f"/api/videos/{self.id}/detections.csv"
        return state


Finisher = Callable[[list, Path, float], Outputs]  # (frames, folder, timeline bin in seconds)


class VideoJobs:
    """Video analyses in one background thread, queued in arrival order, kept for ``ttl_s`` after they end."""

    def __init__(self, analyzer: SharedAnalyzer, finish: Finisher, fps: float | None, ttl_s: float, max_pending: int) -> None:
        self.analyzer = analyzer
        self.finish = finish
        self.fps = fps
        self.ttl_s = ttl_s
        self.max_pending = max_pending
        self._jobs: dict[str, VideoJob] = {}
        self._lock = threading.Lock()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="video-job")

    def submit(self, job: VideoJob) -> VideoJob:
        with self._lock:
            pending = sum(1 for other in self._jobs.values() if other.status in ("queued", "running"))
            if pending >= self.max_pending:
                shutil.rmtree(job.directory, ignore_errors=True)
                raise HTTPException(429, f"{pending} videos are already waiting; try again when one has finished")
            self._jobs[job.id] = job
        self._executor.submit(self._run, job)
        return job

    def get(self, job_id: str) -> VideoJob:
        with self._lock:
            job = self._jobs.get(job_id)
        if job is None:
            raise HTTPException(404, "no such video job (it may have expired)")
        return job

    def remove(self, job_id: str) -> None:
        """Cancel a job if it is still going, and delete everything it left."""
        job = self.get(job_id)
        job.cancel.set()
        with self._lock:
            self._jobs.pop(job_id, None)
        if job.status not in ("queued", "running"):
            shutil.rmtree(job.directory, ignore_errors=True)
        # A running job deletes its own folder when it sees the cancel flag.

    def sweep(self, now: float) -> None:
        with self._lock:
            expired = [job for job in self._jobs.values() if job.finished_at is not None and now - job.finished_at > self.ttl_s]
            for job in expired:
                del self._jobs[job.id]
        for job in expired:
            shutil.rmtree(job.directory, ignore_errors=True)

    def shutdown(self) -> None:
        with self._lock:
            jobs = list(self._jobs.values())
        for job in jobs:
            job.cancel.set()
        self._executor.shutdown(wait=True, cancel_futures=True)

    def _run(self, job: VideoJob) -> None:
        if job.cancel.is_set():
            self._end(job, "cancelled")
            return
        job.status = "running"
        frames = []
        try:
            with contextlib.closing(self.analyzer.video_frames(job.video, self.fps)) as analysed:
                for frame in analysed:
                    if job.cancel.is_set():
                        break
                    frame.image = None  # keep the results, not the pictures
                    frame.source = VIDEO_SOURCE  # not the server's temporary path
                    frames.append(frame)
                    job.frames_done = len(frames)
                    job.video_time_s = frame.time_s
                    if job.duration_s:
                        job.progress = min(frame.time_s / job.duration_s, 0.99)
            if job.cancel.is_set():
                self._end(job, "cancelled")
                return
            job.video.unlink(missing_ok=True)
            if not frames:
                raise UserError("no frame of the video could be analysed")
            job.outputs = self.finish(frames, job.directory, job.window_s)
            job.progress = 1.0
            self._end(job, "done")
        except UserError as error:
            job.error = str(error).replace(str(job.video), "the video")  # messages name the server's own path
            self._end(job, "failed")
        except Exception as error:  # a job must end with a status the page can show, whatever broke
            log.exception("video job %s failed", job.id)
            job.error = f"analysis failed ({type(error).__name__}: {error})"
            self._end(job, "failed")

    def _end(self, job: VideoJob, status: str) -> None:
        job.video.unlink(missing_ok=True)
        if status == "cancelled" or job.cancel.is_set():
            shutil.rmtree(job.directory, ignore_errors=True)
        job.status = status
        job.finished_at = time.monotonic()


@dataclass
class LiveSession:
    id: str
    stream: object
    directory: Path
    frames: deque
    started: float = field(default_factory=time.monotonic)
    last_seen: float = field(default_factory=time.monotonic)
    outputs: Outputs | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)

    def clock(self) -> float:
        """Seconds since the session began, on the server's clock: never goes backwards."""
        return time.monotonic() - self.started


class LiveSessions:
    """Per-browser webcam sessions: tracking state and in-memory results (never pictures),
    forgotten after ``idle_s`` without a frame, or when the page ends the session."""

    def __init__(self, analyzer: SharedAnalyzer, root: Path, idle_s: float, max_sessions: int, max_frames: int) -> None:
        self.analyzer = analyzer
        self.root = root
        self.idle_s = idle_s
        self.max_sessions = max_sessions
        self.max_frames = max_frames
        self._sessions: dict[str, LiveSession] = {}
        self._lock = threading.Lock()

    def create(self) -> LiveSession:
        self.sweep(time.monotonic())
        session_id = new_id()
        session = LiveSession(id=session_id, stream=self.analyzer.stream(LIVE_SOURCE), directory=self.root / f"live-{session_id}",
                              frames=deque(maxlen=self.max_frames))
        with self._lock:
            if len(self._sessions) >= self.max_sessions:
                raise HTTPException(429, f"{len(self._sessions)} live sessions are open; close one (or wait {self.idle_s:g} s for idle ones to expire)")
            self._sessions[session_id] = session
        return session

    def get(self, session_id: str) -> LiveSession:
        with self._lock:
            session = self._sessions.get(session_id)
        if session is None:
            raise HTTPException(404, "no such live session (it may have expired after being idle)")
        session.last_seen = time.monotonic()
        return session

    def process(self, session: LiveSession, image: np.ndarray):
        with session.lock:
            result = self.analyzer.process(session.stream, image, session.clock())
            result.image = None
            session.frames.append(result)
        return result

    def frames(self, session: LiveSession) -> list:
        with session.lock:
            return list(session.frames)

    def close(self, session_id: str) -> None:
        with self._lock:
            session = self._sessions.pop(session_id, None)
        if session is None:
            raise HTTPException(404, "no such live session (it may have expired after being idle)")
        shutil.rmtree(session.directory, ignore_errors=True)

    def sweep(self, now: float) -> None:
        with self._lock:
            idle = [s for s in self._sessions.values() if now - s.last_seen > self.idle_s]
            for session in idle:
                del self._sessions[session.id]
        for session in idle:
            shutil.rmtree(session.directory, ignore_errors=True)

    def count(self) -> int:
        with self._lock:
            return len(self._sessions)

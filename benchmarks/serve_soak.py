"""Load and soak test of the dashboard: 20 concurrent uploads, then minutes of mixed traffic, with the
server's memory sampled throughout. Loopback only, and every loop stops by itself.

Starts `classroom-fer serve --host 127.0.0.1 --port 0` in a child process, then:

1. burst: --burst clients (default 20) upload a group photo from ../shared at the same moment;
2. soak: --clients threads loop for --seconds (default 120) over photos (analyze, annotate), live
   sessions (open, frames, save, report, close), a short video job (upload, poll, report, delete)
   and bad uploads (a text file, a truncated JPEG, a PNG header declaring 20000 x 20000 pixels,
   an empty file) that must get their 4xx;
3. stops the server with SIGINT and checks that it exits cleanly and leaves nothing in its temporary
   folder (the server runs with TMPDIR set to a folder of its own).

The server's resident memory (VmRSS) and open file descriptors are sampled every --sample-s
seconds. Prints the figures; exit status 1 if any request failed or got an unexpected status.

    OMP_NUM_THREADS=1 nice -n 19 python benchmarks/serve_soak.py              # the full 2-minute soak
    python benchmarks/serve_soak.py --seconds 10 --json soak.json           # a short one (the test)
"""
from __future__ import annotations

import argparse
import json
import os
import re
import signal
import statistics
import struct
import subprocess
import sys
import tempfile
import threading
import time
import zlib
from collections import Counter
from pathlib import Path

import cv2
import httpx
import numpy as np

GROUP_PHOTOS = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "group-photos"
PHOTO = GROUP_PHOTOS / "2008_007676.jpg"  # seven faces
LIVE_PHOTO = GROUP_PHOTOS / "2008_004176.jpg"
STARTUP_TIMEOUT_S = 120.0
REQUEST_TIMEOUT_S = 120.0  # a request queued behind 20 others on a busy 2-core machine


def png_declaring(width: int, height: int) -> bytes:
    """A tiny PNG whose header claims ``width`` x ``height`` pixels."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


def small_video(photo: np.ndarray, frames: int = 20, fps: float = 10.0) -> bytes:
    """An MJPG AVI of the photo panning sideways, as bytes."""
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "pan.avi"
        writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps, (photo.shape[1], photo.shape[0]))
        for step in range(frames):
            writer.write(np.roll(photo, 3 * step, axis=1))
        writer.release()
        return path.read_bytes()


class Server:
    """`classroom-fer serve` on a free loopback port, in a child process."""

    def __init__(self, threads: int, temp_dir: Path) -> None:
        command = [sys.executable, "-m", "classroom_fer.cli", "serve", "--host", "127.0.0.1", "--port", "0", "--threads", str(threads)]
        env = {**os.environ, "TMPDIR": str(temp_dir)}
        self.process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
        self.stderr: list[str] = []
        threading.Thread(target=self._drain_stderr, daemon=True).start()
        line = self._first_line()
        match = re.search(r"http://127\.0\.0\.1:(\d+)/", line)
        if not match:
            self.stop()
            raise RuntimeError(f"the server did not start: {line!r} {''.join(self.stderr)[-2000:]}")
        self.url = f"http://127.0.0.1:{match.group(1)}"

    def _first_line(self) -> str:
        result: list[str] = []
        reader = threading.Thread(target=lambda: result.append(self.process.stdout.readline()), daemon=True)
        reader.start()
        reader.join(STARTUP_TIMEOUT_S)
        return result[0] if result else ""

    def _drain_stderr(self) -> None:
        for line in self.process.stderr:
            self.stderr.append(line)

    def rss_mb(self) -> float:
        status = Path(f"/proc/{self.process.pid}/status").read_text()
        return int(re.search(r"VmRSS:\s+(\d+) kB", status).group(1)) / 1024

    def open_files(self) -> int:
        return len(os.listdir(f"/proc/{self.process.pid}/fd"))

    def stop(self) -> int:
        """SIGINT, as Ctrl+C would; the exit status (killed after 30 s if it hangs)."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.returncode


class Tally:
    """Thread-safe counts of requests by kind, their latencies and every failure."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.counts: Counter[str] = Counter()
        self.latencies: dict[str, list[float]] = {}
        self.failures: list[str] = []

    def check(self, kind: str, started: float, response: httpx.Response, expected: int) -> httpx.Response:
        with self.lock:
            self.counts[kind] += 1
            self.latencies.setdefault(kind, []).append(time.perf_counter() - started)
            if response.status_code != expected:
                self.failures.append(f"{kind}: {response.status_code} (expected {expected}) {response.text[:200]}")
        return response

    def fail(self, kind: str, error: Exception) -> None:
        with self.lock:
            self.counts[kind] += 1
            self.failures.append(f"{kind}: {type(error).__name__}: {error}")


def request(client: httpx.Client, tally: Tally, kind: str, method: str, url: str, expected: int, **kwargs) -> httpx.Response | None:
    started = time.perf_counter()
    try:
        response = client.request(method, url, **kwargs)
    except httpx.HTTPError as error:
        tally.fail(kind, error)
        return None
    return tally.check(kind, started, response, expected)


def upload(data: bytes, name: str) -> dict:
    return {"files": {"file": (name, data, "application/octet-stream")}}


def burst(server: Server, photo: bytes, clients: int, tally: Tally) -> list[int]:
    """``clients`` photo uploads released at the same instant; the faces each answer found."""
    barrier = threading.Barrier(clients)
    faces: list[int] = []

    def one() -> None:
        with httpx.Client(base_url=server.url, timeout=REQUEST_TIMEOUT_S) as client:
            barrier.wait()
            response = request(client, tally, "burst analyze", "POST", "/api/analyze", 200, **upload(photo, "class.jpg"))
            if response is not None and response.status_code == 200:
                with tally.lock:
                    faces.append(len(response.json()["faces"]))

    threads = [threading.Thread(target=one) for _ in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return faces


def soak_client(server: Server, number: int, deadline: float, max_rounds: int, payloads: dict[str, bytes], tally: Tally) -> None:
    """One client's loop of mixed traffic until ``deadline`` (or ``max_rounds``)."""
    bad = [("text", payloads["text"], 415), ("truncated jpeg", payloads["truncated"], 415),
           ("20000x20000 png", payloads["huge"], 413), ("empty file", b"", 422)]
    with httpx.Client(base_url=server.url, timeout=REQUEST_TIMEOUT_S) as client:
        for round_number in range(max_rounds):
            if time.monotonic() >= deadline:
                return
            step = (round_number + number) % 5
            if step == 0:
                request(client, tally, "analyze", "POST", "/api/analyze", 200, **upload(payloads["photo"], "class.jpg"))
                request(client, tally, "info", "GET", "/api/info", 200)
            elif step == 1:
                request(client, tally, "annotate", "POST", "/api/annotate", 200, **upload(payloads["photo"], "class.jpg"))
            elif step == 2:
                live_session(client, tally, payloads["live"])
            elif step == 3:
                name, data, status = bad[(round_number // 5 + number) % len(bad)]
                request(client, tally, f"bad upload ({name})", "POST", "/api/analyze", status, **upload(data, "x.jpg"))
            elif number == 0:  # one client runs the video jobs, which queue one at a time on the server
                video_job(client, tally, payloads["video"], deadline)


def live_session(client: httpx.Client, tally: Tally, frame: bytes) -> None:
    opened = request(client, tally, "live open", "POST", "/api/live", 201)
    if opened is None or opened.status_code != 201:
        return
    base = f"/api/live/{opened.json()['id']}"
    for _ in range(3):
        request(client, tally, "live frame", "POST", f"{base}/frames", 200, **upload(frame, "frame.jpg"))
    request(client, tally, "live save", "POST", f"{base}/save", 200)
    request(client, tally, "live report", "GET", f"{base}/report.html", 200)
    request(client, tally, "live close", "DELETE", base, 204)


def video_job(client: httpx.Client, tally: Tally, video: bytes, deadline: float) -> None:
    started = request(client, tally, "video upload", "POST", "/api/videos", 202, **upload(video, "lesson.avi"))
    if started is None or started.status_code != 202:
        return
    base = f"/api/videos/{started.json()['id']}"
    while True:
        status = request(client, tally, "video poll", "GET", base, 200)
        if status is None or status.status_code != 200:
            return
        state = status.json()["status"]
        if state == "done":
            request(client, tally, "video csv", "GET", f"{base}/detections.csv", 200)
            break
        if state != "running" and state != "queued":
            tally.fail("video job", RuntimeError(f"ended {state}: {status.json().get('error')}"))
            break
        if time.monotonic() > deadline + 60:
            break  # still running when the soak ends: cancelled below
        time.sleep(0.5)
    request(client, tally, "video delete", "DELETE", base, 204)


def sample_memory(server: Server, stop: threading.Event, period_s: float, samples: list[tuple[float, float, int]]) -> None:
    start = time.monotonic()
    while not stop.wait(period_s):
        try:
            samples.append((time.monotonic() - start, server.rss_mb(), server.open_files()))
        except (OSError, AttributeError):
            return


def slope_mb_per_min(samples: list[tuple[float, float, int]]) -> float:
    """Least-squares slope of RSS over the second half of the soak (after allocators settle)."""
    half = samples[len(samples) // 2:]
    if len(half) < 3:
        return float("nan")
    times, rss = np.array([s[0] for s in half]), np.array([s[1] for s in half])
    return float(np.polyfit(times, rss, 1)[0] * 60)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=120.0, help="length of the soak (default 120)")
    parser.add_argument("--burst", type=int, default=20, help="concurrent uploads in the burst (default 20)")
    parser.add_argument("--clients", type=int, default=4, help="client threads during the soak (default 4)")
    parser.add_argument("--max-rounds", type=int, default=100_000, help="upper bound on each client's loop")
    parser.add_argument("--sample-s", type=float, default=1.0, help="memory sampling period")
    parser.add_argument("--threads", type=int, default=1, help="the server's inference threads")
    parser.add_argument("--json", help="also write the figures here")
    args = parser.parse_args()

    photo_image = cv2.imread(str(PHOTO))
    photo = PHOTO.read_bytes()
    payloads = {
        "photo": photo,
        "live": cv2.imencode(".jpg", cv2.imread(str(LIVE_PHOTO)))[1].tobytes(),
        "video": small_video(photo_image),
        "text": b"this is not a picture\n" * 20,
        "truncated": photo[: len(photo) // 2],
        "huge": png_declaring(20000, 20000),
    }
    server_temp = Path(tempfile.mkdtemp(prefix="serve-soak-"))
    server = Server(args.threads, server_temp)
    tally = Tally()
    samples: list[tuple[float, float, int]] = []
    try:
        with httpx.Client(base_url=server.url, timeout=REQUEST_TIMEOUT_S) as client:  # warm-up: first inference allocates
            request(client, tally, "warm-up", "POST", "/api/analyze", 200, **upload(photo, "class.jpg"))
        rss_start, files_start = server.rss_mb(), server.open_files()
        started = time.monotonic()
        burst_faces = burst(server, photo, args.burst, tally)
        burst_s = time.monotonic() - started
        stop = threading.Event()
        sampler = threading.Thread(target=sample_memory, args=(server, stop, args.sample_s, samples))
        sampler.start()
        deadline = time.monotonic() + args.seconds
        clients = [threading.Thread(target=soak_client, args=(server, n, deadline, args.max_rounds, payloads, tally))
                   for n in range(args.clients)]
        for thread in clients:
            thread.start()
        for thread in clients:
            thread.join()
        soak_s = time.monotonic() - deadline + args.seconds
        stop.set()
        sampler.join()
        rss_end, files_end = server.rss_mb(), server.open_files()
    finally:
        exit_status = server.stop()
    # onnxruntime writes a session marker (.ses) into TMPDIR when it is imported; anything else is the app's.
    leftover = sorted(str(p.relative_to(server_temp)) for p in server_temp.rglob("*") if p.name != ".ses")
    (server_temp / ".ses").unlink(missing_ok=True)
    if not leftover:
        server_temp.rmdir()
    tracebacks = sum("Traceback" in line for line in server.stderr)

    analyze_ms = sorted(1000 * t for t in tally.latencies.get("analyze", []))
    figures = {
        "burst_clients": args.burst,
        "burst_ok": len(burst_faces),
        "burst_faces": sorted(set(burst_faces)),
        "burst_s": round(burst_s, 2),
        "soak_s": round(soak_s, 1),
        "requests": sum(tally.counts.values()),
        "by_kind": dict(sorted(tally.counts.items())),
        "failures": tally.failures[:20],
        "failure_count": len(tally.failures),
        "analyze_ms_p50": round(statistics.median(analyze_ms), 1) if analyze_ms else None,
        "analyze_ms_p95": round(analyze_ms[int(0.95 * (len(analyze_ms) - 1))], 1) if analyze_ms else None,
        "rss_mb_start": round(rss_start, 1),
        "rss_mb_end": round(rss_end, 1),
        "rss_mb_max": round(max([rss_end] + [s[1] for s in samples]), 1),
        "rss_mb_per_min_second_half": round(slope_mb_per_min(samples), 2),
        "open_files_start": files_start,
        "open_files_end": files_end,
        "server_exit_status": exit_status,
        "server_tracebacks": tracebacks,
        "leftover_temp_files": leftover,
        "rss_samples": [(round(t, 1), round(rss, 1), files) for t, rss, files in samples],
    }
    print(f"burst: {figures['burst_ok']}/{args.burst} concurrent uploads answered 200 in {burst_s:.1f} s, faces per answer {figures['burst_faces']}")
    print(f"soak: {figures['requests']} requests in {soak_s:.0f} s with {args.clients} clients, {len(tally.failures)} failure(s)")
    for kind, count in figures["by_kind"].items():
        print(f"  {kind:<28}{count:>6}")
    print(f"analyze latency under load: p50 {figures['analyze_ms_p50']} ms, p95 {figures['analyze_ms_p95']} ms")
    print(f"server RSS: {rss_start:.1f} MB after warm-up -> {rss_end:.1f} MB at the end (max {figures['rss_mb_max']} MB); "
          f"second-half trend {figures['rss_mb_per_min_second_half']:+.2f} MB/min")
    print(f"open files: {files_start} -> {files_end}; server exit status {exit_status}; tracebacks in its log {tracebacks}; "
          f"temporary files left {len(leftover)}")
    for failure in tally.failures[:20]:
        print(f"  FAILED {failure}")
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=2) + "\n")
    clean = not tally.failures and exit_status in (0, 130) and not tracebacks and not leftover  # 130: stopped by Ctrl+C
    return 0 if clean else 1


if __name__ == "__main__":
    sys.exit(main())

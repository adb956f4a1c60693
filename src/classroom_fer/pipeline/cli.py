"""`classroom-fer analyze SOURCE --out DIR`: photos, folders, videos and webcams to annotated media,
detections.jsonl/.csv, summary.json and report.html."""
from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import time
from collections.abc import Iterator
from pathlib import Path

from ..errors import UserError

log = logging.getLogger("classroom_fer")


def add_analyze(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("analyze", help="find faces and their expressions in a photo, folder, video or webcam")
    p.add_argument("source", nargs="?", help="image, folder of images (recursive), video file, or webcam (webcam:0 or 0)")
    p.add_argument("--demo", action="store_true", help="analyse the public-domain astronaut photo shipped with scikit-image")
    p.add_argument("--out", default="analysis", help="output folder (default: analysis)")
    p.add_argument("--model", help="checkpoint folder or .onnx file (default: the shipped model)")
    p.add_argument("--backend", choices=["auto", "torch", "onnx"], default="auto")
    p.add_argument("--detector", choices=["centerface", "haar"], default="centerface")
    p.add_argument("--det-threshold", type=float, default=0.5, help="face detector score threshold (default 0.5)")
    p.add_argument("--min-face", type=int, default=20, help="smallest face side kept, in pixels (default 20)")
    p.add_argument("--det-size", type=int, default=640, help="CenterFace runs on frames scaled down to this longer side (default 640)")
    p.add_argument("--fps", type=float, default=5.0, help="frames analysed per second of video or webcam (default 5; 0 = all)")
    p.add_argument("--half-life", type=float, default=1.0, help="smoothing half-life of each student's probabilities, seconds")
    p.add_argument("--miss-budget", type=float, default=2.0, help="seconds a student may go undetected and keep the same id")
    p.add_argument("--window", type=float, default=10.0, help="summary time window in seconds (default 10)")
    p.add_argument("--duration", type=float, help="webcam: stop after this many seconds (default: until Ctrl-C)")
    p.add_argument("--save-crops", action="store_true", help="also save the aligned 48x48 faces (off by default for privacy)")
    p.add_argument("--threads", type=int, help="CPU threads for detector and classifier")
    p.add_argument("--no-tta", action="store_true", help="classify each face once, without averaging it with its mirror image")
    p.set_defaults(run=run_analyze)


def run_analyze(args: argparse.Namespace) -> int:
    from .analyzer import Analyzer
    from .outputs import DetectionWriter
    from .report import write_report
    from .sources import open_video, open_webcam, resolve_source
    from .summary import summarize

    if args.fps < 0 or args.half_life < 0 or args.miss_budget < 0 or args.window <= 0:
        raise UserError("--fps, --half-life and --miss-budget must be >= 0 and --window > 0")
    source = resolve_source(args.source, demo=args.demo)
    # Open cameras and videos before loading models or creating folders, so a bad source fails fast.
    capture = open_webcam(source.camera) if source.kind == "webcam" else open_video(source.path) if source.kind == "video" else None
    try:
        analyzer = Analyzer(model=args.model, backend=args.backend, detector=args.detector, det_threshold=args.det_threshold,
                            min_face=args.min_face, det_size=args.det_size, half_life_s=args.half_life, miss_budget_s=args.miss_budget,
                            threads=args.threads, keep_crops=args.save_crops, tta=not args.no_tta)
        out = Path(args.out)
        try:
            out.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise UserError(f"{out}: cannot create the output folder ({error.strerror})") from None
        with _output_errors(out), DetectionWriter(out) as writer:
            collector = _Collector(writer, out / "crops" if args.save_crops else None)
            if source.kind == "video":
                _analyze_video(analyzer, source, capture, args.fps or None, out, collector)
            elif source.kind == "webcam":
                _analyze_webcam(analyzer, source, capture, args.fps or None, args.duration, out, collector)
            else:
                _analyze_stills(analyzer, source, out, collector)
    finally:
        if capture is not None:
            capture.release()

    summary = summarize(collector.frames, window_s=args.window)
    summary["unreadable"] = collector.failed
    with _output_errors(out):
        (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
        write_report(summary, out / "report.html")
    print(f"{source.name}: {summary['frames']} frame(s), {summary['faces']} face(s)"
          + (f", {len(collector.failed)} unreadable item(s) skipped" if collector.failed else "")
          + f" -> {out}{os.sep} (report.html, summary.json, detections.jsonl, detections.csv)")
    return 0


@contextlib.contextmanager
def _output_errors(out: Path) -> Iterator[None]:
    """A failed write (a full disk, a permission) is one error line that names the output folder."""
    try:
        yield
    except OSError as error:
        raise UserError(f"{out}: cannot write the outputs ({error.strerror or error})") from None


class _Collector:
    """Writes each analysed frame's records as it comes and keeps its faces (not its pixels) for the summary."""

    def __init__(self, writer, crops_dir: Path | None) -> None:
        self.writer = writer
        self.crops_dir = crops_dir
        self.frames: list = []
        self.failed: list[str] = []

    def add(self, frame, stem: str) -> None:
        from .outputs import save_crops

        self.writer.write(frame)
        if self.crops_dir is not None:
            save_crops(self.crops_dir, frame, stem)
        frame.image = None
        frame.crops = None
        self.frames.append(frame)


def _analyze_stills(analyzer, source, out: Path, collector: _Collector) -> None:
    import cv2
    from tqdm import tqdm

    from ..preprocessing import read_image
    from .outputs import draw_faces
    from .sources import demo_image, list_folder

    if source.kind == "folder":
        paths, others = list_folder(source.path, exclude=out)
        for other in others:
            log.warning("%s: not an image, skipped", other)
        if not paths:
            raise UserError(f"{source.path}: no images found in this folder")
    else:
        paths = [source.path]
    annotated_dir = out / "annotated"
    for number, path in enumerate(tqdm(paths, desc="images", unit="img", disable=None if len(paths) > 1 else True)):
        try:
            image = demo_image() if source.kind == "demo" else read_image(path)
        except UserError as error:
            if source.kind != "folder":
                raise
            log.warning("%s (skipped)", error)
            collector.failed.append(str(path))
            continue
        name = source.name if source.kind == "demo" else str(path)
        relative = Path(source.name) if source.kind == "demo" else path.relative_to(source.path) if source.kind == "folder" else Path(path.name)
        frame = analyzer.analyze_frame(image, index=number, source=name)
        if not frame.faces:
            log.warning("%s: no faces found", name)
        target = (annotated_dir / relative).with_suffix(".jpg")
        target.parent.mkdir(parents=True, exist_ok=True)
        if not cv2.imwrite(str(target), draw_faces(image, frame.faces)):
            raise OSError(f"{target} could not be written")
        collector.add(frame, relative.with_suffix("").as_posix().replace("/", "__"))
    if not collector.frames:
        raise UserError(f"{source.name}: none of the {len(paths)} images could be read")


def _analyze_video(analyzer, source, capture, fps: float | None, out: Path, collector: _Collector) -> None:
    import cv2
    from tqdm import tqdm

    from .outputs import VideoSink, draw_faces

    native_fps = capture.get(cv2.CAP_PROP_FPS) or 30.0
    total = int(capture.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
    expected = (round(total / native_fps * min(fps, native_fps)) if fps else total) or None
    sink = VideoSink(out / "annotated.mp4", min(fps or native_fps, native_fps))
    try:
        frames = analyzer.analyze_capture(capture, source.name, fps=fps)
        for frame in tqdm(frames, total=expected, desc="frames", unit="frame", disable=None):
            sink.write(draw_faces(frame.image, frame.faces))
            collector.add(frame, Path(source.name).stem)
    finally:
        sink.close()


def _analyze_webcam(analyzer, source, capture, fps: float | None, duration: float | None, out: Path, collector: _Collector) -> None:
    """Analyse live frames until ``duration`` seconds pass or Ctrl-C; the outputs are written either way."""
    from tqdm import tqdm

    from .outputs import VideoSink, draw_faces

    sink = VideoSink(out / "annotated.mp4", fps or 10.0)
    stream = analyzer.stream(source.name)
    start = time.monotonic()
    next_time = 0.0
    progress = tqdm(desc="frames", unit="frame", disable=None)
    try:
        while duration is None or time.monotonic() - start < duration:
            ok, image = capture.read()
            if not ok:
                log.warning("%s: the camera stopped delivering frames", source.name)
                break
            now = time.monotonic() - start
            if fps and now < next_time:
                continue
            next_time = now + (1.0 / fps if fps else 0.0)
            frame = stream.process(image, now)
            sink.write(draw_faces(image, frame.faces))
            collector.add(frame, "webcam")
            progress.update()
    except KeyboardInterrupt:
        log.info("stopped; writing the outputs")
    finally:
        progress.close()
        sink.close()
    if not collector.frames:
        raise UserError(f"{source.name}: no frames could be read from the camera")

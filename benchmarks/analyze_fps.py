"""Frames per second of the classroom analysis on 640x480 frames made from the group photos.

Each frame holds one of the annotated group photos of ../shared/data/group-photos with at least
--faces annotated faces (default 6: five photos, 6.6 faces per frame on average), letterboxed
into 640x480. Prints the time per stage (detect, classify = align + model, track, draw) and the
end-to-end rate of ``AnalysisStream.process`` + ``draw_faces``, the path a webcam or video takes.

    OMP_NUM_THREADS=2 python benchmarks/analyze_fps.py --threads 2
"""
from __future__ import annotations

import argparse
import os
import time
import xml.etree.ElementTree as ElementTree
from pathlib import Path

import cv2
import numpy as np

from classroom_fer.pipeline import Analyzer, draw_faces
from classroom_fer.pipeline.analyzer import _face
from classroom_fer.pipeline.tracking import Tracker

GROUP_PHOTOS = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "group-photos"
WIDTH, HEIGHT = 640, 480


def annotated_photos(min_faces: int) -> list[Path]:
    photos = []
    for name in ("training.xml", "testing.xml"):
        for image in ElementTree.parse(GROUP_PHOTOS / name).getroot().iter("image"):
            if len(list(image.iter("box"))) >= min_faces:
                photos.append(GROUP_PHOTOS / image.get("file"))
    return sorted(photos)


def letterbox(image: np.ndarray) -> np.ndarray:
    scale = min(WIDTH / image.shape[1], HEIGHT / image.shape[0])
    resized = cv2.resize(image, (round(image.shape[1] * scale), round(image.shape[0] * scale)), interpolation=cv2.INTER_LINEAR)
    canvas = np.zeros((HEIGHT, WIDTH, 3), np.uint8)
    top, left = (HEIGHT - resized.shape[0]) // 2, (WIDTH - resized.shape[1]) // 2
    canvas[top:top + resized.shape[0], left:left + resized.shape[1]] = resized
    return canvas


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2, help="onnxruntime threads for detector and classifier")
    parser.add_argument("--frames", type=int, default=200)
    parser.add_argument("--faces", type=int, default=6, help="use only photos with at least this many annotated faces")
    parser.add_argument("--detector", default="centerface", choices=["centerface", "haar"])
    parser.add_argument("--backend", default="auto", choices=["auto", "torch", "onnx"])
    parser.add_argument("--model", help="checkpoint folder or .onnx file (default: the shipped model)")
    args = parser.parse_args()

    frames = [letterbox(cv2.imread(str(path))) for path in annotated_photos(args.faces)]
    analyzer = Analyzer(model=args.model, backend=args.backend, detector=args.detector, threads=args.threads)
    for frame in frames:  # warm-up: onnxruntime allocates its buffers per input shape
        analyzer.analyze_image(frame)

    tracker = Tracker()
    stage = dict.fromkeys(("detect", "classify", "track", "draw"), 0.0)
    face_count = 0
    for number in range(args.frames):
        image = frames[number % len(frames)]
        time_s = number / 15
        t0 = time.perf_counter()
        detections = analyzer.detect(image)
        t1 = time.perf_counter()
        _, probabilities = analyzer.classify(image, detections)
        t2 = time.perf_counter()
        boxes = np.array([d.box for d in detections], dtype=np.float64).reshape(-1, 4)
        tracks = tracker.update(boxes, probabilities, time_s)
        faces = [_face(d.box, d.score, t.probabilities, t.track_id, WIDTH, HEIGHT) for d, t in zip(detections, tracks)]
        t3 = time.perf_counter()
        draw_faces(image, faces)
        t4 = time.perf_counter()
        for key, seconds in zip(stage, (t1 - t0, t2 - t1, t3 - t2, t4 - t3)):
            stage[key] += seconds
        face_count += len(faces)

    stream = analyzer.stream()
    start, cpu_start = time.perf_counter(), time.process_time()
    for number in range(args.frames):
        result = stream.process(frames[number % len(frames)], number / 15)
        draw_faces(result.image, result.faces)
    end_to_end = time.perf_counter() - start
    cpu = time.process_time() - cpu_start

    print(f"{args.frames} frames of {WIDTH}x{HEIGHT}, {face_count / args.frames:.1f} faces per frame, "
          f"detector {args.detector}, classifier {analyzer.classifier.backend}, threads {args.threads}, "
          f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}, {os.cpu_count()} CPUs")
    for key, seconds in stage.items():
        print(f"  {key:<9}{1000 * seconds / args.frames:7.2f} ms/frame")
    print(f"  {'sum':<9}{1000 * sum(stage.values()) / args.frames:7.2f} ms/frame")
    print(f"end to end: {args.frames / end_to_end:.1f} FPS ({1000 * end_to_end / args.frames:.1f} ms/frame wall clock, "
          f"{1000 * cpu / args.frames:.1f} ms/frame CPU time over all threads)")
    print(f"load average while running: {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs (other processes share them)")


if __name__ == "__main__":
    main()

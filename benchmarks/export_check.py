"""Checks of the exported graphs on real faces (FER2013 PublicTest), printed as PASS/FAIL lines.

1. ONNX fp32 vs PyTorch: probabilities within 1e-4, accuracy within 0.2 percentage points.
2. Token downsampling (top-k attention, grid pooling) exports and matches PyTorch the same way.
3. int8 vs fp32, for both of onnxruntime's methods: top-1 agreement (>= 99%) and accuracy drop
   (<= 0.5 pp) are required of ``dynamic``, the one `classroom-fer export --int8` uses; ``static``
   is printed for comparison. With the speed of each graph (median of repeated calls).

    nice -n 19 python benchmarks/export_check.py [--model DIR] [--data ../shared/data/fer2013] [--threads 1]

Exit status 1 when a required check fails.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np

from classroom_fer.benchmark import Timing, median_seconds
from classroom_fer.data import load_dataset
from classroom_fer.export.onnx import EXPORT_TOLERANCE, export_onnx, paper_keep_schedule
from classroom_fer.models import with_token_strategy
from classroom_fer.export.quantize import METHODS, quantize_onnx
from classroom_fer.inference import ONNX_FILE, OnnxClassifier, TorchClassifier, default_model_dir
from classroom_fer.models import load_checkpoint
from classroom_fer.models.hybrid import TOKEN_STRATEGIES

SHARED_FER = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "fer2013"
ACCURACY_TOLERANCE_PP = 0.2
INT8_MIN_AGREEMENT = 0.99
INT8_MAX_DROP_PP = 0.5
CALIBRATION_FACES = 512


def predict_all(classifier, faces: np.ndarray, batch: int = 512) -> np.ndarray:
    return np.concatenate([classifier.predict_proba(faces[i : i + batch]) for i in range(0, len(faces), batch)])


def speed(classifier, faces: np.ndarray) -> tuple[float, float]:
    """(ms per face at batch 1, faces/s at batch 32)."""
    latency, _ = median_seconds(lambda: classifier.predict_proba(faces[:1]), Timing(20, 200, 2.0))
    batch_time, _ = median_seconds(lambda: classifier.predict_proba(faces[:32]), Timing(3, 30, 2.0))
    return latency * 1e3, 32 / batch_time


def report(ok: bool, text: str, required: bool = True) -> bool:
    print(f"{'PASS' if ok else 'FAIL' if required else 'info'}  {text}")
    return ok or not required


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=default_model_dir(), help="checkpoint folder (default: shipped)")
    parser.add_argument("--data", default=str(SHARED_FER), help="FER dataset with a PublicTest split")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()

    test = load_dataset(args.data, "publictest")
    labels = test.labels
    model, _ = load_checkpoint(args.model)
    torch_classifier = TorchClassifier(args.model, args.threads, model=model)
    passed = True
    print(f"model {args.model} ({model.config.token_strategy}); PublicTest: {len(test)} faces; {args.threads} thread(s)")

    with tempfile.TemporaryDirectory(prefix="classroom-fer-check-") as scratch:
        scratch = Path(scratch)
        fp32_path = args.model / ONNX_FILE
        if not fp32_path.is_file():
            fp32_path = export_onnx(model, scratch / "fp32.onnx")
        fp32 = OnnxClassifier(fp32_path, args.threads)
        torch_probs = predict_all(torch_classifier, test.images)
        fp32_probs = predict_all(fp32, test.images)
        difference = np.abs(torch_probs - fp32_probs).max()
        torch_accuracy = (torch_probs.argmax(1) == labels).mean() * 100
        fp32_accuracy = (fp32_probs.argmax(1) == labels).mean() * 100
        passed &= report(difference <= EXPORT_TOLERANCE, f"ONNX fp32 vs PyTorch ({fp32_path.name}): max |dp| {difference:.1e}")
        passed &= report(abs(torch_accuracy - fp32_accuracy) <= ACCURACY_TOLERANCE_PP,
                         f"accuracy PyTorch {torch_accuracy:.2f}%, ONNX fp32 {fp32_accuracy:.2f}%")

        for strategy in (s for s in TOKEN_STRATEGIES if s != model.config.token_strategy):
            keep = (model.config.keep_tokens or paper_keep_schedule(model)) if strategy != "none" else None
            variant = with_token_strategy(model, strategy, keep)
            exported = OnnxClassifier(export_onnx(variant, scratch / f"{strategy}.onnx"), args.threads)
            variant_probs = predict_all(TorchClassifier(args.model, args.threads, model=variant), test.images)
            difference = np.abs(variant_probs - predict_all(exported, test.images)).max()
            accuracy = (variant_probs.argmax(1) == labels).mean() * 100
            passed &= report(difference <= EXPORT_TOLERANCE,
                             f"token strategy {strategy} {variant.tokens_per_layer}: ONNX vs PyTorch max |dp| "
                             f"{difference:.1e}; accuracy without retraining {accuracy:.2f}%")

        fp32_speed = speed(fp32, test.images)
        print(f"      fp32 speed: {fp32_speed[0]:.2f} ms/face at batch 1, {fp32_speed[1]:,.0f} faces/s at batch 32, "
              f"{fp32_path.stat().st_size / 1e6:.1f} MB")
        calibration = load_dataset(args.data, "train", drop_blank=True, max_samples=CALIBRATION_FACES).images
        for method in METHODS:
            int8_path = quantize_onnx(fp32_path, scratch / f"int8-{method}.onnx", method, calibration)
            int8 = OnnxClassifier(int8_path, args.threads)
            int8_probs = predict_all(int8, test.images)
            agreement = (int8_probs.argmax(1) == fp32_probs.argmax(1)).mean()
            drop = fp32_accuracy - (int8_probs.argmax(1) == labels).mean() * 100
            latency, throughput = speed(int8, test.images)
            required = method == "dynamic"
            passed &= report(agreement >= INT8_MIN_AGREEMENT and drop <= INT8_MAX_DROP_PP,
                             f"int8 {method}: top-1 agreement with fp32 {agreement * 100:.2f}%, accuracy drop {drop:+.2f} pp; "
                             f"{latency:.2f} ms/face ({fp32_speed[0] / latency:.2f}x fp32), {throughput:,.0f} faces/s "
                             f"({throughput / fp32_speed[1]:.2f}x), {int8_path.stat().st_size / 1e6:.1f} MB", required)
    print("all required checks passed" if passed else "some required checks FAILED")
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())

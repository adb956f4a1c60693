"""`classroom-fer benchmark`: size, cost and speed of the shipped model on each backend (PyTorch,
onnxruntime fp32 and int8; with and without token downsampling) and of the paper's model.

Every variant is measured in a fresh Python process, so its peak memory is its own: ``peak_mb`` is
the peak resident memory while loading and running the model minus the resident memory of the
interpreter with its runtime (torch or onnxruntime) already imported; ``process_peak_mb`` is the
peak of the whole process. Latency is the median of many single-face ``predict_proba`` calls after
a warm-up (preprocessing and softmax included); throughput is 32 / the median time of a 32-face
call. Inputs are random faces: the cost does not
depend on the pixels, and the benchmark needs no dataset.

    python -m classroom_fer.benchmark '<variant JSON>'   # the per-variant worker (internal)
"""
from __future__ import annotations

import json
import logging
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from .errors import UserError
from .preprocessing import FACE_SIZE

log = logging.getLogger(__name__)

PAPER = "paper"
BATCH = 32


@dataclass
class Timing:
    """How many calls to time: at least ``runs`` after ``warmup``, more until ``budget_s`` is spent."""

    warmup: int
    runs: int
    budget_s: float


@dataclass
class Variant:
    name: str
    backend: str  # torch | onnx
    model: str  # checkpoint folder, .onnx file, or PAPER (the paper preset, random weights)
    token_strategy: str | None  # override of the checkpoint's token downsampling (torch)
    keep_tokens: list[int] | None
    threads: int
    b1: Timing  # single-face calls
    b32: Timing  # 32-face calls


# (batch 1, batch 32) timings: the paper model takes ~0.1 s per face, so it gets few calls.
SHIPPED_TIMING = (Timing(20, 100, 3.0), Timing(5, 20, 3.0))
PAPER_TIMING = (Timing(2, 10, 0.0), Timing(1, 3, 0.0))
QUICK_SHIPPED_TIMING = (Timing(3, 10, 0.0), Timing(1, 3, 0.0))
QUICK_PAPER_TIMING = (Timing(1, 3, 0.0), Timing(0, 1, 0.0))


def default_threads() -> int:
    """The cores this process may run on (what a user's run would use)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def run_benchmark(model: str | Path | None = None, threads: int | None = None, quick: bool = False) -> dict:
    """Measure every variant (about two minutes; ``quick``: rough figures in about a minute)."""
    import onnxruntime
    import torch

    from .export.onnx import export_onnx, paper_keep_schedule
    from .export.quantize import quantize_onnx
    from .inference import ONNX_FILE, default_model_dir
    from .models import with_token_strategy
    from .models import load_checkpoint
    from .models.checkpoint import resolve_checkpoint
    from .models.hybrid import TOKEN_STRATEGIES

    threads = threads or default_threads()
    model_dir = resolve_checkpoint(model if model is not None else default_model_dir())
    shipped, _ = load_checkpoint(model_dir)
    own = shipped.config.token_strategy
    strategies = [own] + [strategy for strategy in TOKEN_STRATEGIES if strategy != own]

    def keep_for(strategy: str) -> list[int] | None:
        if strategy == "none":
            return None
        return shipped.config.keep_tokens or paper_keep_schedule(shipped)

    shipped_timing = QUICK_SHIPPED_TIMING if quick else SHIPPED_TIMING
    paper_timing = QUICK_PAPER_TIMING if quick else PAPER_TIMING
    load_before = _load_average()
    with tempfile.TemporaryDirectory(prefix="classroom-fer-bench-") as scratch:
        scratch = Path(scratch)
        variants: list[Variant] = []
        onnx_files: dict[str, Path] = {}
        for strategy in strategies:
            name = "shipped-torch" + ("" if strategy == own else f"-{strategy}")
            variants.append(Variant(name, "torch", str(model_dir), strategy, keep_for(strategy), threads, *shipped_timing))
        for strategy in strategies:
            if strategy == own and (model_dir / ONNX_FILE).is_file():
                onnx_files[strategy] = model_dir / ONNX_FILE
            else:
                onnx_files[strategy] = export_onnx(with_token_strategy(shipped, strategy, keep_for(strategy)),
                                                   scratch / f"{strategy}.onnx")
            name = "shipped-onnx" + ("" if strategy == own else f"-{strategy}")
            variants.append(Variant(name, "onnx", str(onnx_files[strategy]), strategy, keep_for(strategy), threads, *shipped_timing))
        int8 = quantize_onnx(onnx_files[own], scratch / "int8.onnx")
        variants.append(Variant("shipped-onnx-int8", "onnx", str(int8), own, keep_for(own), threads, *shipped_timing))
        variants.append(Variant("paper-torch", "torch", PAPER, None, None, threads, *paper_timing))
        variants.append(Variant("paper-torch-none", "torch", PAPER, "none", None, threads, *paper_timing))

        results: dict[str, dict] = {}
        for variant in variants:
            log.info("benchmark: %s", variant.name)
            results[variant.name] = measure_in_subprocess(variant)
    for figures in results.values():  # an ONNX graph has the size, cost and tokens of its torch model
        if figures["backend"] == "onnx":
            twin = results["shipped-torch" + ("" if figures["token_strategy"] == own else f"-{figures['token_strategy']}")]
            for key in ("params", "gflops", "tokens_per_layer"):
                figures[key] = twin[key]
    fastest = max(results, key=lambda name: results[name]["throughput_b32"])
    return {
        "models": results,
        "speedup_vs_paper": results["paper-torch"]["latency_ms_b1"] / results["shipped-torch"]["latency_ms_b1"],
        "fastest_b32": {"variant": fastest, "throughput_b32": results[fastest]["throughput_b32"]},
        "shipped_model": str(model_dir),
        "threads": threads,
        "quick": quick,
        "environment": {
            "cpus": os.cpu_count(),
            "load_average_before": load_before,
            "load_average_after": _load_average(),
            "platform": platform.platform(),
            "processor": _processor_name(),
            "python": platform.python_version(),
            "torch": torch.__version__,
            "onnxruntime": onnxruntime.__version__,
        },
    }


def format_table(result: dict) -> str:
    """The results as a Markdown table, with the headline figures under it."""
    lines = [
        "| variant | backend | tokens per layer | params | GFLOPs | ms/face (batch 1) | faces/s (batch 32) | peak MB |",
        "| --- | --- | --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for name, row in result["models"].items():
        tokens = f"{row['token_strategy']}: {'/'.join(map(str, row['tokens_per_layer']))}"
        lines.append(
            f"| {name} | {row['backend']} | {tokens} | {row['params'] / 1e6:.2f}M | {row['gflops']:.3f} | "
            f"{row['latency_ms_b1']:.2f} | {row['throughput_b32']:,.0f} | {row['peak_mb']:.0f} |"
        )
    environment = result["environment"]
    lines += [
        "",
        f"speedup vs paper (torch, batch 1): {result['speedup_vs_paper']:.1f}x; "
        f"fastest at batch 32: {result['fastest_b32']['variant']} ({result['fastest_b32']['throughput_b32']:,.0f} faces/s)",
        f"{result['threads']} thread(s) on {environment['cpus']} CPU(s) ({environment['processor']}); "
        f"load average {environment['load_average_before']} before, {environment['load_average_after']} after",
    ]
    return "\n".join(lines)


def _processor_name() -> str:
    try:
        with open("/proc/cpuinfo") as handle:
            return next(line.split(":", 1)[1].strip() for line in handle if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor() or platform.machine()


def _load_average() -> list[float] | None:
    return [round(value, 2) for value in os.getloadavg()] if hasattr(os, "getloadavg") else None


def measure_in_subprocess(variant: Variant) -> dict:
    """:func:`measure` in a fresh interpreter, so that memory and thread pools are the variant's own."""
    done = subprocess.run([sys.executable, "-m", "classroom_fer.benchmark", json.dumps(asdict(variant))],
                          capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"benchmark of {variant.name} failed:\n{done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def measure(spec: dict) -> dict:
    """Load and time one variant in this process (run it in a fresh one: see the module's doc)."""
    variant = Variant(**{**spec, "b1": Timing(**spec["b1"]), "b32": Timing(**spec["b32"])})
    from . import inference  # noqa: F401  (the runtime's imports come before the baseline)

    if variant.backend == "torch":
        from . import models  # noqa: F401  (torch, torchvision)
        from .export import onnx  # noqa: F401
    else:
        import onnxruntime  # noqa: F401
    baseline, _ = _memory_mb()
    _reset_peak_memory()
    started = time.perf_counter()
    classifier = _load(variant)
    load_ms = (time.perf_counter() - started) * 1e3
    faces = np.random.default_rng(0).integers(0, 256, (BATCH, FACE_SIZE, FACE_SIZE), dtype=np.uint8)
    latency, runs_b1 = median_seconds(lambda: classifier.predict_proba(faces[:1]), variant.b1)
    batch_time, runs_b32 = median_seconds(lambda: classifier.predict_proba(faces), variant.b32)
    figures = {
        "backend": variant.backend,
        "token_strategy": variant.token_strategy,
        "keep_tokens": variant.keep_tokens,
        "tokens_per_layer": None,
        "params": None,
        "gflops": None,
        "latency_ms_b1": latency * 1e3,
        "throughput_b32": BATCH / batch_time,
        "peak_mb": None,
        "process_peak_mb": None,
        "load_ms": load_ms,
        "runs_b1": runs_b1,
        "runs_b32": runs_b32,
        "threads": variant.threads,
    }
    _, peak = _memory_mb()
    if peak is not None and baseline is not None:
        figures["peak_mb"], figures["process_peak_mb"] = peak - baseline, peak
    if variant.backend == "torch":
        from .models import count_gflops, count_parameters

        figures["params"], figures["gflops"] = count_parameters(classifier.model), count_gflops(classifier.model)
        figures["token_strategy"] = classifier.model.config.token_strategy
        figures["keep_tokens"] = classifier.model.config.keep_tokens
        figures["tokens_per_layer"] = classifier.model.tokens_per_layer
    return figures


def _load(variant: Variant):
    from .inference import TorchClassifier, load_classifier

    if variant.backend == "onnx":
        return load_classifier(variant.model, "onnx", variant.threads)
    import torch

    from .models import build_model, load_checkpoint, preset, with_token_strategy

    if variant.model == PAPER:
        torch.manual_seed(0)
        model = build_model(preset(PAPER, pretrained_backbone=False)).eval()  # nothing is downloaded
        source = Path("paper preset, random weights")
    else:
        model, _ = load_checkpoint(variant.model)
        source = Path(variant.model)
    if variant.token_strategy is not None and variant.token_strategy != model.config.token_strategy:
        model = with_token_strategy(model, variant.token_strategy, variant.keep_tokens)
    return TorchClassifier(source, variant.threads, model=model)


def median_seconds(call, timing: Timing) -> tuple[float, int]:
    """Median wall time of ``call`` in seconds, and how many calls were timed."""
    for _ in range(timing.warmup):
        call()
    times: list[float] = []
    deadline = time.perf_counter() + timing.budget_s
    while len(times) < timing.runs or time.perf_counter() < deadline:
        started = time.perf_counter()
        call()
        times.append(time.perf_counter() - started)
    return statistics.median(times), len(times)


def _reset_peak_memory() -> None:
    """Forget the import's transient peak (Linux >= 4.0), so the peak is the model's own."""
    try:
        with open("/proc/self/clear_refs", "w") as handle:
            handle.write("5")
    except OSError:
        pass  # elsewhere the peak may include the import's, an upper bound


def _memory_mb() -> tuple[float | None, float | None]:
    """(resident now, peak resident) of this process in MB. On Linux from /proc (VmRSS, VmHWM):
    ``ru_maxrss`` would be wrong there, as execve carries the parent's peak into the child's."""
    try:
        with open("/proc/self/status") as handle:
            fields = dict(line.split(":", 1) for line in handle if line.startswith(("VmRSS", "VmHWM")))
        return int(fields["VmRSS"].split()[0]) / 1024, int(fields["VmHWM"].split()[0]) / 1024
    except (OSError, KeyError, ValueError):
        pass
    try:
        import resource
    except ImportError:  # Windows
        return None, None
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # bytes on macOS
    return peak, peak


if __name__ == "__main__":
    try:
        print(json.dumps(measure(json.loads(sys.argv[1]))))
    except UserError as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)

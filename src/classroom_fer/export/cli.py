"""`classroom-fer export` and `classroom-fer benchmark` (torch is imported inside the run functions)."""
from __future__ import annotations

import argparse
import importlib.util
import tempfile
from pathlib import Path

from ..errors import UserError

CHECK_FACES = 64  # random faces on which every export is compared with PyTorch
CALIBRATION_FACES = 512
INT8_FILE = "model-int8.onnx"


def add_export(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("export", help="export a model to ONNX (fp32 or int8) for onnxruntime")
    p.add_argument("--format", choices=["onnx"], default="onnx")
    p.add_argument("--out", help="the .onnx file to write (default for a checkpoint folder given as --model: "
                   "model.onnx in it, or model-int8.onnx with --int8)")
    p.add_argument("--model", help="checkpoint folder, or an fp32 .onnx file to quantise (default: the shipped model)")
    p.add_argument("--int8", nargs="?", const="dynamic", choices=["dynamic", "static"],
                   help="quantise to int8: dynamic (default; MatMul/Gemm) or static (QDQ, needs --calibration-data)")
    p.add_argument("--calibration-data", help="FER dataset whose train split calibrates --int8 static")
    p.add_argument("--token-strategy", choices=["none", "topk-attention", "pool"],
                   help="export the weights with another token downsampling")
    p.add_argument("--keep-tokens", help="comma-separated tokens kept after each layer (with --token-strategy; "
                   "default: the paper's proportions)")
    p.set_defaults(run=_run_export)


def _run_export(args: argparse.Namespace) -> int:
    from ..inference import default_model_dir

    source = Path(args.model) if args.model else default_model_dir()
    if not source.exists():
        raise UserError(f"{source}: model not found")
    out = _output_path(args, source)
    if out.suffix.lower() != ".onnx":
        raise UserError(f"{out}: the output file must end in .onnx")
    if args.int8 == "static" and not args.calibration_data:
        raise UserError("--int8 static needs --calibration-data (a FER dataset of real faces)")
    if source.is_file() and source.suffix.lower() == ".onnx":
        if not args.int8:
            raise UserError(f"{source}: already an ONNX graph (add --int8 to quantise it)")
        if args.token_strategy or args.keep_tokens:
            raise UserError("--token-strategy and --keep-tokens need a checkpoint folder, not an .onnx file")
        _quantize(source, out, args)
        return 0
    _require_torch(f"{source}: exporting a checkpoint", " (without it, --int8 still quantises an .onnx file given as --model)")
    with tempfile.TemporaryDirectory(prefix="classroom-fer-export-") as scratch:
        fp32 = Path(scratch) / "fp32.onnx" if args.int8 else out
        difference = _export_checkpoint(source, fp32, args)
        target = "an fp32 graph" if args.int8 else str(out)
        print(f"exported {source} to {target}; largest probability difference from PyTorch on {CHECK_FACES} "
              f"random faces: {difference:.1e}")
        if args.int8:
            _quantize(fp32, out, args)
    return 0


def _output_path(args: argparse.Namespace, source: Path) -> Path:
    """--out, or beside the weights of a user's checkpoint (where load_classifier looks for model.onnx)."""
    from ..inference import ONNX_FILE, default_model_dir

    if args.out:
        return Path(args.out)
    if not source.is_dir() or source.resolve() == default_model_dir().resolve() or args.token_strategy:
        raise UserError("--out is needed (a default applies only to a checkpoint folder of yours, exported as trained)")
    return source / (INT8_FILE if args.int8 else ONNX_FILE)


def _export_checkpoint(source: Path, out: Path, args: argparse.Namespace) -> float:
    import numpy as np

    from ..models import load_checkpoint
    from ..models import with_token_strategy
    from .onnx import check_export, export_onnx, paper_keep_schedule

    model, _ = load_checkpoint(source)
    if args.token_strategy:
        keep = _parse_keep_tokens(args.keep_tokens) if args.keep_tokens else None
        if args.token_strategy != "none" and keep is None:
            keep = model.config.keep_tokens or paper_keep_schedule(model)
        model = with_token_strategy(model, args.token_strategy, keep)
    elif args.keep_tokens:
        raise UserError("--keep-tokens goes with --token-strategy")
    export_onnx(model, out)
    faces = np.random.default_rng(0).integers(0, 256, (CHECK_FACES, 48, 48), dtype=np.uint8)
    return check_export(model, out, faces)


def _parse_keep_tokens(text: str) -> list[int]:
    try:
        return [int(k) for k in text.split(",")]
    except ValueError:
        raise UserError(f"--keep-tokens {text!r}: expected comma-separated whole numbers, e.g. 16,11,7,4") from None


def _quantize(fp32: Path, out: Path, args: argparse.Namespace) -> None:
    from .quantize import quantize_onnx

    faces = None
    if args.int8 == "static":
        from ..data import load_dataset

        faces = load_dataset(args.calibration_data, "train", drop_blank=True, max_samples=CALIBRATION_FACES).images
    quantize_onnx(fp32, out, args.int8, faces)
    print(f"int8 ({args.int8}) -> {out}: {out.stat().st_size / 1e6:.1f} MB (fp32 {fp32.stat().st_size / 1e6:.1f} MB)")


def _require_torch(what: str, hint: str = "") -> None:
    if importlib.util.find_spec("torch") is None:
        raise UserError(f"{what} needs PyTorch: pip install 'classroom-fer[train]'{hint}")


def add_benchmark(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("benchmark", help="params, GFLOPs, latency, throughput and memory of each backend vs the paper's model")
    p.add_argument("--json", help="write the results as JSON here")
    p.add_argument("--threads", type=int, help="CPU threads per variant (default: all cores available)")
    p.add_argument("--model", help="checkpoint folder to measure instead of the shipped model")
    p.add_argument("--quick", action="store_true", help="few repetitions: rough figures in about a minute")
    p.set_defaults(run=_run_benchmark)


def _run_benchmark(args: argparse.Namespace) -> int:
    from ..benchmark import format_table, run_benchmark
    from ..cli import check_writable_file, write_json

    _require_torch("the benchmark (it measures PyTorch and the paper's model)")
    if args.threads is not None and args.threads < 1:
        raise UserError(f"--threads must be at least 1 (got {args.threads})")
    if args.json:
        check_writable_file(Path(args.json))
    result = run_benchmark(args.model, args.threads, args.quick)
    print(format_table(result))
    if args.json:
        write_json(Path(args.json), result, "the results")
    return 0

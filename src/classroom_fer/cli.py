"""`classroom-fer VERB ...`: one verb per job. Heavy imports happen inside each verb, so the light
(onnxruntime-only) install can run `analyze` without torch."""
from __future__ import annotations

import argparse
import json
import logging
import shlex
import os
import sys
from pathlib import Path

from .errors import UserError

log = logging.getLogger("classroom_fer")


def _add_train(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train a model on a FER dataset")
    p.add_argument("--data", required=True, help="FER2013 CSV, image-folder root, or folder of class folders")
    p.add_argument("--preset", default="default", help="model preset: default, large96 or paper")
    p.add_argument("--config", help="model config JSON (overrides --preset)")
    p.add_argument("--token-strategy", choices=["none", "topk-attention", "pool"], help="override the preset's token downsampling")
    p.add_argument("--keep-tokens", help="comma-separated tokens kept after each layer")
    p.add_argument("--input-size", type=int, help="override the preset's input size")
    p.add_argument("--pretrained-backbone", choices=["yes", "no"], help="ImageNet backbone weights (needs internet)")
    p.add_argument("--out", default="runs/train", help="output folder (checkpoints, metrics.csv, curves.png)")
    p.add_argument("--epochs", type=int, default=60)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--weight-decay", type=float, default=0.05)
    p.add_argument("--optimizer", choices=["adamw", "sam"], default="adamw")
    p.add_argument("--sam-rho", type=float, default=0.05)
    p.add_argument("--schedule", choices=["cosine", "plateau"], default="cosine")
    p.add_argument("--warmup-epochs", type=float, default=3.0)
    p.add_argument("--label-smoothing", type=float, default=0.1)
    p.add_argument("--class-weights", choices=["none", "balanced", "sqrt"], default="none")
    p.add_argument("--ema-decay", type=float, default=0.998, help="0 disables the weight EMA")
    p.add_argument("--mixup", type=float, default=0.0, help="probability of MixUp/CutMix per batch")
    p.add_argument("--init", help="start from this checkpoint's weights (same preset) instead of random ones")
    p.add_argument("--teacher", help="checkpoint to distil from: the loss also matches its softened predictions")
    p.add_argument("--distill-weight", type=float, default=0.7, help="share of the distillation term in the loss (with --teacher)")
    p.add_argument("--distill-temperature", type=float, default=2.0, help="softmax temperature of the distillation term")
    p.add_argument("--patience", type=int, default=15, help="early stopping patience in epochs")
    p.add_argument("--max-train-samples", type=int)
    p.add_argument("--max-val-samples", type=int)
    p.add_argument("--keep-blank", action="store_true", help="keep blank (all-black) training images")
    p.add_argument("--keep-duplicates", action="store_true", help="keep exact duplicate training images")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--resume", action="store_true", help="continue from OUT/last")
    p.add_argument("--threads", type=int, help="CPU threads (default: all cores)")
    p.set_defaults(run=_run_train)


def _run_train(args: argparse.Namespace) -> int:
    import dataclasses

    import torch

    from .models import HybridConfig, preset
    from .training.train import TrainConfig, train

    _check_positive(args, "epochs", "batch_size", "lr", "patience", "max_train_samples", "max_val_samples", "threads", "input_size",
                    "distill_temperature")
    _check_range(args, ("mixup", "ema_decay", "label_smoothing", "distill_weight"), high=1.0)
    _check_range(args, ("weight_decay", "sam_rho", "warmup_epochs"))
    if args.threads:
        torch.set_num_threads(args.threads)
    model_config = HybridConfig.from_file(args.config) if args.config else preset(args.preset)
    overrides = {}
    if args.token_strategy:
        overrides["token_strategy"] = args.token_strategy
    if args.keep_tokens:
        overrides["keep_tokens"] = _parse_keep_tokens(args.keep_tokens)
    if args.input_size:
        overrides["input_size"] = args.input_size
    if args.pretrained_backbone:
        overrides["pretrained_backbone"] = args.pretrained_backbone == "yes"
    if overrides.get("token_strategy") == "none":
        overrides["keep_tokens"] = None
    model_config = dataclasses.replace(model_config, **overrides)
    config = TrainConfig(
        data=args.data, out=args.out, model=model_config, epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
        weight_decay=args.weight_decay, optimizer=args.optimizer, sam_rho=args.sam_rho, schedule=args.schedule,
        warmup_epochs=args.warmup_epochs, label_smoothing=args.label_smoothing, class_weights=args.class_weights,
        ema_decay=args.ema_decay, mixup=args.mixup, init=args.init, teacher=args.teacher,
        distill_weight=args.distill_weight, distill_temperature=args.distill_temperature, patience=args.patience, max_train_samples=args.max_train_samples,
        max_val_samples=args.max_val_samples, drop_blank=not args.keep_blank, drop_duplicates=not args.keep_duplicates,
        seed=args.seed, resume=args.resume, command=shlex.join(["classroom-fer", *args.argv]),
    )
    best = train(config)
    print(f"best checkpoint: {best}")
    return 0


def _add_evaluate(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("evaluate", help="accuracy, F1, confusion matrix and calibration on a dataset split")
    p.add_argument("--data", required=True)
    p.add_argument("--split", default="test", help="train, val, test, publictest, privatetest or all")
    p.add_argument("--model", help="checkpoint folder or .onnx file (default: the shipped model)")
    p.add_argument("--backend", choices=["auto", "torch", "onnx"], default="auto")
    p.add_argument("--tta", action="store_true", help="average with the horizontally flipped face")
    p.add_argument("--token-strategy", choices=["none", "topk-attention", "pool"], help="evaluate with another token downsampling (torch)")
    p.add_argument("--keep-tokens", help="comma-separated tokens kept after each layer (with --token-strategy)")
    p.add_argument("--out", help="folder for metrics.json, confusion_matrix.png, reliability.png")
    p.add_argument("--json", help="write the metrics JSON here")
    p.set_defaults(run=_run_evaluate)


def _run_evaluate(args: argparse.Namespace) -> int:
    from .evaluation import evaluate

    keep = _parse_keep_tokens(args.keep_tokens) if args.keep_tokens else None
    if args.json:  # checked before the run, so a bad path does not waste it
        check_writable_file(Path(args.json))
    metrics = evaluate(args.data, args.split, model=args.model, backend=args.backend, tta=args.tta,
                       token_strategy=args.token_strategy, keep_tokens=keep,
                       out=Path(args.out) if args.out else None)
    print(_metrics_table(metrics))
    if args.json:
        write_json(Path(args.json), metrics, "the metrics")
    return 0


def _parse_keep_tokens(text: str) -> list[int]:
    try:
        keep = [int(k) for k in text.split(",")]
    except ValueError:
        raise UserError(f"--keep-tokens {text!r}: expected comma-separated whole numbers, e.g. 16,12,9,6") from None
    if min(keep) < 1:
        raise UserError(f"--keep-tokens {text!r}: every layer must keep at least one token")
    return keep


def _check_positive(args: argparse.Namespace, *names: str) -> None:
    """Numeric options that only make sense above zero (None: not given)."""
    for name in names:
        value = getattr(args, name)
        if value is not None and value <= 0:
            raise UserError(f"--{name.replace('_', '-')} {value}: must be positive")


def _check_range(args: argparse.Namespace, names: tuple[str, ...], high: float | None = None) -> None:
    """Options that must be at least 0 (and at most ``high``)."""
    for name in names:
        value = getattr(args, name)
        if value < 0 or (high is not None and value > high):
            limits = f"between 0 and {high:g}" if high is not None else "0 or more"
            raise UserError(f"--{name.replace('_', '-')} {value}: must be {limits}")


def write_json(path: Path, data: dict, what: str) -> None:
    """Write a verb's JSON result; a failure is one line that says the result was printed above."""
    try:
        path.write_text(json.dumps(data, indent=2) + "\n")
    except OSError as error:
        raise UserError(f"{path}: cannot write {what} ({error.strerror}); they are printed above") from None


def check_writable_file(path: Path) -> None:
    """Checked before a long run, so a bad output path does not waste it."""
    if path.is_dir():
        raise UserError(f"{path}: is a folder, not a file")
    if not path.parent.is_dir():
        raise UserError(f"{path}: {path.parent} is not an existing folder")
    if not os.access(path.parent, os.W_OK) or (path.exists() and not os.access(path, os.W_OK)):
        raise UserError(f"{path}: not writable (permission denied)")


def _metrics_table(metrics: dict) -> str:
    lines = [
        f"samples {metrics['samples']}  accuracy {metrics['accuracy'] * 100:.2f}%  macro-F1 {metrics['macro_f1']:.4f}  "
        f"weighted-F1 {metrics['weighted_f1']:.4f}  ECE {metrics['ece']:.4f}",
        f"{'class':<10}{'precision':>10}{'recall':>10}{'f1':>10}{'support':>10}",
    ]
    for name, row in metrics["per_class"].items():
        lines.append(f"{name:<10}{row['precision']:>10.3f}{row['recall']:>10.3f}{row['f1']:>10.3f}{row['support']:>10d}")
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="classroom-fer", description="Facial expression recognition for classrooms.")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="verb", required=True, metavar="VERB")
    _add_train(sub)
    _add_evaluate(sub)
    for register in _extra_verbs():
        register(sub)
    return parser


def _extra_verbs():
    """Verbs defined next to their subsystem (analyze, export, benchmark, serve)."""
    from . import cli_verbs

    return cli_verbs.REGISTER


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parser.parse_args(argv)
    args.argv = argv
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, format="%(levelname)s %(message)s")
    try:
        return args.run(args)
    except UserError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except OSError as error:  # the machine's answer to a write or read: a full disk, a permission, a vanished file
        log.debug("traceback of the error below", exc_info=True)
        print(f"error: {_describe_os_error(error)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


def _describe_os_error(error: OSError) -> str:
    reason = error.strerror or str(error) or type(error).__name__
    return f"{error.filename}: {reason}" if error.filename else reason


if __name__ == "__main__":
    sys.exit(main())

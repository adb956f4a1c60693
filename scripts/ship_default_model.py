"""Copy a trained checkpoint into the package as the shipped default model.

Weights are stored in fp16 (half the size in git; they are cast back to fp32 on load) and the
ONNX graph is exported from those same rounded weights, so both backends agree. Token
downsampling adds no weights, so it can be switched on for the shipped model where it pays:

    python scripts/ship_default_model.py runs/default/best [--token-strategy topk-attention --keep-tokens 11,8,7,7]
    python scripts/ship_default_model.py runs/large96/best --target models/large96   # the opt-in model
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from classroom_fer.export.onnx import export_onnx
from classroom_fer.inference import ONNX_FILE, default_model_dir
from classroom_fer.models import load_checkpoint, save_checkpoint, with_token_strategy
from classroom_fer.models.checkpoint import TRAINING_FILE


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint", type=Path)
    parser.add_argument("--token-strategy", choices=["none", "topk-attention", "pool"])
    parser.add_argument("--keep-tokens", help="comma-separated tokens kept after each layer")
    parser.add_argument("--target", type=Path, default=default_model_dir(),
                        help="where to write it (default: the package's default model)")
    args = parser.parse_args()
    model, training = load_checkpoint(args.checkpoint)
    if args.token_strategy:
        keep = [int(k) for k in args.keep_tokens.split(",")] if args.keep_tokens else None
        model = with_token_strategy(model, args.token_strategy, keep)
        training["shipped_token_strategy"] = {"strategy": args.token_strategy, "keep_tokens": keep}
    save_checkpoint(args.target, model, training, half=True)
    shipped, _ = load_checkpoint(args.target)  # fp16-rounded weights, as users get them
    export_onnx(shipped, args.target / ONNX_FILE)
    print(f"shipped {args.checkpoint} -> {args.target}")
    print(json.dumps(json.loads((args.target / TRAINING_FILE).read_text()).get("val_metrics", {}), indent=2))


if __name__ == "__main__":
    main()

"""Checkpoints as a directory: model.safetensors + config.json (Hugging Face style) + training.json.

Directories are written next to their destination and swapped in by rename, so a kill at any
moment leaves either the old or the new checkpoint, never a mix.
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from ..errors import UserError
from .hybrid import HybridConfig, HybridMobileNetViT, build_model

WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "config.json"
TRAINING_FILE = "training.json"


def save_checkpoint(
    directory: str | Path,
    model: HybridMobileNetViT,
    training: dict | None = None,
    extra_files: dict[str, object] | None = None,
    half: bool = False,
) -> Path:
    """Write a checkpoint directory atomically. ``extra_files`` maps names to torch-saveable objects."""
    directory = Path(directory)
    directory.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{directory.name}.", dir=directory.parent))
    try:
        state = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
        if half:
            state = {k: v.half() if v.is_floating_point() else v for k, v in state.items()}
        save_file(state, str(staging / WEIGHTS_FILE))
        (staging / CONFIG_FILE).write_text(json.dumps(model.config.to_dict(), indent=2) + "\n")
        (staging / TRAINING_FILE).write_text(json.dumps(training or {}, indent=2, default=str) + "\n")
        for name, value in (extra_files or {}).items():
            torch.save(value, staging / name)
        old = directory.with_name(f".{directory.name}.old")
        if old.exists():
            shutil.rmtree(old)
        if directory.exists():
            os.replace(directory, old)
        os.replace(staging, directory)
        shutil.rmtree(old, ignore_errors=True)
    except (OSError, SafetensorError, RuntimeError) as error:  # a full disk surfaces as any of these
        shutil.rmtree(staging, ignore_errors=True)
        reason = str(error).strip().splitlines()[-1][:200] if str(error).strip() else type(error).__name__
        raise UserError(f"{directory}: checkpoint not written ({reason}); an earlier one there is unchanged") from None
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return directory


def resolve_checkpoint(directory: str | Path) -> Path:
    """The checkpoint directory, or its previous version if a swap was interrupted."""
    directory = Path(directory)
    if not directory.exists():
        old = directory.with_name(f".{directory.name}.old")
        if old.exists():
            return old
        raise UserError(f"{directory}: checkpoint not found")
    if directory.is_file():
        directory = directory.parent
    return directory


def load_checkpoint(directory: str | Path, map_location: str = "cpu") -> tuple[HybridMobileNetViT, dict]:
    """Load a checkpoint; a missing file or weights that don't fit the config is a UserError."""
    directory = resolve_checkpoint(directory)
    for name in (WEIGHTS_FILE, CONFIG_FILE):
        if not (directory / name).is_file():
            raise UserError(f"{directory}: not a checkpoint ({name} missing)")
    config = HybridConfig.from_file(directory / CONFIG_FILE)
    model = build_model(config)
    try:
        state = load_file(str(directory / WEIGHTS_FILE), device=map_location)
    except (SafetensorError, OSError) as error:
        raise UserError(f"{directory / WEIGHTS_FILE}: unreadable weights ({error})") from None
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    mismatched = sorted(k for k in set(state) & set(expected) if state[k].shape != expected[k].shape)
    if missing or unexpected or mismatched:
        detail = (missing[:2] and f"missing {missing[:2]}") or (unexpected[:2] and f"unexpected {unexpected[:2]}") or f"shape mismatch in {mismatched[:2]}"
        raise UserError(f"{directory}: weights do not fit config.json ({detail}); is it a checkpoint of another architecture?")
    model.load_state_dict({k: v.to(expected[k].dtype) for k, v in state.items()})
    training = {}
    if (directory / TRAINING_FILE).is_file():
        try:
            training = json.loads((directory / TRAINING_FILE).read_text())
        except json.JSONDecodeError:
            training = {}
    model.eval()
    return model, training

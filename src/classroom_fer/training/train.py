"""`classroom-fer train`: one readable loop, top to bottom (after torchvision's reference script).

Each epoch: train on augmented batches -> validate the raw and the EMA weights -> write `last/`
(with optimiser state, for --resume) and, if validation accuracy improved, `best/` -> rewrite
metrics.csv and curves.png. Every write is atomic, so SIGKILL at any point loses at most the
epoch in progress.
"""
from __future__ import annotations

import csv
import dataclasses
import io
import logging
import math
import os
import pickle
import random
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
from tqdm import tqdm

from ..classes import CLASS_NAMES, NUM_CLASSES, column_order
from ..data import FaceDataset, load_dataset
from ..data.augment import AugmentConfig, augment_batch
from ..errors import UserError
from ..models import HybridConfig, build_model, count_gflops, count_parameters, save_checkpoint
from ..models.checkpoint import load_checkpoint, resolve_checkpoint
from ..models.hybrid import HybridMobileNetViT
from .metrics import classification_metrics, plot_curves
from .sam import SAM

log = logging.getLogger(__name__)
STATE_FILE = "state.pt"
METRIC_FIELDS = ["epoch", "lr", "train_loss", "train_acc", "val_loss", "val_acc", "val_macro_f1", "val_acc_ema", "selected", "epoch_s"]


@dataclass
class TrainConfig:
    data: str
    out: str = "runs/train"
    model: HybridConfig = dataclasses.field(default_factory=HybridConfig)
    epochs: int = 60
    batch_size: int = 128
    lr: float = 1e-3
    weight_decay: float = 0.05
    optimizer: str = "adamw"  # adamw | sam
    sam_rho: float = 0.05
    schedule: str = "cosine"  # cosine | plateau
    warmup_epochs: float = 3.0
    min_lr: float = 1e-5
    label_smoothing: float = 0.1
    class_weights: str = "none"  # none | balanced | sqrt
    ema_decay: float = 0.998  # 0 disables the EMA
    mixup: float = 0.0  # probability of MixUp/CutMix on a batch
    init: str | None = None  # start from this checkpoint's weights (same architecture) instead of random ones
    teacher: str | None = None  # checkpoint whose soft predictions the model also learns (knowledge distillation)
    distill_weight: float = 0.7  # share of the distillation term in the loss; the rest is cross-entropy on labels
    distill_temperature: float = 2.0
    grad_clip: float = 1.0
    patience: int = 15
    augment: AugmentConfig = dataclasses.field(default_factory=AugmentConfig)
    train_split: str = "train"
    val_split: str = "val"
    drop_blank: bool = True
    drop_duplicates: bool = True
    max_train_samples: int | None = None
    max_val_samples: int | None = None
    seed: int = 0
    resume: bool = False
    command: str = ""  # the command line that started the run, recorded in training.json


def train(config: TrainConfig) -> Path:
    """Train a model; returns the directory of the best checkpoint."""
    rank, world_size = _init_distributed()
    is_main = rank == 0
    device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0))) if torch.cuda.is_available() else torch.device("cpu")
    _seed_everything(config.seed + rank)
    out = Path(config.out)
    if is_main:
        try:
            out.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise UserError(f"{out}: cannot create the output folder ({error.strerror})") from None
        _check_writable(out)
    if config.resume:
        _resumable_checkpoint(out)  # fail before the data is loaded

    # Data: decoded once (cached on disk) into uint8 tensors.
    train_set = load_dataset(config.data, config.train_split, drop_blank=config.drop_blank, drop_duplicates=config.drop_duplicates,
                             max_samples=config.max_train_samples, seed=config.seed)
    val_set = load_dataset(config.data, config.val_split, max_samples=config.max_val_samples, seed=config.seed)
    if is_main:
        log.info("train: %d faces %s %s", len(train_set), train_set.class_counts(), "; ".join(train_set.notes))
        log.info("val: %d faces", len(val_set))
    train_images = torch.from_numpy(train_set.images)
    train_labels = torch.from_numpy(train_set.labels)

    # Model, optimiser, schedule, loss, EMA.
    model = _initial_model(config) if config.init and not config.resume else build_model(config.model)
    model = model.to(device).to(memory_format=torch.channels_last)
    teacher, teacher_columns = _load_teacher(config.teacher, device) if config.teacher else (None, None)
    ddp_model = torch.nn.parallel.DistributedDataParallel(model) if world_size > 1 else model
    optimizer = _make_optimizer(model, config)
    steps_per_epoch = max(1, math.ceil(len(train_set) / (config.batch_size * world_size)))
    scheduler = _make_scheduler(optimizer, config, steps_per_epoch)
    class_weight = _class_weights(train_set, config.class_weights)
    class_weight = class_weight.to(device) if class_weight is not None else None
    ema = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(config.ema_decay), use_buffers=True) if config.ema_decay > 0 else None
    mixer = _make_mixer(config.mixup)

    start_epoch, best_acc, stale_epochs, rows = 1, -1.0, 0, []
    if config.resume:
        start_epoch, best_acc, stale_epochs, rows = _resume(out, model, optimizer, scheduler, ema)
        if is_main:
            log.info("resumed after epoch %d (best val accuracy %.4f)", start_epoch - 1, best_acc)
    if is_main:
        log.info("model: %.2fM parameters, %.3f GFLOPs/face", count_parameters(model) / 1e6, count_gflops(model))

    generator = torch.Generator().manual_seed(config.seed * 1000 + rank)
    for epoch in range(start_epoch, config.epochs + 1):
        started = time.time()
        # Same permutation on every rank, each takes its own shard.
        order = torch.randperm(len(train_set), generator=torch.Generator().manual_seed(config.seed + epoch))[rank::world_size]
        ddp_model.train()
        loss_sum = correct = seen = 0.0
        bar = tqdm(range(steps_per_epoch), desc=f"epoch {epoch}/{config.epochs}", disable=not is_main, leave=False, mininterval=5)
        for step in bar:
            index = order[step * config.batch_size : (step + 1) * config.batch_size]
            if len(index) == 0:
                continue
            images = train_images[index].to(device).unsqueeze(1).float().div_(255)
            images = augment_batch(images, config.augment, generator if device.type == "cpu" else None)
            labels = train_labels[index].to(device)
            targets = F.one_hot(labels, NUM_CLASSES).float()
            if mixer is not None and random.random() < config.mixup:
                images, targets = mixer(images, labels)
            images = images.contiguous(memory_format=torch.channels_last)
            teacher_logits = None
            if teacher is not None:
                with torch.no_grad():
                    teacher_logits = teacher(images)[:, teacher_columns]

            def objective(logits: torch.Tensor) -> torch.Tensor:
                loss = F.cross_entropy(logits, targets, weight=class_weight, label_smoothing=config.label_smoothing)
                if teacher_logits is None:
                    return loss
                distill = distillation_loss(logits, teacher_logits, config.distill_temperature)
                return (1 - config.distill_weight) * loss + config.distill_weight * distill

            def closure() -> torch.Tensor:
                optimizer.zero_grad(set_to_none=True)
                loss = objective(ddp_model(images))
                loss.backward()
                return loss

            optimizer.zero_grad(set_to_none=True)
            logits = ddp_model(images)
            loss = objective(logits)
            loss.backward()
            if config.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
            if not torch.isfinite(loss):
                raise RuntimeError(f"loss became {loss.item()} at epoch {epoch}; lower --lr")
            if isinstance(optimizer, SAM):
                optimizer.step(closure)
            else:
                optimizer.step()
            if config.schedule == "cosine":
                scheduler.step()
            if ema is not None:
                ema.update_parameters(model)
            loss_sum += loss.item() * len(index)
            correct += (logits.argmax(1) == labels).sum().item()
            seen += len(index)
            bar.set_postfix(loss=f"{loss_sum / seen:.3f}", acc=f"{correct / seen:.3f}", refresh=False)
        bar.close()

        # Validation: raw weights, and the EMA weights; the better one is what gets saved.
        val_loss, val_probs = evaluate_model(model, val_set, device)
        val = classification_metrics(val_probs, val_set.labels)
        selected, selected_model, selected_metrics = "raw", model, val
        ema_acc = float("nan")
        if ema is not None:
            ema_loss, ema_probs = evaluate_model(ema.module, val_set, device)
            ema_metrics = classification_metrics(ema_probs, val_set.labels)
            ema_acc = ema_metrics["accuracy"]
            if ema_acc > val["accuracy"]:
                selected, selected_model, selected_metrics, val_loss = "ema", ema.module, ema_metrics, ema_loss
        if config.schedule == "plateau":
            scheduler.step(val_loss)
        row = {
            "epoch": epoch,
            "lr": optimizer.param_groups[0]["lr"],
            "train_loss": loss_sum / max(seen, 1),
            "train_acc": correct / max(seen, 1),
            "val_loss": val_loss,
            "val_acc": selected_metrics["accuracy"],
            "val_macro_f1": selected_metrics["macro_f1"],
            "val_acc_ema": ema_acc,
            "selected": selected,
            "epoch_s": round(time.time() - started, 1),
        }
        rows.append(row)
        improved = row["val_acc"] > best_acc
        if improved:
            best_acc, stale_epochs = row["val_acc"], 0
        else:
            stale_epochs += 1
        if is_main:
            training_info = _training_info(config, train_set, val_set, epoch, selected, selected_metrics, model)
            if improved:
                save_checkpoint(out / "best", selected_model, training_info)
            state = {
                "epoch": epoch,
                "best_acc": best_acc,
                "stale_epochs": stale_epochs,
                "rows": rows,
                "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(),
                "ema": ema.state_dict() if ema is not None else None,
                "torch_rng": torch.get_rng_state(),
                "generator": generator.get_state(),
            }
            save_checkpoint(out / "last", model, training_info, extra_files={STATE_FILE: state})
            _write_metrics(out / "metrics.csv", rows)
            plot_curves(rows, out / "curves.png")
            log.info(
                "epoch %d: train loss %.4f acc %.4f | val loss %.4f acc %.4f (ema %.4f) macro-F1 %.4f | %.0fs%s",
                epoch, row["train_loss"], row["train_acc"], val_loss, row["val_acc"], ema_acc, row["val_macro_f1"],
                row["epoch_s"], " | best" if improved else "",
            )
        if stale_epochs >= config.patience:
            if is_main:
                log.info("early stopping: no improvement for %d epochs", config.patience)
            break
    if world_size > 1:
        dist.destroy_process_group()
    return out / "best"


def distillation_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """KL(teacher || student) on temperature-softened probabilities (Hinton et al. 2015), scaled by
    T^2 so its gradients keep their size whatever the temperature."""
    return F.kl_div(
        F.log_softmax(student_logits / temperature, dim=1),
        F.log_softmax(teacher_logits / temperature, dim=1),
        log_target=True,
        reduction="batchmean",
    ) * temperature**2


def _initial_model(config: TrainConfig) -> HybridMobileNetViT:
    model, _ = load_checkpoint(config.init)
    if model.config != config.model:
        raise UserError(f"{config.init}: --init checkpoint has another architecture than the model being trained "
                        "(use the preset or config it was trained with)")
    return model


def _load_teacher(checkpoint: str, device: torch.device) -> tuple[HybridMobileNetViT, list[int]]:
    """Any classroom-fer checkpoint will do: every model takes the same 48x48 faces. Its logits'
    columns are mapped onto CLASS_NAMES by name (the returned order)."""
    teacher, _ = load_checkpoint(checkpoint)  # in eval mode
    try:
        columns = column_order(teacher.config.classes)
    except UserError as error:
        raise UserError(f"{checkpoint}: the teacher's {error}") from None
    return teacher.to(device), columns


@torch.no_grad()
def evaluate_model(model: HybridMobileNetViT, dataset: FaceDataset, device: torch.device, batch_size: int = 512,
                   tta: bool = False) -> tuple[float, np.ndarray]:
    """Mean cross-entropy and class probabilities over a dataset (optionally with flip-TTA)."""
    was_training = model.training
    model.eval()
    probabilities, loss_sum = [], 0.0
    images_all = torch.from_numpy(dataset.images)
    labels_all = torch.from_numpy(dataset.labels)
    for start in range(0, len(dataset), batch_size):
        images = images_all[start : start + batch_size].to(device).unsqueeze(1).float().div_(255)
        images = images.contiguous(memory_format=torch.channels_last)
        logits = model(images)
        probs = logits.softmax(dim=1)
        if tta:
            probs = (probs + model(images.flip(-1)).softmax(dim=1)) / 2
        loss_sum += F.nll_loss(probs.clamp_min(1e-12).log(), labels_all[start : start + batch_size].to(device), reduction="sum").item()
        probabilities.append(probs.cpu().numpy())
    model.train(was_training)
    return loss_sum / len(dataset), np.concatenate(probabilities)


def _make_optimizer(model: torch.nn.Module, config: TrainConfig) -> torch.optim.Optimizer:
    """AdamW (or SAM over AdamW); no weight decay on norms, biases and embeddings."""
    decay, no_decay = [], []
    for name, parameter in model.named_parameters():
        (no_decay if parameter.ndim <= 1 or name in ("cls_token", "pos_embed") else decay).append(parameter)
    groups = [{"params": decay, "weight_decay": config.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    if config.optimizer == "adamw":
        return torch.optim.AdamW(groups, lr=config.lr)
    if config.optimizer == "sam":
        return SAM(groups, torch.optim.AdamW, rho=config.sam_rho, lr=config.lr)
    raise UserError(f"unknown optimizer {config.optimizer!r} (choose adamw or sam)")


def _make_scheduler(optimizer: torch.optim.Optimizer, config: TrainConfig, steps_per_epoch: int):
    if config.schedule == "plateau":
        return torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, mode="min", factor=0.5, patience=3, min_lr=config.min_lr)
    if config.schedule != "cosine":
        raise UserError(f"unknown schedule {config.schedule!r} (choose cosine or plateau)")
    warmup = int(config.warmup_epochs * steps_per_epoch)
    total = max(config.epochs * steps_per_epoch, warmup + 1)
    floor = min(config.min_lr / config.lr, 1.0)  # a peak below min_lr stays flat, never rises

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / (total - warmup)
        return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def _class_weights(dataset: FaceDataset, mode: str) -> torch.Tensor | None:
    if mode == "none":
        return None
    counts = np.maximum(np.bincount(dataset.labels, minlength=NUM_CLASSES), 1).astype(np.float64)
    weights = counts.sum() / (NUM_CLASSES * counts)
    if mode == "sqrt":
        weights = np.sqrt(weights)
    elif mode != "balanced":
        raise UserError(f"unknown class weighting {mode!r} (choose none, balanced or sqrt)")
    return torch.tensor(weights / weights.mean(), dtype=torch.float32)


def _make_mixer(probability: float):
    if probability <= 0:
        return None
    from torchvision.transforms import v2

    return v2.RandomChoice([v2.MixUp(alpha=0.2, num_classes=NUM_CLASSES), v2.CutMix(alpha=1.0, num_classes=NUM_CLASSES)])


def _resume(out: Path, model, optimizer, scheduler, ema) -> tuple[int, float, int, list[dict]]:
    from safetensors.torch import load_file

    last = _resumable_checkpoint(out)
    try:
        state = torch.load(last / STATE_FILE, map_location="cpu", weights_only=False)
    except (RuntimeError, EOFError, pickle.UnpicklingError):
        raise UserError(f"{last / STATE_FILE}: unreadable training state (damaged, or not written by classroom-fer train)") from None
    try:
        model.load_state_dict(load_file(str(last / "model.safetensors")))
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        if ema is not None and state.get("ema") is not None:
            ema.load_state_dict(state["ema"])
    except (RuntimeError, ValueError, KeyError):
        raise UserError(f"{last}: this run used another model or optimiser; resume with the options it started with, "
                        "or train into another --out") from None
    torch.set_rng_state(state["torch_rng"])
    rows = [r for r in state["rows"] if r["epoch"] <= state["epoch"]]
    return state["epoch"] + 1, state["best_acc"], state["stale_epochs"], rows


def _resumable_checkpoint(out: Path) -> Path:
    last = out / "last"
    if not last.exists() and not last.with_name(".last.old").exists():
        raise UserError(f"{out}: nothing to resume (no last/ checkpoint); start without --resume")
    last = resolve_checkpoint(last)
    if not (last / STATE_FILE).is_file():
        raise UserError(f"{last}: nothing to resume (no {STATE_FILE}); start without --resume")
    return last


def _write_metrics(path: Path, rows: list[dict]) -> None:
    """Rewrite the whole CSV atomically from the checkpointed rows: never a duplicated or lost row."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=METRIC_FIELDS)
    writer.writeheader()
    writer.writerows(rows)
    handle = tempfile.NamedTemporaryFile("w", dir=path.parent, delete=False, suffix=".tmp", newline="")
    try:
        with handle:
            handle.write(buffer.getvalue())
        os.replace(handle.name, path)
    except OSError:  # e.g. a full disk: the previous metrics.csv stays, no partial file is left
        Path(handle.name).unlink(missing_ok=True)
        raise


def _training_info(config: TrainConfig, train_set: FaceDataset, val_set: FaceDataset, epoch: int, selected: str,
                   metrics: dict, model: HybridMobileNetViT) -> dict:
    return {
        "command": config.command,
        "data": config.data,
        "train_split": config.train_split,
        "train_samples": len(train_set),
        "train_notes": train_set.notes,
        "val_split": config.val_split,
        "val_samples": len(val_set),
        "epoch": epoch,
        "weights": selected,
        "val_metrics": {k: metrics[k] for k in ("accuracy", "macro_f1", "weighted_f1", "ece")},
        "parameters": count_parameters(model),
        "classes": list(CLASS_NAMES),
        "train_config": {k: v for k, v in dataclasses.asdict(config).items() if k not in ("model",)},
    }


def _init_distributed() -> tuple[int, int]:
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    return (dist.get_rank(), world_size) if world_size > 1 else (0, 1)


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _check_writable(out: Path) -> None:
    try:
        with tempfile.NamedTemporaryFile(dir=out):
            pass
    except OSError as error:
        raise UserError(f"{out}: output folder not writable ({error.strerror})") from None

"""Training on real FER2013 faces: short runs, resume after SIGKILL, SAM, augmentation."""
from __future__ import annotations

import csv
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from classroom_fer.cli import main
from classroom_fer.data.augment import AugmentConfig, augment_batch
from classroom_fer.models import load_checkpoint
from classroom_fer.training.sam import SAM

SMALL = ["--max-train-samples", "256", "--max-val-samples", "128", "--batch-size", "64", "--threads", "1"]


def _rows(path: Path) -> list[dict]:
    with open(path) as handle:
        return list(csv.DictReader(handle))


def test_short_training_run_writes_checkpoints_metrics_and_curves(tmp_path, fer_root):
    out = tmp_path / "run"
    assert main(["train", "--data", str(fer_root), "--out", str(out), "--epochs", "2", *SMALL]) == 0
    rows = _rows(out / "metrics.csv")
    assert [int(r["epoch"]) for r in rows] == [1, 2]
    assert all(0 <= float(r["val_acc"]) <= 1 for r in rows)
    assert (out / "curves.png").stat().st_size > 1000
    model, training = load_checkpoint(out / "best")
    assert training["val_metrics"]["accuracy"] == max(float(r["val_acc"]) for r in rows)
    assert "train" in training["command"] and training["train_samples"] == 256
    assert model(torch.rand(2, 1, 48, 48)).shape == (2, 7)


def test_sigkill_mid_epoch_then_resume_loses_nothing(tmp_path, fer_root, caplog):
    out = tmp_path / "run"
    command = [sys.executable, "-m", "classroom_fer.cli", "train", "--data", str(fer_root), "--out", str(out), "--epochs", "4", *SMALL]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while time.time() < deadline and not (out / "metrics.csv").exists():
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert (out / "metrics.csv").exists(), "training produced no epoch before the deadline"
    killed_rows = _rows(out / "metrics.csv")
    assert len(killed_rows) < 4
    best_before, _ = load_checkpoint(out / "best")  # intact after the kill

    caplog.set_level(logging.INFO, logger="classroom_fer")
    assert main(["train", "--data", str(fer_root), "--out", str(out), "--epochs", "4", "--resume", *SMALL]) == 0
    assert any(f"resumed after epoch {len(killed_rows)} " in r.getMessage() for r in caplog.records)  # not restarted
    rows = _rows(out / "metrics.csv")
    assert [int(r["epoch"]) for r in rows] == [1, 2, 3, 4]
    assert rows[: len(killed_rows)] == killed_rows  # earlier epochs kept as they were
    _, best = load_checkpoint(out / "best")
    assert best["val_metrics"]["accuracy"] == max(float(r["val_acc"]) for r in rows)  # the best epoch, whichever run it was in
    assert not any(p.name.startswith(".") or p.suffix == ".tmp" for p in out.iterdir()), "staging or partial files left behind"


def test_resume_without_a_run_is_a_clear_error(tmp_path, fer_root, capsys):
    assert main(["train", "--data", str(fer_root), "--out", str(tmp_path), "--epochs", "1", "--resume", *SMALL]) == 2
    assert "nothing to resume" in capsys.readouterr().err


def test_sam_lowers_the_loss_on_a_fixed_batch():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(10, 32), torch.nn.ReLU(), torch.nn.Linear(32, 3))
    x, y = torch.randn(64, 10), torch.randint(0, 3, (64,))
    optimizer = SAM(model.parameters(), torch.optim.AdamW, rho=0.05, lr=1e-2)
    loss_fn = torch.nn.functional.cross_entropy
    start = loss_fn(model(x), y).item()
    for _ in range(30):
        optimizer.zero_grad()
        loss_fn(model(x), y).backward()
        before = [p.detach().clone() for p in model.parameters()]

        def closure():
            optimizer.zero_grad()
            loss = loss_fn(model(x), y)
            loss.backward()
            return loss

        optimizer.first_step()
        assert any(not torch.equal(b, p) for b, p in zip(before, model.parameters()))  # climbed
        closure()
        optimizer.second_step()
    assert loss_fn(model(x), y).item() < start * 0.7


def test_augmentation_draws_per_face_and_keeps_range(fer_root):
    from classroom_fer.data import load_dataset

    faces = torch.from_numpy(load_dataset(fer_root, "publictest", max_samples=16).images).unsqueeze(1).float() / 255
    same = faces[:1].repeat(16, 1, 1, 1)
    out = augment_batch(same, AugmentConfig(), torch.Generator().manual_seed(0))
    assert out.shape == same.shape and out.min() >= 0 and out.max() <= 1
    differences = (out[1:] - out[:1]).abs().flatten(1).mean(1)
    assert (differences > 1e-3).all(), "each face must get its own random draw"
    identity = AugmentConfig(flip=0, rotate_degrees=0, crop_scale=(1, 1), crop_ratio=(1, 1), brightness=0, contrast=0, erase_prob=0)
    kept = augment_batch(faces, identity)
    assert (kept - faces).abs().max() < 1e-4  # no-op settings leave faces untouched


@pytest.mark.skipif(sys.platform != "linux", reason="gloo DDP test on Linux")
def test_runs_unchanged_under_torchrun(tmp_path, fer_root):
    out = tmp_path / "ddp"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29533", "-m",
         "classroom_fer.cli", "train", "--data", str(fer_root), "--out", str(out), "--epochs", "1",
         "--max-train-samples", "128", "--max-val-samples", "64", "--batch-size", "32"],
        env=env, capture_output=True, text=True, timeout=600,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert [int(r["epoch"]) for r in _rows(out / "metrics.csv")] == [1]
    load_checkpoint(out / "best")


def test_thesis_recipe_options_train(tmp_path, fer_root):
    """SAM over AdamW, plateau schedule, top-K token downsampling, plus MixUp/CutMix and class weights."""
    out = tmp_path / "sam"
    args = ["train", "--data", str(fer_root), "--out", str(out), "--epochs", "2", "--optimizer", "sam",
            "--schedule", "plateau", "--token-strategy", "topk-attention", "--keep-tokens", "16,12,9,6",
            "--mixup", "1.0", "--class-weights", "balanced", *SMALL]
    assert main(args) == 0
    model, training = load_checkpoint(out / "best")
    assert model.config.token_strategy == "topk-attention" and model.tokens_per_layer == [36, 16, 12, 9]
    assert training["train_config"]["optimizer"] == "sam"
    assert all(float(r["train_loss"]) > 0 for r in _rows(out / "metrics.csv"))


def test_distillation_loss_is_zero_only_when_the_student_matches_the_teacher():
    from classroom_fer.training.train import distillation_loss

    torch.manual_seed(0)
    teacher = torch.randn(32, 7)
    assert distillation_loss(teacher.clone(), teacher, 2.0).abs().item() < 1e-6
    student = torch.zeros(32, 7, requires_grad=True)
    optimizer = torch.optim.SGD([student], lr=30.0)
    losses = []
    for _ in range(100):
        optimizer.zero_grad()
        loss = distillation_loss(student, teacher, 2.0)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[0] > 0.1 and losses[-1] < losses[0] * 1e-3  # gradient descent pulls the student onto the teacher
    assert (student.argmax(1) == teacher.argmax(1)).all()


def test_distilling_the_shipped_model_into_itself_starts_from_its_weights_and_matches_it(tmp_path, fer_root):
    """--init loads the shipped weights (accuracy of a trained model after one tiny-lr epoch), and
    --teacher feeds the loss: a student that is its own teacher has almost no distillation loss,
    while the same run on labels alone has the cross-entropy of a 64%-accurate model."""
    from classroom_fer.inference import default_model_dir

    shipped = str(default_model_dir())
    common = ["train", "--data", str(fer_root), "--epochs", "1", "--lr", "1e-7", "--warmup-epochs", "0", "--init", shipped, *SMALL]
    assert main([*common, "--out", str(tmp_path / "self"), "--teacher", shipped, "--distill-weight", "1"]) == 0
    assert main([*common, "--out", str(tmp_path / "labels")]) == 0
    distilled, = _rows(tmp_path / "self" / "metrics.csv")
    labels_only, = _rows(tmp_path / "labels" / "metrics.csv")
    assert float(distilled["val_acc"]) > 0.5 and float(labels_only["val_acc"]) > 0.5  # a random start scores about 0.25
    assert float(distilled["train_loss"]) < 0.3 < float(labels_only["train_loss"])
    _, training = load_checkpoint(tmp_path / "self" / "best")
    assert training["train_config"]["teacher"] == shipped and training["train_config"]["init"] == shipped


def test_init_from_another_architecture_is_a_clear_error(tmp_path, fer_root, capsys):
    from classroom_fer.inference import default_model_dir

    args = ["train", "--data", str(fer_root), "--out", str(tmp_path), "--epochs", "1", "--preset", "large96",
            "--init", str(default_model_dir()), *SMALL]
    assert main(args) == 2
    error = capsys.readouterr().err
    assert str(default_model_dir()) in error and "another architecture" in error


def test_cosine_schedule_never_rises_above_the_peak_learning_rate():
    from classroom_fer.training.train import TrainConfig, _make_scheduler

    for peak in (1e-3, 1e-7):  # the second is below the default min_lr of 1e-5
        parameter = torch.nn.Parameter(torch.zeros(1))
        optimizer = torch.optim.SGD([parameter], lr=peak)
        scheduler = _make_scheduler(optimizer, TrainConfig(data="unused", lr=peak, epochs=3, warmup_epochs=1), steps_per_epoch=10)
        rates = []
        for _ in range(30):
            optimizer.step()
            scheduler.step()
            rates.append(optimizer.param_groups[0]["lr"])
        assert max(rates) <= peak * (1 + 1e-9)
        assert rates[-1] == pytest.approx(min(peak, 1e-5), rel=0.05)


def test_a_teacher_with_another_class_order_is_mapped_by_name(tmp_path, fer_root):
    """The shipped model, saved with its classes (and head rows) reversed, is still the same
    teacher: distilling the shipped model from it costs as little as from the original."""
    import dataclasses

    from classroom_fer.inference import default_model_dir
    from classroom_fer.models import build_model, save_checkpoint

    shipped, _ = load_checkpoint(default_model_dir())
    reversed_model = build_model(dataclasses.replace(shipped.config, classes=shipped.config.classes[::-1]))
    state = shipped.state_dict()
    state["head.weight"], state["head.bias"] = state["head.weight"].flip(0), state["head.bias"].flip(0)
    reversed_model.load_state_dict(state)
    save_checkpoint(tmp_path / "reversed", reversed_model)

    out = tmp_path / "run"
    assert main(["train", "--data", str(fer_root), "--out", str(out), "--epochs", "1", "--lr", "1e-7", "--warmup-epochs", "0",
                 "--init", str(default_model_dir()), "--teacher", str(tmp_path / "reversed"), "--distill-weight", "1", *SMALL]) == 0
    row, = _rows(out / "metrics.csv")
    assert float(row["train_loss"]) < 0.3  # by position, the reversed columns would disagree on almost every face

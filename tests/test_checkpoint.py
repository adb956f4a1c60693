from __future__ import annotations

import json

import pytest
import torch

from classroom_fer.errors import UserError
from classroom_fer.models import build_model, load_checkpoint, preset, save_checkpoint


def test_round_trip_and_atomic_replace(tmp_path):
    model = build_model(preset("default")).eval()
    x = torch.rand(2, 1, 48, 48)
    save_checkpoint(tmp_path / "best", model, {"epoch": 1})
    save_checkpoint(tmp_path / "best", model, {"epoch": 2})  # replaces the old one
    loaded, training = load_checkpoint(tmp_path / "best")
    assert training["epoch"] == 2
    assert torch.allclose(loaded(x), model(x))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["best"]  # no staging leftovers


def test_half_precision_storage_loads_as_float32(tmp_path):
    model = build_model(preset("default")).eval()
    save_checkpoint(tmp_path / "ship", model, half=True)
    loaded, _ = load_checkpoint(tmp_path / "ship")
    assert all(p.dtype == torch.float32 for p in loaded.parameters())
    x = torch.rand(2, 1, 48, 48)
    assert torch.allclose(loaded(x).softmax(1), model(x).softmax(1), atol=1e-2)


def test_weights_of_another_architecture_are_rejected(tmp_path):
    save_checkpoint(tmp_path / "ckpt", build_model(preset("default")))
    config = json.loads((tmp_path / "ckpt" / "config.json").read_text())
    config["embed_dim"], config["num_heads"] = 96, 3
    (tmp_path / "ckpt" / "config.json").write_text(json.dumps(config))
    with pytest.raises(UserError, match="do not fit config.json"):
        load_checkpoint(tmp_path / "ckpt")


def test_missing_files_are_clear_errors(tmp_path):
    with pytest.raises(UserError, match="not found"):
        load_checkpoint(tmp_path / "nothing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="model.safetensors missing"):
        load_checkpoint(tmp_path / "empty")

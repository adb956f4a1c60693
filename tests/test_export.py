"""ONNX export (fp32, int8, token downsampling), the frozen torch path and the benchmark worker,
checked on real FER2013 PublicTest faces."""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

from classroom_fer.benchmark import Timing, Variant, measure_in_subprocess
from classroom_fer.cli import main
from classroom_fer.data import load_dataset
from classroom_fer.export.onnx import EXPORT_TOLERANCE, INPUT_NAME, export_onnx, paper_keep_schedule
from classroom_fer.models import with_token_strategy
from classroom_fer.export.quantize import quantize_onnx
from classroom_fer.inference import ONNX_FILE, OnnxClassifier, TorchClassifier, default_model_dir, load_classifier
from classroom_fer.models import PRESETS, build_model, load_checkpoint, preset


@pytest.fixture(scope="module")
def public_test(fer_root):
    return load_dataset(fer_root, "publictest")


@pytest.fixture(scope="module")
def faces(public_test) -> np.ndarray:
    """A few hundred real faces, every class present."""
    return public_test.subset(np.random.default_rng(0).permutation(len(public_test))[:300]).images


@pytest.fixture(scope="module")
def shipped():
    return load_checkpoint(default_model_dir())[0]


def accuracy(probabilities: np.ndarray, labels: np.ndarray) -> float:
    return float((probabilities.argmax(1) == labels).mean() * 100)


def test_shipped_onnx_matches_torch_on_real_faces(public_test):
    subset = public_test.subset(np.arange(0, len(public_test), 6))  # ~600 faces across the split
    torch_classifier = load_classifier(backend="torch", threads=1)
    onnx_classifier = load_classifier(backend="onnx", threads=1)
    assert (torch_classifier.backend, onnx_classifier.backend) == ("torch", "onnx")
    expected = torch_classifier.predict_proba(subset.images)
    exported = onnx_classifier.predict_proba(subset.images)
    assert np.abs(expected - exported).max() <= EXPORT_TOLERANCE
    assert abs(accuracy(expected, subset.labels) - accuracy(exported, subset.labels)) <= 0.2


def test_scaled_keep_schedule_reproduces_the_papers_on_its_model():
    paper = build_model(preset("paper", pretrained_backbone=False, token_strategy="none", keep_tokens=None))
    assert paper_keep_schedule(paper) == PRESETS["paper"].keep_tokens


@pytest.mark.parametrize("strategy", ["topk-attention", "pool"])
def test_token_downsampling_is_in_the_graph_with_a_dynamic_batch(strategy, shipped, faces, tmp_path):
    model = with_token_strategy(shipped, strategy, paper_keep_schedule(shipped))
    assert model.tokens_per_layer[-1] < model.tokens_per_layer[0]
    path = export_onnx(model, tmp_path / f"{strategy}.onnx")
    graph = onnx.load(str(path)).graph
    batch_axis = next(i for i in graph.input if i.name == INPUT_NAME).type.tensor_type.shape.dim[0]
    assert batch_axis.dim_param and not batch_axis.dim_value
    assert ("TopK" in {node.op_type for node in graph.node}) == (strategy == "topk-attention")
    torch_classifier = TorchClassifier(tmp_path, threads=1, model=model)
    onnx_classifier = OnnxClassifier(path, threads=1)
    for batch in (faces[:1], faces[:7], faces):
        assert np.abs(torch_classifier.predict_proba(batch) - onnx_classifier.predict_proba(batch)).max() <= EXPORT_TOLERANCE


def test_frozen_torch_path_matches_the_eager_model(shipped, faces):
    classifier = TorchClassifier(default_model_dir(), threads=1, model=shipped)
    for batch in (faces[:1], faces[:5], faces):
        with torch.inference_mode():
            eager = torch.softmax(shipped(torch.from_numpy(batch[:, None].astype(np.float32) / 255)), 1).numpy()
        assert np.abs(classifier.predict_proba(batch) - eager).max() <= 1e-5


def test_int8_agrees_with_fp32_on_public_test(public_test, tmp_path):
    fp32_path = default_model_dir() / ONNX_FILE
    int8_path = quantize_onnx(fp32_path, tmp_path / "int8.onnx")
    assert int8_path.stat().st_size < fp32_path.stat().st_size / 2
    assert onnx.load(str(int8_path)).metadata_props  # the class order travels with the graph
    fp32 = OnnxClassifier(fp32_path, threads=1).predict_proba(public_test.images)
    int8 = OnnxClassifier(int8_path, threads=1).predict_proba(public_test.images)
    assert (fp32.argmax(1) == int8.argmax(1)).mean() >= 0.99
    assert accuracy(fp32, public_test.labels) - accuracy(int8, public_test.labels) <= 0.5


def test_export_verb_writes_graphs_that_load(tmp_path, faces):
    fp32_path, int8_path = tmp_path / "exported.onnx", tmp_path / "exported-int8.onnx"
    assert main(["export", "--format", "onnx", "--out", str(fp32_path)]) == 0
    assert main(["export", "--out", str(int8_path), "--int8", "--model", str(default_model_dir())]) == 0
    shipped = load_classifier(default_model_dir() / ONNX_FILE).predict_proba(faces)
    exported = load_classifier(fp32_path, backend="onnx")
    assert exported.source == str(fp32_path)
    assert np.abs(exported.predict_proba(faces) - shipped).max() <= EXPORT_TOLERANCE
    quantized = load_classifier(int8_path).predict_proba(faces)
    assert (quantized.argmax(1) == shipped.argmax(1)).mean() >= 0.97
    assert not list(tmp_path.glob(".*.tmp"))


def test_export_verb_writes_model_onnx_into_a_users_checkpoint(tmp_path, faces):
    checkpoint = tmp_path / "run"
    checkpoint.mkdir()
    for name in ("config.json", "model.safetensors"):
        shutil.copy(default_model_dir() / name, checkpoint / name)
    assert load_classifier(checkpoint).backend == "torch"  # no graph yet
    assert main(["export", "--model", str(checkpoint)]) == 0
    classifier = load_classifier(checkpoint)
    assert (classifier.backend, classifier.source) == ("onnx", str(checkpoint / ONNX_FILE))
    expected = load_classifier(checkpoint, backend="torch").predict_proba(faces)
    assert np.abs(classifier.predict_proba(faces) - expected).max() <= EXPORT_TOLERANCE


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--model", "no/such/model"], "no/such/model: model not found"),
        (["--int8", "static"], "--int8 static needs --calibration-data"),
        (["--model", str(default_model_dir() / ONNX_FILE)], "already an ONNX graph"),
        (["--token-strategy", "pool", "--keep-tokens", "16,x"], "expected comma-separated whole numbers"),
    ],
)
def test_export_verb_reports_user_errors_in_one_line(argv, message, tmp_path, capsys):
    assert main(["export", "--out", str(tmp_path / "out.onnx"), *argv]) == 2
    error = capsys.readouterr().err.strip()
    assert error.startswith("error: ") and message in error and "\n" not in error
    assert not (tmp_path / "out.onnx").exists()


def test_export_verb_needs_out_for_the_shipped_model(capsys):
    assert main(["export", "--int8"]) == 2
    assert "--out is needed" in capsys.readouterr().err


def test_benchmark_worker_measures_each_backend_in_its_own_process(shipped):
    quick = {"threads": 1, "b1": Timing(1, 3, 0.0), "b32": Timing(0, 1, 0.0)}
    onnx_figures = measure_in_subprocess(Variant("onnx", "onnx", str(default_model_dir() / ONNX_FILE), None, None, **quick))
    plain = measure_in_subprocess(Variant("torch", "torch", str(default_model_dir()), None, None, **quick))
    keep = paper_keep_schedule(shipped)
    pooled = measure_in_subprocess(Variant("torch-pool", "torch", str(default_model_dir()), "pool", keep, **quick))
    for figures in (onnx_figures, plain, pooled):
        assert figures["latency_ms_b1"] > 0 and figures["throughput_b32"] > 0
        assert figures["peak_mb"] is None or figures["process_peak_mb"] >= figures["peak_mb"] > 0
    assert plain["params"] == pooled["params"] == sum(p.numel() for p in shipped.parameters())
    assert pooled["gflops"] < plain["gflops"]
    assert pooled["tokens_per_layer"][0] == plain["tokens_per_layer"][-1] > pooled["tokens_per_layer"][-1]
    assert plain["process_peak_mb"] > onnx_figures["process_peak_mb"]  # torch's runtime is the heavier one


def test_alternative_large_model_matches_its_preset_and_both_backends_agree(fer_root):
    """models/large96 (more accurate, slower than the shipped model: see docs/experiments.md) is
    the architecture the large96 preset trains, and its ONNX graph is its own weights."""
    large = Path(__file__).resolve().parents[1] / "models" / "large96"
    faces = load_dataset(fer_root, "publictest", max_samples=512)
    torch_classifier = TorchClassifier(large)
    assert torch_classifier.model.config == preset("large96")
    torch_probs = torch_classifier.predict_proba(faces.images)
    onnx_probs = load_classifier(large, backend="onnx").predict_proba(faces.images)
    assert np.abs(torch_probs - onnx_probs).max() < EXPORT_TOLERANCE
    assert (onnx_probs.argmax(axis=1) == faces.labels).mean() > 0.6  # trained weights, not an untrained graph

from __future__ import annotations

import json

import numpy as np

from classroom_fer.classes import CLASS_NAMES
from classroom_fer.cli import main
from classroom_fer.data import load_dataset


def test_evaluate_publictest_writes_consistent_metrics_and_plots(tmp_path, fer_root, capsys):
    out = tmp_path / "eval"
    assert main(["evaluate", "--data", str(fer_root), "--split", "publictest", "--backend", "onnx", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    metrics = json.loads((out / "metrics.json").read_text())
    dataset = load_dataset(fer_root, "publictest")
    matrix = np.array(metrics["confusion_matrix"])
    assert matrix.sum() == metrics["samples"] == len(dataset) == 3589
    # Rows are true classes in CLASS_NAMES order: their sums are the class counts of the split.
    assert matrix.sum(axis=1).tolist() == [dataset.class_counts()[name] for name in CLASS_NAMES]
    assert abs(np.trace(matrix) / matrix.sum() - metrics["accuracy"]) < 1e-9
    assert list(metrics["per_class"]) == list(CLASS_NAMES) == metrics["classes"]
    assert 0 <= metrics["ece"] <= 1 and 0 <= metrics["macro_f1"] <= 1
    assert f"{metrics['accuracy'] * 100:.2f}%" in printed
    for plot in ("confusion_matrix.png", "reliability.png"):
        assert (out / plot).stat().st_size > 5000


def test_token_strategy_can_be_switched_at_evaluation(tmp_path, fer_root):
    base, pooled = tmp_path / "none.json", tmp_path / "pool.json"
    common = ["evaluate", "--data", str(fer_root), "--split", "publictest", "--backend", "torch"]
    assert main([*common, "--json", str(base)]) == 0
    assert main([*common, "--token-strategy", "pool", "--keep-tokens", "16,16,9,9", "--json", str(pooled)]) == 0
    a, b = json.loads(base.read_text()), json.loads(pooled.read_text())
    assert a["samples"] == b["samples"]
    assert a["ece"] != b["ece"]  # the same weights, a different computation, other probabilities


def test_evaluate_bad_inputs_are_one_line_errors(tmp_path, fer_root, capsys):
    assert main(["evaluate", "--data", str(tmp_path / "missing"), "--split", "test"]) == 2
    assert main(["evaluate", "--data", str(fer_root), "--split", "publictest", "--model", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and all(line.startswith("error: ") for line in err)


def test_flip_tta_is_mirror_symmetric_and_in_one_batch(fer_root):
    from classroom_fer.inference import load_classifier

    faces = load_dataset(fer_root, "publictest", max_samples=32).images
    plain, averaged = load_classifier(backend="onnx"), load_classifier(backend="onnx", tta=True)
    mirrored = np.ascontiguousarray(faces[:, :, ::-1])
    assert np.allclose(averaged.predict_proba(faces), averaged.predict_proba(mirrored), atol=1e-6)
    expected = (plain.predict_proba(faces) + plain.predict_proba(mirrored)) / 2
    assert np.allclose(averaged.predict_proba(faces), expected, atol=1e-6)
    assert not np.allclose(plain.predict_proba(faces), plain.predict_proba(mirrored), atol=1e-3)

"""Classification metrics and plots, always labelled in CLASS_NAMES order."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ..classes import CLASS_NAMES, NUM_CLASSES


def expected_calibration_error(probabilities: np.ndarray, labels: np.ndarray, bins: int = 15) -> float:
    confidence = probabilities.max(axis=1)
    correct = probabilities.argmax(axis=1) == labels
    edges = np.linspace(0, 1, bins + 1)
    error = 0.0
    for low, high in zip(edges[:-1], edges[1:]):
        inside = (confidence > low) & (confidence <= high)
        if inside.any():
            error += inside.mean() * abs(correct[inside].mean() - confidence[inside].mean())
    return float(error)


def classification_metrics(probabilities: np.ndarray, labels: np.ndarray) -> dict:
    from sklearn.metrics import accuracy_score, confusion_matrix, f1_score, precision_recall_fscore_support

    predictions = probabilities.argmax(axis=1)
    classes = list(range(NUM_CLASSES))
    precision, recall, f1, support = precision_recall_fscore_support(labels, predictions, labels=classes, zero_division=0)
    return {
        "samples": int(len(labels)),
        "accuracy": float(accuracy_score(labels, predictions)),
        "macro_f1": float(f1_score(labels, predictions, labels=classes, average="macro", zero_division=0)),
        "weighted_f1": float(f1_score(labels, predictions, labels=classes, average="weighted", zero_division=0)),
        "ece": expected_calibration_error(probabilities, labels),
        "per_class": {
            name: {"precision": float(p), "recall": float(r), "f1": float(f), "support": int(s)}
            for name, p, r, f, s in zip(CLASS_NAMES, precision, recall, f1, support)
        },
        "confusion_matrix": confusion_matrix(labels, predictions, labels=classes).tolist(),
        "classes": list(CLASS_NAMES),
    }


def plot_confusion_matrix(matrix: list[list[int]], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.metrics import ConfusionMatrixDisplay

    counts = np.asarray(matrix, dtype=float)
    normalised = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
    figure, axis = plt.subplots(figsize=(7, 6))
    ConfusionMatrixDisplay(normalised, display_labels=list(CLASS_NAMES)).plot(ax=axis, cmap="Blues", values_format=".2f", colorbar=False)
    axis.set_title(title)
    axis.set_xlabel("predicted")
    axis.set_ylabel("true (rows sum to 1)")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def plot_reliability(probabilities: np.ndarray, labels: np.ndarray, path: Path, bins: int = 15) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    confidence = probabilities.max(axis=1)
    correct = probabilities.argmax(axis=1) == labels
    edges = np.linspace(0, 1, bins + 1)
    centres, accuracies = [], []
    for low, high in zip(edges[:-1], edges[1:]):
        inside = (confidence > low) & (confidence <= high)
        if inside.any():
            centres.append(confidence[inside].mean())
            accuracies.append(correct[inside].mean())
    figure, axis = plt.subplots(figsize=(5, 5))
    axis.plot([0, 1], [0, 1], "--", color="grey", label="perfect calibration")
    axis.plot(centres, accuracies, "o-", label="model")
    axis.set_xlabel("confidence")
    axis.set_ylabel("accuracy")
    axis.set_title(f"Reliability (ECE {expected_calibration_error(probabilities, labels):.3f})")
    axis.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def plot_curves(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [r["epoch"] for r in rows]
    figure, (loss_axis, acc_axis) = plt.subplots(1, 2, figsize=(11, 4))
    loss_axis.plot(epochs, [r["train_loss"] for r in rows], label="train")
    loss_axis.plot(epochs, [r["val_loss"] for r in rows], label="validation")
    loss_axis.set_xlabel("epoch")
    loss_axis.set_ylabel("loss")
    loss_axis.legend()
    acc_axis.plot(epochs, [r["train_acc"] for r in rows], label="train")
    acc_axis.plot(epochs, [r["val_acc"] for r in rows], label="validation")
    acc_axis.set_xlabel("epoch")
    acc_axis.set_ylabel("accuracy")
    acc_axis.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)

"""`classroom-fer evaluate`: metrics of a model on a dataset split, through the same classifier
(and preprocessing) that inference uses."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from .data import load_dataset
from .errors import UserError
from .inference import FlipAveragedClassifier, TorchClassifier, load_classifier


def evaluate(data: str, split: str = "test", model: str | None = None, backend: str = "auto", tta: bool = False,
             token_strategy: str | None = None, keep_tokens: list[int] | None = None, out: Path | None = None,
             batch_size: int = 512) -> dict:
    from .training.metrics import classification_metrics, plot_confusion_matrix, plot_reliability

    if out is not None:  # made first, so an unusable --out fails before the run, not after it
        try:
            out.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise UserError(f"{out}: cannot create the output folder ({error.strerror})") from None
    classifier = load_classifier(model, backend)  # before the dataset: a bad --model fails without decoding it
    if token_strategy is not None:
        from .models import with_token_strategy

        if not isinstance(classifier, TorchClassifier):
            raise UserError("--token-strategy needs the torch backend (--backend torch)")
        model = with_token_strategy(classifier.model, token_strategy, keep_tokens)
        classifier = TorchClassifier(Path(classifier.source), model=model)
    if tta:
        classifier = FlipAveragedClassifier(classifier)
    dataset = load_dataset(data, split)
    probabilities = np.concatenate([
        classifier.predict_proba(dataset.images[start : start + batch_size])
        for start in range(0, len(dataset), batch_size)
    ])
    metrics = classification_metrics(probabilities, dataset.labels)
    metrics.update({"data": str(data), "split": split, "model": classifier.source, "backend": classifier.backend, "tta": tta})
    if out is not None:
        try:
            (out / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
            plot_confusion_matrix(metrics["confusion_matrix"], out / "confusion_matrix.png", f"{split}: accuracy {metrics['accuracy'] * 100:.2f}%")
            plot_reliability(probabilities, dataset.labels, out / "reliability.png")
        except OSError as error:
            raise UserError(f"{out}: cannot write the results ({error.strerror})") from None
    return metrics

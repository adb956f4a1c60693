"""ONNX export with a dynamic batch axis; token downsampling is part of the graph."""
from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ..classes import CLASS_NAMES
from ..errors import UserError
from ..preprocessing import FACE_SIZE

if TYPE_CHECKING:
    from ..models.hybrid import HybridMobileNetViT

OPSET = 17
INPUT_NAME = "faces"
OUTPUT_NAME = "logits"
EXPORT_TOLERANCE = 1e-4  # largest allowed difference between torch and ONNX probabilities


def export_onnx(model: HybridMobileNetViT, path: str | Path) -> Path:
    """Write ``model`` as ONNX: input ``faces`` (N x 1 x 48 x 48, [0, 1])
    -> ``logits`` (N x 7), with the class order and the config in the graph's metadata."""
    import onnx
    import torch

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    model = model.eval().to(memory_format=torch.contiguous_format)
    example = torch.rand(2, 1, FACE_SIZE, FACE_SIZE)
    tmp = path.with_name(f".{path.name}.tmp")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model, (example,), str(tmp), input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
            dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}}, opset_version=OPSET, dynamo=False,
        )
    graph = onnx.load(str(tmp))
    metadata = {"classes": json.dumps(list(getattr(model.config, "classes", CLASS_NAMES))),
                "config": json.dumps(model.config.to_dict())}
    for key, value in metadata.items():
        entry = graph.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.save(graph, str(tmp))
    tmp.replace(path)
    return path


def check_export(model: HybridMobileNetViT, path: str | Path, faces: np.ndarray) -> float:
    """Largest difference between the probabilities of ``model`` (torch) and the ONNX graph at
    ``path`` on ``faces`` (uint8 N x 48 x 48); a UserError if it exceeds EXPORT_TOLERANCE."""
    from ..inference import OnnxClassifier, TorchClassifier

    expected = TorchClassifier(Path(path).parent, model=model).predict_proba(faces)
    exported = OnnxClassifier(Path(path)).predict_proba(faces)
    difference = float(np.abs(expected - exported).max())
    if difference > EXPORT_TOLERANCE:
        raise UserError(f"{path}: the exported graph differs from the PyTorch model by {difference:.2e} "
                        f"(tolerance {EXPORT_TOLERANCE:.0e}); please report this with the model's config.json")
    return difference


def paper_keep_schedule(model: HybridMobileNetViT) -> list[int]:
    """Tokens kept after each layer of ``model``, in the proportions of the paper's schedule
    (49 -> 35 -> 26 -> 20 -> 12 tokens over 12 layers), for models trained without downsampling.
    Nothing follows the last layer but the CLS token's head, so no tokens are dropped after it."""
    from ..models import PRESETS

    paper = PRESETS["paper"].keep_tokens  # after each of the 12 layers; paper[0] = all 49 tokens
    entering = [paper[0], *paper[:-1]]  # tokens entering each of the paper's layers
    tokens = model.grid[0] * model.grid[1]
    depth = model.config.depth
    schedule = [max(1, round(tokens * entering[((layer + 1) * len(paper)) // depth] / paper[0])) for layer in range(depth - 1)]
    return [*schedule, schedule[-1] if schedule else tokens]

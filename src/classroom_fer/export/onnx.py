"""ONNX export with a dynamic batch axis; token downsampling is part of the graph."""
from __future__ import annotations

import json
import warnings
from pathlib import Path

import torch

from ..classes import CLASS_NAMES
from ..models.hybrid import HybridMobileNetViT
from ..preprocessing import FACE_SIZE

OPSET = 17


def export_onnx(model: HybridMobileNetViT, path: str | Path) -> Path:
    """Write ``model`` as ONNX: input ``faces`` (N x 1 x 48 x 48, [0, 1]) -> ``logits`` (N x 7)."""
    import onnx

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    model = model.eval().to(memory_format=torch.contiguous_format)
    example = torch.rand(2, 1, FACE_SIZE, FACE_SIZE)
    tmp = path.with_name(f".{path.name}.tmp")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model, (example,), str(tmp), input_names=["faces"], output_names=["logits"],
            dynamic_axes={"faces": {0: "batch"}, "logits": {0: "batch"}}, opset_version=OPSET, dynamo=False,
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

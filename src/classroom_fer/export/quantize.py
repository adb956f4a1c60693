"""int8 ONNX graphs through onnxruntime's quantization tools.

Two methods, measured on PublicTest (docs/deployment.md, benchmarks/export_check.py):

- ``dynamic`` (the default): int8 weights for MatMul/Gemm, activations quantised on the fly.
  The transformer's matrix products are most of the model's weights and time; the MobileNetV3
  convolutions stay fp32. Keeps >= 99% top-1 agreement with fp32 and runs faster.
- ``static``: QDQ for every Conv/MatMul with per-channel weights and activation ranges calibrated
  on real faces. Smaller still, but depthwise convolutions with hard-swish quantise poorly: it
  loses several points of agreement with fp32, and is slower than ``dynamic`` on CPUs.
"""
from __future__ import annotations

import importlib.util
import logging
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
from onnxruntime.quantization import (
    CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType, quantize_dynamic, quantize_static,
)
from onnxruntime.quantization.shape_inference import quant_pre_process

from ..errors import UserError
from ..preprocessing import faces_to_input
from .onnx import INPUT_NAME

QUANTIZED_OPS = {"dynamic": ["MatMul", "Gemm"], "static": ["Conv", "MatMul", "Gemm"]}
METHODS = tuple(QUANTIZED_OPS)
CALIBRATION_BATCH = 32


def quantize_onnx(source: str | Path, out: str | Path, method: str = "dynamic",
                  calibration_faces: np.ndarray | None = None) -> Path:
    """Write an int8 version of the fp32 graph ``source`` to ``out`` (metadata such as the class
    order is kept). ``static`` needs ``calibration_faces`` (uint8, N x 48 x 48, real faces)."""
    if method not in METHODS:
        raise UserError(f"unknown int8 method {method!r} (choose from {', '.join(METHODS)})")
    if method == "static" and (calibration_faces is None or len(calibration_faces) == 0):
        raise UserError("static int8 quantization needs calibration faces (--calibration-data)")
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    staged = out.with_name(f".{out.name}.tmp")
    try:
        with tempfile.TemporaryDirectory(prefix="classroom-fer-quant-") as scratch, _quiet_tools():
            prepared = Path(scratch) / "prepared.onnx"
            # Shape inference + graph cleanup, as the tools recommend. Their symbolic shape inference
            # needs sympy (installed with torch, not with the light install); ONNX's own suffices.
            quant_pre_process(str(source), str(prepared), skip_symbolic_shape=importlib.util.find_spec("sympy") is None)
            if method == "dynamic":
                quantize_dynamic(prepared, staged, weight_type=QuantType.QInt8, op_types_to_quantize=QUANTIZED_OPS[method])
            else:
                quantize_static(
                    prepared, staged, _FaceBatches(calibration_faces), quant_format=QuantFormat.QDQ,
                    op_types_to_quantize=QUANTIZED_OPS[method], per_channel=True, activation_type=QuantType.QUInt8,
                    weight_type=QuantType.QInt8, calibrate_method=CalibrationMethod.MinMax,
                )
        staged.replace(out)
    except BaseException:
        staged.unlink(missing_ok=True)
        raise
    return out


@contextmanager
def _quiet_tools() -> Iterator[None]:
    """The quantization tools log a line per tensor (INFO, WARNING) on the root logger."""
    previous = logging.root.manager.disable
    logging.disable(logging.WARNING)
    try:
        yield
    finally:
        logging.disable(previous)


class _FaceBatches(CalibrationDataReader):
    """Calibration reader for quantize_static: the faces as model inputs, batch by batch."""

    def __init__(self, faces: np.ndarray) -> None:
        self.batches = iter(
            {INPUT_NAME: faces_to_input(faces[start : start + CALIBRATION_BATCH])}
            for start in range(0, len(faces), CALIBRATION_BATCH)
        )

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self.batches, None)

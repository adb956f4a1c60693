"""The hybrid MobileNetV3-ViT family and its checkpoints."""
from .checkpoint import load_checkpoint, save_checkpoint
from .hybrid import (
    PRESETS,
    HybridConfig,
    HybridMobileNetViT,
    build_model,
    count_gflops,
    count_parameters,
    preset,
    with_token_strategy,
)

__all__ = [
    "PRESETS",
    "HybridConfig",
    "HybridMobileNetViT",
    "build_model",
    "count_gflops",
    "count_parameters",
    "load_checkpoint",
    "preset",
    "save_checkpoint",
    "with_token_strategy",
]

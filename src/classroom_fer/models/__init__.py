"""The hybrid MobileNetV3-ViT family and its checkpoints."""
from .checkpoint import load_checkpoint, save_checkpoint
from .hybrid import PRESETS, HybridConfig, HybridMobileNetViT, build_model, count_gflops, count_parameters, preset

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
]

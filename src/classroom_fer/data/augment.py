"""Batch augmentation on tensors: one draw per face, no per-image PIL work.

The thesis's list (flip, rotate 10, random resized crop 0.8-1, brightness/contrast 0.2, random
erasing) as one affine warp plus a few elementwise ops over the whole batch.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass
class AugmentConfig:
    flip: float = 0.5
    rotate_degrees: float = 10.0
    crop_scale: tuple[float, float] = (0.8, 1.0)
    crop_ratio: tuple[float, float] = (3 / 4, 4 / 3)
    translate: float = 0.0
    brightness: float = 0.2
    contrast: float = 0.2
    erase_prob: float = 0.25
    erase_area: tuple[float, float] = (0.02, 0.2)


def augment_batch(images: torch.Tensor, config: AugmentConfig, generator: torch.Generator | None = None) -> torch.Tensor:
    """Augment float faces in [0, 1] of shape (B, 1, H, W); returns the same shape."""
    batch, _, height, width = images.shape
    device = images.device

    def uniform(low: float, high: float, *shape: int) -> torch.Tensor:
        return torch.rand(*(shape or (batch,)), generator=generator, device=device) * (high - low) + low

    # Random resized crop (area scale, aspect ratio 3/4-4/3), rotation and flip as one affine warp.
    area = uniform(*config.crop_scale)
    log_ratio = uniform(math.log(config.crop_ratio[0]), math.log(config.crop_ratio[1]))
    ratio = torch.exp(log_ratio)
    scale_x = torch.sqrt(area * ratio).clamp(max=1.0)
    scale_y = torch.sqrt(area / ratio).clamp(max=1.0)
    shift_x = (1 - scale_x) * uniform(-1, 1) + config.translate * uniform(-1, 1)
    shift_y = (1 - scale_y) * uniform(-1, 1) + config.translate * uniform(-1, 1)
    angle = uniform(-config.rotate_degrees, config.rotate_degrees) * math.pi / 180
    flip = torch.where(uniform(0, 1) < config.flip, -1.0, 1.0)
    cos, sin = torch.cos(angle), torch.sin(angle)
    theta = torch.stack(
        [
            torch.stack([cos * scale_x * flip, -sin * scale_y, shift_x], dim=1),
            torch.stack([sin * scale_x * flip, cos * scale_y, shift_y], dim=1),
        ],
        dim=1,
    )
    grid = F.affine_grid(theta, list(images.shape), align_corners=False)
    images = F.grid_sample(images, grid, mode="bilinear", padding_mode="reflection", align_corners=False)

    # Brightness and contrast, per face.
    brightness = uniform(1 - config.brightness, 1 + config.brightness).view(batch, 1, 1, 1)
    contrast = uniform(1 - config.contrast, 1 + config.contrast).view(batch, 1, 1, 1)
    mean = images.mean(dim=(1, 2, 3), keepdim=True)
    images = ((images * brightness - mean) * contrast + mean).clamp(0, 1)

    # Random erasing: one rectangle per chosen face, filled with noise.
    if config.erase_prob > 0:
        erase_area = uniform(*config.erase_area) * height * width
        erase_ratio = torch.exp(uniform(math.log(0.3), math.log(3.3)))
        erase_h = torch.sqrt(erase_area * erase_ratio).clamp(1, height)
        erase_w = torch.sqrt(erase_area / erase_ratio).clamp(1, width)
        top = uniform(0, 1) * (height - erase_h)
        left = uniform(0, 1) * (width - erase_w)
        rows = torch.arange(height, device=device).view(1, height, 1)
        cols = torch.arange(width, device=device).view(1, 1, width)
        inside = (
            (rows >= top.view(-1, 1, 1)) & (rows < (top + erase_h).view(-1, 1, 1))
            & (cols >= left.view(-1, 1, 1)) & (cols < (left + erase_w).view(-1, 1, 1))
        )
        chosen = (uniform(0, 1) < config.erase_prob).view(-1, 1, 1)
        mask = (inside & chosen).unsqueeze(1)
        noise = torch.rand(images.shape, generator=generator, device=device)
        images = torch.where(mask, noise, images)
    return images

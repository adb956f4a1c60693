"""Hybrid MobileNetV3-ViT (the thesis's model): MobileNetV3 features -> 1x1 conv to the embedding
width -> tokens + CLS + learned position embeddings -> pre-norm transformer encoder with optional
token downsampling -> LayerNorm -> linear head on CLS.
"""
from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models import mobilenet_v3_large, mobilenet_v3_small

from ..classes import CLASS_NAMES
from ..errors import UserError
from .layers import Block, GridPoolDownsample, TopKAttentionDownsample

TOKEN_STRATEGIES = ("none", "topk-attention", "pool")
BACKBONES = {"mobilenet_v3_small": mobilenet_v3_small, "mobilenet_v3_large": mobilenet_v3_large}


@dataclass
class HybridConfig:
    """Everything that defines the architecture; saved as config.json beside the weights."""

    backbone: str = "mobilenet_v3_small"
    backbone_blocks: int | None = None  # how many of torchvision's `features` modules to keep (None: all)
    pretrained_backbone: bool = False  # ImageNet weights from torchvision (needs a download)
    input_size: int = 96  # the 48x48 faces are resized to this inside the model
    in_chans: int = 1  # 1: grayscale straight in; 3: gray repeated, as ImageNet backbones expect
    embed_dim: int = 192
    depth: int = 4
    num_heads: int = 3
    mlp_ratio: float = 4.0
    dropout: float = 0.0
    attn_dropout: float = 0.0
    drop_path: float = 0.1
    token_strategy: str = "none"
    keep_tokens: list[int] | None = None  # non-CLS tokens kept after each block
    classes: list[str] = field(default_factory=lambda: list(CLASS_NAMES))

    def __post_init__(self) -> None:
        if self.backbone not in BACKBONES:
            raise UserError(f"unknown backbone {self.backbone!r} (choose from {', '.join(BACKBONES)})")
        if self.token_strategy not in TOKEN_STRATEGIES:
            raise UserError(f"unknown token strategy {self.token_strategy!r} (choose from {', '.join(TOKEN_STRATEGIES)})")
        if self.token_strategy != "none" and (self.keep_tokens is None or len(self.keep_tokens) != self.depth):
            raise UserError(f"token strategy {self.token_strategy!r} needs keep_tokens with one entry per layer ({self.depth})")
        if self.embed_dim % self.num_heads:
            raise UserError(f"embed_dim {self.embed_dim} is not divisible by num_heads {self.num_heads}")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "HybridConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise UserError(f"unknown model config field(s): {', '.join(unknown)}")
        return cls(**data)

    @classmethod
    def from_file(cls, path: str | Path) -> "HybridConfig":
        try:
            data = json.loads(Path(path).read_text())
        except OSError as error:
            raise UserError(f"{path}: cannot read config ({error.strerror})") from None
        except json.JSONDecodeError as error:
            raise UserError(f"{path}: not valid JSON ({error.msg} at line {error.lineno})") from None
        if not isinstance(data, dict):
            raise UserError(f"{path}: a model config must be a JSON object")
        return cls.from_dict(data)


PRESETS: dict[str, HybridConfig] = {
    # The thesis's exact configuration: MobileNetV3-Large (ImageNet) at 224 px, 7x7 = 49 tokens,
    # ViT-Base encoder, top-K attention downsampling. 88.8M parameters, 9.0 -> 5.5 GFLOPs.
    "paper": HybridConfig(
        backbone="mobilenet_v3_large",
        pretrained_backbone=True,
        input_size=224,
        in_chans=3,
        embed_dim=768,
        depth=12,
        num_heads=12,
        mlp_ratio=4.0,
        dropout=0.1,
        drop_path=0.0,
        token_strategy="topk-attention",
        keep_tokens=[49, 35, 35, 35, 26, 26, 20, 20, 20, 12, 12, 12],
    ),
    # Small, fast configuration for CPUs, trained from scratch (see docs/experiments.md).
    "default": HybridConfig(
        backbone="mobilenet_v3_small",
        backbone_blocks=9,
        input_size=96,
        in_chans=1,
        embed_dim=192,
        depth=4,
        num_heads=3,
        mlp_ratio=3.0,
        dropout=0.1,
        drop_path=0.1,
        token_strategy="none",
    ),
}
# The opt-in, more accurate model in models/large96: the same recipe on MobileNetV3-Large cut at
# stride 16 (6x6 tokens at 96 px), 2.31M parameters, 0.166 GFLOPs; slower on PyTorch at batch 1.
PRESETS["large96"] = dataclasses.replace(PRESETS["default"], backbone="mobilenet_v3_large", backbone_blocks=13)


def preset(name: str, **overrides) -> HybridConfig:
    if name not in PRESETS:
        raise UserError(f"unknown preset {name!r} (choose from {', '.join(PRESETS)})")
    return dataclasses.replace(PRESETS[name], **overrides)


class HybridMobileNetViT(nn.Module):
    """Input: N x 1 x H x W grayscale faces in [0, 1] (see classroom_fer.preprocessing)."""

    def __init__(self, config: HybridConfig) -> None:
        super().__init__()
        self.config = config
        self.backbone = _build_backbone(config)
        with torch.no_grad():
            probe = self.backbone(torch.zeros(1, config.in_chans, config.input_size, config.input_size))
        channels, grid_h, grid_w = probe.shape[1:]
        self.grid = (grid_h, grid_w)
        self.proj = nn.Conv2d(channels, config.embed_dim, kernel_size=1)
        num_tokens = grid_h * grid_w
        self.cls_token = nn.Parameter(torch.zeros(1, 1, config.embed_dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, 1 + num_tokens, config.embed_dim))
        self.pos_drop = nn.Dropout(config.dropout)
        rates = torch.linspace(0, config.drop_path, config.depth).tolist()
        self.blocks = nn.ModuleList(
            Block(config.embed_dim, config.num_heads, config.mlp_ratio, config.dropout, config.attn_dropout, rate)
            for rate in rates
        )
        self.downsample = nn.ModuleList(self._downsample_layers(num_tokens))
        self.norm = nn.LayerNorm(config.embed_dim, eps=1e-6)
        self.head = nn.Linear(config.embed_dim, len(config.classes))
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        nn.init.trunc_normal_(self.cls_token, std=0.02)
        for module in [*self.blocks.modules(), self.head]:
            if isinstance(module, nn.Linear):
                nn.init.trunc_normal_(module.weight, std=0.02)
                nn.init.zeros_(module.bias)

    def _downsample_layers(self, num_tokens: int) -> list[nn.Module]:
        """One module per block (Identity where nothing is dropped); records tokens per layer."""
        config = self.config
        layers: list[nn.Module] = []
        self.tokens_per_layer: list[int] = []
        grid = self.grid
        for i in range(config.depth):
            self.tokens_per_layer.append(num_tokens)
            keep = config.keep_tokens[i] if config.keep_tokens else num_tokens
            if config.token_strategy == "none" or keep >= num_tokens:
                layers.append(nn.Identity())
            elif config.token_strategy == "topk-attention":
                layers.append(TopKAttentionDownsample(keep))
                num_tokens = keep
            else:
                side = max(1, math.isqrt(keep))
                out_grid = (min(side, grid[0]), min(side, grid[1]))
                layers.append(GridPoolDownsample(grid, out_grid))
                grid = out_grid
                num_tokens = out_grid[0] * out_grid[1]
        return layers

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        size = self.config.input_size
        if x.shape[-2:] != (size, size):
            x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
        x = (x - 0.5) / 0.5
        if self.config.in_chans == 3 and x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        x = self.proj(self.backbone(x)).flatten(2).transpose(1, 2)
        x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1) + self.pos_embed
        x = self.pos_drop(x)
        for block, downsample in zip(self.blocks, self.downsample):
            need_weights = getattr(downsample, "needs_attention", False)
            x, attention = block(x, need_weights)
            if not isinstance(downsample, nn.Identity):
                x = downsample(x, attention)
        return self.norm(x[:, 0])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.forward_features(x))


def _build_backbone(config: HybridConfig) -> nn.Sequential:
    weights = "DEFAULT" if config.pretrained_backbone else None
    features = BACKBONES[config.backbone](weights=weights).features
    if config.backbone_blocks is not None:
        if not 1 <= config.backbone_blocks <= len(features):
            raise UserError(f"backbone_blocks must be 1-{len(features)} for {config.backbone}")
        features = features[: config.backbone_blocks]
    if config.in_chans != 3:
        stem = features[0][0]
        conv = nn.Conv2d(config.in_chans, stem.out_channels, stem.kernel_size, stem.stride, stem.padding, bias=False)
        with torch.no_grad():
            conv.weight.copy_(stem.weight.sum(dim=1, keepdim=True).repeat(1, config.in_chans, 1, 1) / config.in_chans)
        features[0][0] = conv
    return features


def build_model(config: HybridConfig) -> HybridMobileNetViT:
    return HybridMobileNetViT(config)


def with_token_strategy(model: HybridMobileNetViT, strategy: str, keep_tokens: list[int] | None) -> HybridMobileNetViT:
    """The same weights with another token downsampling (it adds no parameters), in eval mode."""
    config = dataclasses.replace(model.config, token_strategy=strategy, keep_tokens=keep_tokens if strategy != "none" else None)
    retokenized = build_model(config)
    retokenized.load_state_dict(model.state_dict())
    return retokenized.eval()


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def count_gflops(model: nn.Module, batch: int = 1) -> float:
    """FLOPs (2 x multiply-adds, the convention of the thesis's 9.0 GFLOPs) per forward pass."""
    from torch.utils.flop_counter import FlopCounterMode

    size = 48
    was_training = model.training
    model.eval()
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(torch.zeros(batch, 1, size, size))
    model.train(was_training)
    return counter.get_total_flops() / 1e9 / batch

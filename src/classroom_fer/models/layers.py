"""Small transformer layers for the hybrid model (pre-norm ViT block, token downsampling)."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


class DropPath(nn.Module):
    """Stochastic depth: drop the whole residual branch for a random subset of samples."""

    def __init__(self, prob: float = 0.0) -> None:
        super().__init__()
        self.prob = prob

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.prob == 0.0 or not self.training:
            return x
        keep = 1.0 - self.prob
        mask = x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(keep)
        return x * mask / keep


class Attention(nn.Module):
    """Multi-head self-attention. Returns the attention map only when asked, because only
    attention-based token selection needs it; otherwise the fused SDPA kernel runs."""

    def __init__(self, dim: int, num_heads: int, attn_drop: float = 0.0, proj_drop: float = 0.0) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"embed_dim {dim} is not divisible by num_heads {num_heads}")
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.qkv = nn.Linear(dim, dim * 3)
        self.attn_drop = attn_drop
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)

    def forward(self, x: torch.Tensor, need_weights: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
        batch, tokens, dim = x.shape
        qkv = self.qkv(x).reshape(batch, tokens, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]
        drop = self.attn_drop if self.training else 0.0
        if need_weights:
            weights = (q * (1.0 / math.sqrt(self.head_dim))) @ k.transpose(-2, -1)
            weights = weights.softmax(dim=-1)
            out = F.dropout(weights, drop, self.training) @ v
        else:
            weights = None
            out = F.scaled_dot_product_attention(q, k, v, dropout_p=drop)
        out = out.transpose(1, 2).reshape(batch, tokens, dim)
        return self.proj_drop(self.proj(out)), weights


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int, drop: float = 0.0) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)
        self.drop = nn.Dropout(drop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.drop(self.fc2(self.drop(self.act(self.fc1(x)))))


class Block(nn.Module):
    """Pre-norm transformer encoder block, as in ViT."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float, drop: float, attn_drop: float, drop_path: float) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = Attention(dim, num_heads, attn_drop, drop)
        self.drop_path = DropPath(drop_path)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), drop)

    def forward(self, x: torch.Tensor, need_weights: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
        attended, weights = self.attn(self.norm1(x), need_weights)
        x = x + self.drop_path(attended)
        x = x + self.drop_path(self.mlp(self.norm2(x)))
        return x, weights


class TopKAttentionDownsample(nn.Module):
    """The thesis's token downsampling: keep the ``keep`` non-CLS tokens that received the most
    attention (attention summed over heads and queries), CLS always kept."""

    needs_attention = True

    def __init__(self, keep: int) -> None:
        super().__init__()
        self.keep = keep

    def forward(self, x: torch.Tensor, attention: torch.Tensor | None) -> torch.Tensor:
        if attention is None:
            raise ValueError("top-k attention downsampling needs the attention map")
        received = attention.sum(dim=(1, 2))[:, 1:]  # (B, N): attention each token received
        index = received.topk(self.keep, dim=1).indices.sort(dim=1).values + 1
        kept = torch.gather(x, 1, index.unsqueeze(-1).expand(-1, -1, x.shape[-1]))
        return torch.cat([x[:, :1], kept], dim=1)


def grid_pool_matrix(height: int, width: int, out_height: int, out_width: int) -> torch.Tensor:
    """Adaptive-average-pooling weights from an HxW token grid to an out_height x out_width grid."""
    matrix = torch.zeros(out_height * out_width, height * width)
    for i in range(out_height):
        top, bottom = (i * height) // out_height, -((-(i + 1) * height) // out_height)
        for j in range(out_width):
            left, right = (j * width) // out_width, -((-(j + 1) * width) // out_width)
            cells = [r * width + c for r in range(top, bottom) for c in range(left, right)]
            matrix[i * out_width + j, cells] = 1.0 / len(cells)
    return matrix


class GridPoolDownsample(nn.Module):
    """Spatial pooling of the token grid to a smaller grid: no attention map needed (so the fused
    attention kernel runs), a fixed matmul that exports cleanly to ONNX, and it keeps
    information from every region instead of discarding tokens."""

    needs_attention = False

    def __init__(self, grid: tuple[int, int], out_grid: tuple[int, int]) -> None:
        super().__init__()
        self.out_grid = out_grid
        self.register_buffer("pool", grid_pool_matrix(*grid, *out_grid), persistent=False)

    def forward(self, x: torch.Tensor, attention: torch.Tensor | None = None) -> torch.Tensor:
        return torch.cat([x[:, :1], torch.matmul(self.pool, x[:, 1:])], dim=1)

from __future__ import annotations

import dataclasses

import pytest
import torch

from classroom_fer.errors import UserError
from classroom_fer.models import build_model, count_gflops, count_parameters, preset
from classroom_fer.models.layers import GridPoolDownsample, TopKAttentionDownsample, grid_pool_matrix


def test_paper_preset_matches_the_thesis():
    config = preset("paper", pretrained_backbone=False)
    model = build_model(config)
    assert model.grid == (7, 7)
    assert abs(count_parameters(model) / 1e6 - 88.8) < 0.1
    assert abs(count_gflops(model) - 5.5) < 0.1  # with the thesis's top-K schedule
    full = build_model(dataclasses.replace(config, token_strategy="none", keep_tokens=None))
    assert abs(count_gflops(full) - 9.0) < 0.1
    assert model.tokens_per_layer == [49, 49, 35, 35, 35, 26, 26, 20, 20, 20, 12, 12]


@pytest.mark.parametrize("strategy,keep", [("none", None), ("topk-attention", [16, 12, 9, 6]), ("pool", [16, 9, 9, 4])])
def test_default_family_runs_every_strategy(strategy, keep):
    model = build_model(preset("default", token_strategy=strategy, keep_tokens=keep)).eval()
    logits = model(torch.rand(3, 1, 48, 48))
    assert logits.shape == (3, 7) and torch.isfinite(logits).all()
    if keep:
        assert model.tokens_per_layer[-1] < model.tokens_per_layer[0]
    assert count_parameters(model) < 5e6 and count_gflops(model) < 0.3


def test_topk_keeps_the_most_attended_tokens():
    x = torch.arange(1 * 5 * 2, dtype=torch.float32).reshape(1, 5, 2)  # CLS + 4 tokens
    attention = torch.zeros(1, 2, 5, 5)
    attention[..., 3] = 1.0  # token 3 receives most
    attention[..., 1] = 0.5  # then token 1
    kept = TopKAttentionDownsample(2)(x, attention)
    assert torch.equal(kept, x[:, [0, 1, 3]])


def test_grid_pooling_averages_regions():
    matrix = grid_pool_matrix(4, 4, 2, 2)
    assert torch.allclose(matrix.sum(dim=1), torch.ones(4))
    tokens = torch.arange(16, dtype=torch.float32).view(1, 16, 1)
    pooled = GridPoolDownsample((4, 4), (2, 2))(torch.cat([torch.zeros(1, 1, 1), tokens], 1))
    assert pooled[0, 1:, 0].tolist() == [2.5, 4.5, 10.5, 12.5]


def test_sdpa_and_explicit_attention_agree():
    model = build_model(preset("default")).eval()
    block = model.blocks[0]
    x = torch.randn(2, 17, model.config.embed_dim)
    fused, _ = block(x, need_weights=False)
    explicit, weights = block(x, need_weights=True)
    assert torch.allclose(fused, explicit, atol=1e-5)
    assert torch.allclose(weights.sum(-1), torch.ones_like(weights.sum(-1)), atol=1e-5)


@pytest.mark.parametrize("bad", [dict(token_strategy="merge"), dict(token_strategy="pool", keep_tokens=[4]),
                                 dict(embed_dim=100, num_heads=3), dict(backbone="resnet50")])
def test_bad_configs_are_user_errors(bad):
    with pytest.raises(UserError):
        preset("default", **bad)

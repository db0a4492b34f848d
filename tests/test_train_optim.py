"""Schedule, weight-decay groups, and the FLOP and progress accounting the logs report."""

from __future__ import annotations

import itertools
import math

import pytest

from growlm.train.flops import TokenFlops, attention_flops_per_token, token_flops
from growlm.train.model import build_config, build_model, param_count
from growlm.train.optim import lr_at, make_optimizer
from growlm.train.recipe import ModelConfig, OptimConfig
from growlm.train.state import Progress


def test_warmup_then_cosine_to_the_floor():
    cfg = OptimConfig(lr=1e-3, warmup_steps=10, min_lr_ratio=0.1)
    assert lr_at(0, 110, cfg) == pytest.approx(1e-4)
    assert lr_at(9, 110, cfg) == pytest.approx(1e-3)
    assert lr_at(10, 110, cfg) == pytest.approx(1e-3)
    mid = 10 + 99 / 2
    assert lr_at(int(mid), 110, cfg) == pytest.approx(
        1e-4 + 9e-4 * 0.5 * (1 + math.cos(math.pi * (int(mid) - 10) / 99))
    )
    assert lr_at(109, 110, cfg) == pytest.approx(1e-4)
    lrs = [lr_at(s, 110, cfg) for s in range(10, 110)]
    assert all(a >= b for a, b in itertools.pairwise(lrs))


def test_no_warmup():
    cfg = OptimConfig(lr=2e-3, warmup_steps=0, min_lr_ratio=0.0)
    assert lr_at(0, 5, cfg) == pytest.approx(2e-3)
    assert lr_at(4, 5, cfg) == pytest.approx(0.0, abs=1e-12)


def _tiny_model():
    mc = ModelConfig(
        config=dict(
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
        )
    )
    return build_model(build_config(mc, 300, 0))


def test_weight_decay_only_on_matrices():
    model = _tiny_model()
    opt = make_optimizer(model, OptimConfig(weight_decay=0.1))
    decayed, plain = opt.param_groups
    assert decayed["weight_decay"] == 0.1 and plain["weight_decay"] == 0.0
    assert all(p.ndim == 2 for p in decayed["params"])
    assert all(p.ndim == 1 for p in plain["params"])
    names = {id(p): n for n, p in model.named_parameters()}
    assert {names[id(p)] for p in plain["params"]} == {
        n for n, _ in model.named_parameters() if "norm" in n
    }
    assert len(decayed["params"]) + len(plain["params"]) == len(list(model.parameters()))


def test_flop_terms():
    model = _tiny_model()
    # embed 300x32, head 300x32, per layer q,o 32x32, k,v 16x32, mlp 3 x 32x64, 2 norms; final norm
    per_layer = 2 * 32 * 32 + 2 * 16 * 32 + 3 * 32 * 64 + 2 * 32
    assert param_count(model) == 2 * 300 * 32 + 2 * per_layer + 32
    assert attention_flops_per_token(model.config, 64) == 12 * 2 * 64 * 32


def test_token_flops_count_6n_or_the_frozen_layers_backward():
    model = _tiny_model()
    n = param_count(model)
    attention = 12.0 * 2 * 64 * 32
    assert token_flops(model, model.config, 64) == TokenFlops(6.0 * n, attention)
    layer0 = sum(p.numel() for name, p in model.named_parameters() if ".layers.0." in name)
    for name, p in model.named_parameters():
        p.requires_grad_(".layers.0." not in name)  # MSLT: layer 0 frozen
    trainable = n - layer0
    # untied: no weight gradients for layer 0, activation gradients stop above it
    assert token_flops(model, model.config, 64, frozen=True) == TokenFlops(
        2.0 * n + 4.0 * trainable, attention
    )
    model.config.tie_word_embeddings = True  # the embedding trains: gradients reach the bottom
    assert token_flops(model, model.config, 64, frozen=True).model == 4.0 * n + 2.0 * trainable


def test_progress_counts_a_step_and_flags_spikes_and_skips():
    progress = Progress()
    progress.advance(512, TokenFlops(10.0, 2.0))
    assert (progress.stage_step, progress.step, progress.tokens) == (1, 1, 512)
    assert (progress.flops, progress.attn_flops) == (5120.0, 1024.0)
    assert progress.loss_event(4.0, 2.0) is None and progress.loss_avg == 4.0
    assert progress.loss_event(None, 2.0) == "skipped_nonfinite" and progress.loss_avg == 4.0
    assert progress.loss_event(8.5, 2.0) == "loss_spike"
    assert progress.loss_avg == 0.95 * 4.0 + 0.05 * 8.5  # a spike still joins the average
    assert progress.loss_event(100.0, 0.0) is None  # spike_factor 0: no spike events

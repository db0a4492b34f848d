"""HyperCloning (``clone-width``): every width x N with +eta / -eta noise pairs.

On every family: the grown model's logits equal the source's (fp32, ``check``), the noise is
really there (cloned rows differ) and really cancels (the in-copies of every matrix sum to what
the noiseless clone's sum to); AdamW moments follow the Net2Net rule, exact for the noiseless
clone; a recipe stage can use it."""

from __future__ import annotations

import math

import pytest
import torch
from safetensors.torch import load_file
from test_train_stages import STEP_TOKENS, _grown_start, _raw, _stage, _train
from tiny_models import FAMILIES, make_model

import growlm
from growlm.arch import spec_for
from growlm.grow import GrowOptions
from growlm.ops.in_memory import grow_tensors
from growlm.ops.planning import plan_tensors
from growlm.train.recipe import GrowConfig

TOL = 1e-4  # max |logit diff| in float32, as for the other function-preserving operators


def _weights(path):
    out = {}
    for f in sorted(path.glob("*.safetensors")):
        out.update(load_file(str(f)))
    return out


def _in_copies(t: torch.Tensor, dim: int, n: int) -> list[torch.Tensor]:
    """The n copies along a cloned "in" dim (the copies of a unit are tiled: k * size + s)."""
    return list(t.chunk(n, dim=dim))


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("factor", [2, 3])
def test_clone_width_preserves_logits_and_breaks_symmetry(family, factor, tiny_dir, tmp_path):
    src = tiny_dir(family)
    noisy = growlm.grow(
        src, tmp_path / "noisy", "clone-width", {"factor": factor}, GrowOptions(check=True)
    ).to_json()
    assert noisy["function_preserving"] is True
    assert noisy["max_abs_logit_diff"] < TOL, noisy
    assert abs(noisy["loss_after"] - noisy["loss_before"]) < 1e-5
    growlm.grow(src, tmp_path / "plain", "clone-width", {"factor": factor, "snr_db": math.inf})
    a, b = _weights(tmp_path / "noisy"), _weights(tmp_path / "plain")
    cfg = growlm.grow(
        src, None, "clone-width", {"factor": factor}, GrowOptions(dry_run=True)
    ).to_json()
    spec = spec_for(family if family != "llama-tied" else "llama")
    assert cfg["out_params"] > cfg["src_params"]
    checked = 0
    for ts in spec.layer_tensors:
        name = spec.layer_name(ts, 0)
        if ts.role != "matrix" or name not in a:
            continue
        for dim, ax in enumerate(ts.axes):
            if ax.direction != "in":
                continue
            na, nb = _in_copies(a[name], dim, factor), _in_copies(b[name], dim, factor)
            # noiseless copies are all W / n; the noisy pairs differ by 2 eta (10 dB: eta ~ 0.3 rms)
            assert all(torch.equal(nb[0], c) for c in nb[1:]), name
            rms = float(nb[0].pow(2).mean().sqrt())
            assert float((na[0] - na[1]).abs().mean()) > 0.2 * rms, name
            if factor == 3:  # an odd last copy gets no noise
                assert torch.equal(na[2], nb[2]), name
            # ... and cancels: the copies' sum (what the cloned input sees) is unchanged
            torch.testing.assert_close(sum(na), sum(nb), rtol=0, atol=1e-6 * rms * factor)
            checked += 1
    assert checked >= 3, (family, checked)


def test_plan_names_the_noise_and_shapes():
    model = make_model("llama")  # hidden 32, ffn 48, 4 heads / 2 kv heads, head_dim 8
    cfg, out, report = grow_tensors(
        model.config, dict(model.state_dict()), "clone-width", {"factor": 2}
    )
    assert (cfg.hidden_size, cfg.intermediate_size) == (64, 96)
    assert (cfg.num_attention_heads, cfg.num_key_value_heads, cfg.head_dim) == (8, 4, 8)
    assert report["function_preserving"] is True
    assert out["model.layers.0.self_attn.k_proj.weight"].shape == (32, 64)

    plan = plan_tensors(
        model.config.to_dict(),
        {n: tuple(t.shape) for n, t in model.state_dict().items()},
        "clone-width",
        {"factor": 2},
    )
    lines = {tp.name: tp.describe() for tp in plan.tensors}
    assert "noise[1:hidden +/-eta pairs, snr 10 dB]" in lines["model.layers.0.mlp.up_proj.weight"]
    assert "noise" not in lines["model.embed_tokens.weight"]  # out-only tensors: exact clones
    assert "noise" not in lines["model.layers.0.input_layernorm.weight"]


def _grads(model, ids):
    model.zero_grad()
    model(input_ids=ids, labels=ids).loss.backward()
    return {n: p.grad.detach().clone() for n, p in model.named_parameters()}


@pytest.mark.parametrize("snr_db,rel_tol", [(math.inf, 1e-4), (10.0, 0.45)])
def test_carried_moments_follow_the_noiseless_clone(snr_db, rel_tol):
    """The moment rule is Net2Net's (readers copied, split units' own weights 1/n^p). For the
    noiseless clone a moment built from the small model's gradient g equals the grown model's;
    with 10 dB noise the grown gradient moves by O(eta): measured 0.33 relative (L2) on the worst
    tensor (the final norm), 0.23 on average, 0.11 worst at 20 dB; bounded here."""
    from transformers import AutoModelForCausalLM

    small = make_model("llama")
    params = {"factor": 2, "snr_db": snr_db}
    config, weights, _ = grow_tensors(small.config, dict(small.state_dict()), "clone-width", params)
    big = AutoModelForCausalLM.from_config(config).float()
    big.load_state_dict(weights)
    ids = torch.randint(3, 128, (2, 16), generator=torch.Generator().manual_seed(0))
    g_small, g_big = _grads(small, ids), _grads(big, ids)
    _, m1, _ = grow_tensors(small.config, g_small, "clone-width", params, fill="exp_avg")
    sq = {n: g * g for n, g in g_small.items()}
    _, m2, _ = grow_tensors(small.config, sq, "clone-width", params, fill="exp_avg_sq")
    worst = 0.0
    for name, g in g_big.items():
        rel = float((m1[name] - g).norm() / g.norm().clamp(min=1e-12))
        worst = max(worst, rel)
        if math.isinf(snr_db):
            scale = g.abs().max().item()
            assert (m2[name] - g * g).abs().max().item() <= 1e-4 * scale**2 + 1e-12, name
    assert worst < rel_tol, worst
    if not math.isinf(snr_db):
        assert worst > 1e-3  # the noise really changes the gradient: the rule is approximate


def test_clone_width_recipe_stage_carries_moments(tmp_path, monkeypatch):
    stages = [
        {"name": "s1", "tokens": 3 * STEP_TOKENS},
        {
            "name": "s2",
            "tokens": 3 * STEP_TOKENS,
            "grow": {"op": "clone-width", "factor": 2},
            "optimizer_state": "carry",
        },
    ]
    raw = _raw(stages, precision="fp32")
    _train(raw, tmp_path / "run", monkeypatch)
    out = tmp_path / "run"
    grow = GrowConfig(op="clone-width", params={"factor": 2})
    config, start, _ = _grown_start(out, "s1", grow, raw["seed"] + 1)
    end_config, end = _stage(out, "s2")
    assert end_config.hidden_size == config.hidden_size == 2 * raw["model"]["config"]["hidden_size"]
    assert set(end) == set(start)
    assert [n for n in end if torch.equal(end[n], start[n])] == []  # every tensor trained
    # the stage started from a model with the first stage's function
    from transformers import AutoModelForCausalLM

    s1 = AutoModelForCausalLM.from_pretrained(out / "s1", dtype=torch.float32).eval()
    s2 = AutoModelForCausalLM.from_config(config).float().eval()
    s2.load_state_dict(start, strict=False)
    ids = torch.randint(3, 300, (2, 16), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        diff = (s1(input_ids=ids).logits - s2(input_ids=ids).logits).abs().max().item()
    assert diff < TOL


def test_ops_lists_clone_width_with_its_paper(capsys):
    from growlm.cli import main

    assert main(["ops"]) == 0
    out = capsys.readouterr().out
    line = next(i for i, s in enumerate(out.splitlines()) if s.strip().startswith("clone-width"))
    assert "hypercloning" in out.splitlines()[line]
    assert "Samragh et al. 2024" in out.splitlines()[line + 1]
    assert "2409.12903" in out.splitlines()[line + 1]

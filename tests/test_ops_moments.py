"""AdamW moments through every operator (``optimizer_state: carry``).

Hand-computed cases: moments of all ones go through each operator and come out as the rules in
growlm/ops/growth_plan.py say (copied, zero for new, 1/c^p for the c copies of a split unit's own
weights, 1/s^p for a weight rescaled by s). And the reason for those rules: for the exactly
function-preserving Net2Net split, the carried first moment of a gradient equals the grown
model's gradient, and the second moment its square."""

from __future__ import annotations

import pytest
import torch
from tiny_models import make_model

from growlm.ops.in_memory import grow_tensors

W = "model.layers.{}.{}"


def _ones(model) -> dict[str, torch.Tensor]:
    return {n: torch.ones_like(p) for n, p in model.named_parameters()}


def _grow(model, op, params, key, moments=None):
    moments = moments if moments is not None else _ones(model)
    _, out, report = grow_tensors(model.config, moments, op, params, fill=key)
    return out, report


DEPTH_COPY = [
    ("stack", {"factor": 2}),
    ("interleave", {"factor": 2}),
    ("layers", {"layers": [0, 1, 2, 1, 2]}),
    ("solar", {"drop": 1}),
    ("top", {"block": 2, "copies": 1}),
    ("midas", {"block": 1}),
]


@pytest.mark.parametrize("op,params", DEPTH_COPY)
@pytest.mark.parametrize("key", ["exp_avg", "exp_avg_sq"])
def test_copied_layers_copy_their_moments(op, params, key):
    model = make_model("llama")
    src = {n: torch.randn_like(p) for n, p in model.named_parameters()}
    out, report = _grow(model, op, params, key, src)
    for entry in report["layer_map"]:
        for suffix in ("self_attn.q_proj.weight", "mlp.down_proj.weight", "input_layernorm.weight"):
            got = out[W.format(entry["out"], suffix)]
            assert torch.equal(got, src[W.format(entry["src"], suffix)])
    assert torch.equal(out["model.embed_tokens.weight"], src["model.embed_tokens.weight"])


@pytest.mark.parametrize("op", ["zero-depth", "random-depth"])
def test_new_blocks_start_from_zero_moments(op):
    model = make_model("llama")
    out, report = _grow(model, op, {"num_layers": 5}, "exp_avg")
    new = {e["out"] for e in report["layer_map"] if e["kind"] != "copy"}
    assert len(new) == 2
    for name, tensor in out.items():
        layer = name.split(".")[2] if name.startswith("model.layers.") else None
        expected = 0.0 if layer is not None and int(layer) in new else 1.0
        assert torch.all(tensor == expected), name


@pytest.mark.parametrize("op", ["zero-width", "random-width"])
@pytest.mark.parametrize("key,power", [("exp_avg", 1), ("exp_avg_sq", 2)])
def test_new_units_start_from_zero_moments(op, key, power):
    model = make_model("llama")  # hidden 32, ffn 48, 4 heads / 2 kv, head_dim 8
    out, _ = _grow(model, op, {"hidden_size": 64, "intermediate_size": 96}, key)
    up = out[W.format(0, "mlp.up_proj.weight")]  # [ffn 96, hidden 64]
    assert torch.all(up[:48, :32] == 1) and torch.all(up[48:] == 0) and torch.all(up[:, 32:] == 0)
    down = out[W.format(0, "mlp.down_proj.weight")]  # [hidden 64, ffn 96]
    assert torch.all(down[:32, :48] == 1) and torch.all(down[32:] == 0)
    q = out[W.format(0, "self_attn.q_proj.weight")]  # head_dim is set: heads stay 4 x 8
    assert q.shape == (32, 64) and torch.all(q[:, :32] == 1) and torch.all(q[:, 32:] == 0)
    norm = out[W.format(0, "input_layernorm.weight")]
    # zero-width keeps the function by scaling old norm weights by s = sqrt(32/64): the
    # gradient of a weight scaled by s is 1/s of the old one, so the moment is (1/s)^p
    old = (64 / 32) ** (power / 2) if op == "zero-width" else 1.0
    assert torch.allclose(norm[:32], torch.full((32,), old)) and torch.all(norm[32:] == 0)


@pytest.mark.parametrize("key,power", [("exp_avg", 1), ("exp_avg_sq", 2)])
def test_split_units_hand_computed(key, power):
    model = make_model("llama")
    out, _ = _grow(model, "direct-width", {"hidden_size": 64, "intermediate_size": 96}, key)
    # down_proj reads ffn units (split x2: readers were halved, gradient unchanged -> copied)
    # and writes hidden units (split x2: each copy gets half the gradient -> 1/2^p)
    down = out[W.format(0, "mlp.down_proj.weight")]
    assert torch.allclose(down, torch.full_like(down, 0.5**power))
    up = out[W.format(0, "mlp.up_proj.weight")]  # writes ffn (1/2^p), reads hidden (copied)
    assert torch.allclose(up, torch.full_like(up, 0.5**power))
    norm = out[W.format(0, "post_attention_layernorm.weight")]  # scales split hidden units
    assert torch.allclose(norm, torch.full_like(norm, 0.5**power))
    head = out["lm_head.weight"]  # reads hidden only: copied
    assert torch.all(head == 1)


def _grads(model, ids):
    model.zero_grad()
    model(input_ids=ids, labels=ids).loss.backward()
    return {n: p.grad.detach().clone() for n, p in model.named_parameters()}


@pytest.mark.parametrize(
    "params",
    [
        {"hidden_size": 64},
        {"intermediate_size": 96},
        {"hidden_size": 64, "intermediate_size": 96, "num_heads": 8, "num_kv_heads": 4},
    ],
)
def test_carried_moments_are_the_grown_models_gradient_moments(params):
    """Net2Net x2 preserves the function exactly, so moments built from the small model's
    gradient g must equal those built from the grown model's gradient g': exp_avg ~ g,
    exp_avg_sq ~ g^2 (one AdamW step from zero, up to the (1 - beta) factors)."""
    torch.manual_seed(0)
    small = make_model("llama").float()
    config, weights, _ = grow_tensors(
        small.config, dict(small.state_dict()), "direct-width", params
    )
    from transformers import AutoModelForCausalLM

    big = AutoModelForCausalLM.from_config(config).float()
    big.load_state_dict(weights)
    ids = torch.randint(3, 128, (2, 16), generator=torch.Generator().manual_seed(0))
    g_small, g_big = _grads(small, ids), _grads(big, ids)
    m1, _ = _grow(small, "direct-width", params, "exp_avg", g_small)
    m2, _ = _grow(
        small, "direct-width", params, "exp_avg_sq", {n: g * g for n, g in g_small.items()}
    )
    for name, g in g_big.items():
        scale = g.abs().max().item()
        assert (m1[name] - g).abs().max().item() <= 1e-4 * scale + 1e-7, name
        assert (m2[name] - g * g).abs().max().item() <= 1e-4 * scale**2 + 1e-12, name


def test_learned_operators_carry_moments_through_their_step0_map():
    """G_learn starts as stack (depth) and [I; small random] (width): moments follow that map
    (copied for stacked layers and old units, zero for new units)."""
    model = make_model("llama")
    src = {n: torch.randn_like(p) for n, p in model.named_parameters()}
    out, _ = _grow(model, "learn-depth", {"factor": 2, "steps": 5}, "exp_avg", src)
    name = "mlp.down_proj.weight"
    assert torch.equal(out[W.format(4, name)], src[W.format(1, name)])  # layer 4 <- layer 1
    out, _ = _grow(model, "learn-width", {"hidden_size": 64, "steps": 5}, "exp_avg_sq")
    up = out[W.format(0, "mlp.up_proj.weight")]
    assert torch.all(up[:, :32] == 1) and torch.all(up[:, 32:] == 0)


def test_step_counts_restart_only_without_history():
    """grow_moments: tensors with carried history keep the step count (bias correction done);
    new blocks and tensors grown only from stateless (MSLT-frozen) parameters restart at 0."""
    from growlm.train.growth import grow_moments
    from growlm.train.recipe import GrowConfig

    model = make_model("llama")  # 3 layers
    frozen = "model.layers.0.mlp.up_proj.weight"
    state = {
        n: {
            "step": torch.tensor(9.0),
            "exp_avg": torch.ones_like(p),
            "exp_avg_sq": torch.ones_like(p),
        }
        for n, p in model.named_parameters()
        if n != frozen
    }
    grow = GrowConfig(op="random-depth", params={"num_layers": 4, "placement": "append"})
    out = grow_moments(model.config, state, grow, dict(model.state_dict()))
    assert out[W.format(1, "mlp.up_proj.weight")]["step"].item() == 9.0
    assert out[frozen]["step"].item() == 0.0 and not out[frozen]["exp_avg"].any()
    assert out[W.format(3, "mlp.up_proj.weight")]["step"].item() == 0.0  # the new block

"""upcycle (dense -> MoE): the written checkpoint has the hub layout of the target family, loads
with AutoModelForCausalLM, and keeps the dense model's logits when the operator says it does.

Tolerances (max |logit diff| against the dense model on the same tokens):
- float32: 1e-5 (measured <= 1.2e-7 on the tiny models: the routed weights sum to 1 up to
  rounding; 0.0 on SmolLM2-135M, see bench/results/upcycle_smollm2_check.json);
- bfloat16 (weights written in bfloat16, both models run in bfloat16): 1e-2, about one bf16 ulp
  at the logits' magnitude (~0.5); measured 0.0 for llama, qwen2 and qwen3 (a zero router gives
  weights of exactly 1/2, and halving is exact).

The SmolLM2-135M -> 4 experts top-2 --check takes ~20-50 s here, over the 30 s a unit test may
take, so it lives in bench/results/upcycle_smollm2_check.json (command and output).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from tiny_models import make_model, save_model

from growlm.cli import main
from growlm.grow import GrowOptions, grow
from growlm.ops.in_memory import grow_tensors

FP32_TOL = 1e-5
BF16_TOL = 1e-2
TARGETS = {
    "llama": "MixtralForCausalLM",
    "llama-tied": "MixtralForCausalLM",
    "mistral": "MixtralForCausalLM",
    "qwen2": "Qwen2MoeForCausalLM",
    "qwen3": "Qwen3MoeForCausalLM",
}
IDS = torch.randint(0, 128, (2, 24), generator=torch.Generator().manual_seed(1))


def _logits(path: Path, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(str(path), dtype=dtype).eval()
    with torch.no_grad():
        return model(input_ids=IDS).logits.float()


def _tensors(path: Path) -> dict[str, torch.Tensor]:
    with safe_open(str(path / "model.safetensors"), "pt") as f:
        return {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118


@pytest.mark.parametrize("family", sorted(TARGETS))
@pytest.mark.parametrize("router", ["zero", "random"])
def test_upcycled_logits_equal_the_dense_model(tmp_path, family, router):
    src = save_model(family, tmp_path / "src")
    out = tmp_path / "moe"
    report = grow(src, out, "upcycle", {"experts": 4, "top_k": 2, "router_init": router}).to_json()
    assert report["function_preserving"] is True
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["architectures"] == [TARGETS[family]]
    diff = (_logits(out) - _logits(src)).abs().max().item()
    assert diff < FP32_TOL, diff
    w = _tensors(out)
    dense = _tensors(src)
    if TARGETS[family] == "MixtralForCausalLM":
        experts = "model.layers.1.block_sparse_moe.experts.{}.{}.weight"
        names = {"gate": "w1", "up": "w3", "down": "w2"}
        router_name = "model.layers.1.block_sparse_moe.gate.weight"
        scale = 1.0
    else:
        experts = "model.layers.1.mlp.experts.{}.{}_proj.weight"
        names = {"gate": "gate", "up": "up", "down": "down"}
        router_name = "model.layers.1.mlp.gate.weight"
        scale = 0.5 if family == "qwen2" else 1.0
        assert cfg["norm_topk_prob"] is True
    assert not any(".mlp.gate_proj" in k and "shared" not in k for k in w)
    for e in range(4):
        for role, short in names.items():
            want = dense[f"model.layers.1.mlp.{role}_proj.weight"]
            want = want * scale if role == "down" else want
            assert torch.equal(w[experts.format(e, short)], want), (e, role)
    assert w[router_name].shape == (4, 32)
    assert bool((w[router_name] == 0).all()) == (router == "zero")
    if family == "qwen2":
        shared = "model.layers.1.mlp.shared_expert.down_proj.weight"
        assert torch.equal(w[shared], dense["model.layers.1.mlp.down_proj.weight"])
        assert torch.equal(w["model.layers.1.mlp.shared_expert_gate.weight"], torch.zeros(1, 32))
        assert cfg["shared_expert_intermediate_size"] == 48


def test_bfloat16_output_within_tolerance(tmp_path):
    src = save_model("llama", tmp_path / "src")
    grow(
        src, tmp_path / "moe", "upcycle", {"experts": 4, "top_k": 2}, GrowOptions(dtype="bfloat16")
    )
    dense = _logits(src, torch.bfloat16)
    moe = _logits(tmp_path / "moe", torch.bfloat16)
    assert (moe - dense).abs().max().item() < BF16_TOL


def test_drop_upcycling_reinitialises_a_different_subset_per_expert(tmp_path):
    src = save_model("llama", tmp_path / "src")
    out = tmp_path / "moe"
    report = grow(
        src, out, "upcycle", {"experts": 4, "top_k": 2, "drop_ratio": 0.25}, GrowOptions(check=True)
    ).to_json()
    assert report["function_preserving"] is False
    assert report["max_abs_logit_diff"] > 1e-3  # reported, not hidden
    w, dense = _tensors(out), _tensors(src)
    gate = dense["model.layers.0.mlp.gate_proj.weight"]  # [48, 32]
    down = dense["model.layers.0.mlp.down_proj.weight"]  # [32, 48]
    changed = []
    for e in range(4):
        g = w[f"model.layers.0.block_sparse_moe.experts.{e}.w1.weight"]
        d = w[f"model.layers.0.block_sparse_moe.experts.{e}.w2.weight"]
        rows = (g != gate).any(dim=1)
        assert int(rows.sum()) == 12  # 25% of 48 units
        assert torch.equal((d != down).any(dim=0), rows)  # the same units in down
        changed.append(rows)
    assert len({tuple(r.tolist()) for r in changed}) == 4
    new = torch.cat(
        [w[f"model.layers.0.block_sparse_moe.experts.{e}.w1.weight"][changed[e]] for e in range(4)]
    )
    assert abs(new.std().item() - gate.std().item()) < 0.3 * gate.std().item()


def test_granularity_splits_the_ffn_and_check_reports_the_deviation(tmp_path):
    src = save_model("qwen3", tmp_path / "src")
    out = tmp_path / "moe"
    report = grow(
        src, out, "upcycle", {"experts": 2, "top_k": 1, "granularity": 3}, GrowOptions(check=True)
    ).to_json()
    assert report["function_preserving"] is False
    assert "max_abs_logit_diff" in report
    cfg = json.loads((out / "config.json").read_text())
    assert (cfg["num_experts"], cfg["num_experts_per_tok"], cfg["moe_intermediate_size"]) == (
        6,
        3,
        16,
    )
    w, dense = _tensors(out), _tensors(src)
    up = dense["model.layers.2.mlp.up_proj.weight"]
    down = dense["model.layers.2.mlp.down_proj.weight"]
    for e in range(6):
        g = e % 3
        assert torch.equal(
            w[f"model.layers.2.mlp.experts.{e}.up_proj.weight"], up[16 * g : 16 * g + 16]
        )
        assert torch.allclose(
            w[f"model.layers.2.mlp.experts.{e}.down_proj.weight"], 3 * down[:, 16 * g : 16 * g + 16]
        )


def test_hidden_router_from_text(tmp_path):
    src = save_model("mistral", tmp_path / "src")
    text = tmp_path / "route.txt"
    gen = torch.Generator().manual_seed(0)
    text.write_text(" ".join(str(int(x)) for x in torch.randint(0, 9, (400,), generator=gen)))
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {str(i): i + 3 for i in range(10)} | {"<unk>": 0, "<s>": 1, "</s>": 2}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="</s>").save_pretrained(str(src))
    out = tmp_path / "moe"
    params = {"experts": 4, "top_k": 2, "router_init": "hidden"}
    report = grow(src, out, "upcycle", params, GrowOptions(router_data=text)).to_json()
    assert report["function_preserving"] is True  # identical experts, renormalised router
    r = _tensors(out)["model.layers.0.block_sparse_moe.gate.weight"]
    assert torch.allclose(r.norm(dim=1), torch.ones(4), atol=1e-5)
    assert torch.linalg.matrix_rank(r) >= 2
    assert (_logits(out) - _logits(src)).abs().max().item() < FP32_TOL


def test_dry_run_plan_and_ops_listing(tmp_path, capsys):
    src = save_model("qwen2", tmp_path / "src")
    params = {"experts": 2, "top_k": 1, "router_init": "zero"}
    report = grow(src, None, "upcycle", params, GrowOptions(dry_run=True)).to_json()
    plan = "\n".join(report["plan"])
    assert (
        "model.layers.0.mlp.experts.1.down_proj.weight [32, 48] <- "
        "model.layers.0.mlp.down_proj.weight: scale[0.5" in plan
    )
    assert "model.layers.0.mlp.gate.weight [2, 32] <- (new): init[zeros]" in plan
    assert not (tmp_path / "moe").exists()
    assert main(["ops"]) == 0
    listing = capsys.readouterr().out
    assert "upcycle" in listing
    assert "llama, mistral -> mixtral; qwen2 -> qwen2_moe; qwen3 -> qwen3_moe" in listing


def test_moments_follow_the_weights_and_routers_start_at_zero():
    model = make_model("qwen2")
    moments = {n: torch.randn_like(p) for n, p in model.named_parameters()}
    params = {"experts": 3, "top_k": 2, "drop_ratio": 0.5}
    _, out, _ = grow_tensors(model.config, moments, "upcycle", params, fill="exp_avg")
    _, w, _ = grow_tensors(model.config, dict(model.named_parameters()), "upcycle", params)
    layer = "model.layers.1.mlp."
    gate = moments[layer + "gate_proj.weight"]
    down = moments[layer + "down_proj.weight"]
    for e in range(3):
        m = out[f"{layer}experts.{e}.gate_proj.weight"]
        dropped = (
            w[f"{layer}experts.{e}.gate_proj.weight"]
            != model.state_dict()[layer + "gate_proj.weight"]
        ).any(dim=1)
        assert int(dropped.sum()) == 24
        assert torch.equal(m[~dropped], gate[~dropped])  # copied where the weight was copied
        assert bool((m[dropped] == 0).all())  # re-initialised units: no history
        md = out[f"{layer}experts.{e}.down_proj.weight"]
        assert torch.equal(md[:, ~dropped], down[:, ~dropped])  # output scale: moments as is
    assert torch.equal(
        out[layer + "shared_expert.up_proj.weight"], moments[layer + "up_proj.weight"]
    )
    assert bool((out[layer + "gate.weight"] == 0).all())
    assert bool((out[layer + "shared_expert_gate.weight"] == 0).all())
    assert torch.equal(
        out["model.layers.0.self_attn.q_proj.weight"],
        moments["model.layers.0.self_attn.q_proj.weight"],
    )


def test_trainer_growth_fuses_experts_for_weights_and_moments():
    """In memory the experts are fused ([E, 2I, H], [E, H, I]); moments land where weights do."""
    from transformers import AutoModelForCausalLM

    from growlm.train.growth import grow_moments, grow_weights
    from growlm.train.recipe import GrowConfig

    model = make_model("llama")
    weights = dict(model.state_dict())
    step = GrowConfig(op="upcycle", params={"experts": 3, "top_k": 2})
    state = {
        n: {"step": torch.tensor(5.0), "exp_avg": torch.randn_like(w), "exp_avg_sq": w.pow(2)}
        for n, w in weights.items()
    }
    conf, new, _ = grow_weights(model.config, weights, step)
    carried = grow_moments(model.config, state, step, weights)
    moe = AutoModelForCausalLM.from_config(conf)
    shapes = {n: p.shape for n, p in moe.named_parameters()}
    assert {n: w.shape for n, w in new.items() if n in shapes} == shapes
    assert set(carried) == set(shapes)
    moe.load_state_dict(new, strict=True)
    ids = IDS[:, :8]
    with torch.no_grad():
        diff = (moe(input_ids=ids).logits - model(input_ids=ids).logits).abs().max().item()
    assert diff < FP32_TOL
    lp = "model.layers.2."
    gate_up = carried[lp + "mlp.experts.gate_up_proj"]["exp_avg"]  # [3, 96, 32]
    for e in range(3):
        assert torch.equal(gate_up[e, :48], state[lp + "mlp.gate_proj.weight"]["exp_avg"])
        assert torch.equal(gate_up[e, 48:], state[lp + "mlp.up_proj.weight"]["exp_avg"])
    down_sq = carried[lp + "mlp.experts.down_proj"]["exp_avg_sq"]
    assert torch.equal(down_sq[1], state[lp + "mlp.down_proj.weight"]["exp_avg_sq"])
    router = carried[lp + "mlp.gate.weight"]
    assert not router["exp_avg"].any() and not router["exp_avg_sq"].any()
    assert float(router["step"]) == 0.0  # no history: bias correction restarts
    assert float(carried[lp + "mlp.experts.down_proj"]["step"]) == 5.0

"""TokenFormer: the Pattention layer against its formula, the model through transformers' Auto
classes (safetensors + config.json, no remote code), every operator on it, and ``param-tokens``:
new tokens add exactly nothing, the one change is the score scale sqrt(P) -> sqrt(P + N)."""

from __future__ import annotations

import copy
import json
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
import yaml
from safetensors.torch import load_file
from tiny_models import make_model, save_model

import growlm
from growlm.grow import GrowOptions
from growlm.models.tokenformer import Pattention
from growlm.ops.in_memory import grow_tensors

TOL = 1e-4  # max |logit diff| in float32 for function-preserving operators


@pytest.fixture(scope="module")
def src(tmp_path_factory) -> Path:
    return save_model("tokenformer", tmp_path_factory.mktemp("tf") / "src")


def test_pattention_matches_its_formula():
    """Official l2_norm_gelu score: out_i = sum_j GeLU(A_ij sqrt(P) / ||A_i||_2) V_j, A = x K^T."""
    torch.manual_seed(0)
    layer = Pattention(6, 5, 7).double()
    with torch.no_grad():
        for p in layer.parameters():
            p.normal_()
    x = torch.randn(2, 3, 6, dtype=torch.float64)
    k, v = layer.key_param_tokens, layer.value_param_tokens
    want = torch.zeros(2, 3, 5, dtype=torch.float64)
    for b in range(2):
        for i in range(3):
            a = torch.stack([x[b, i] @ k[j] for j in range(7)])
            s = F.gelu(a * math.sqrt(7) / a.pow(2).sum().sqrt())
            want[b, i] = sum(s[j] * v[j] for j in range(7))
    torch.testing.assert_close(layer(x), want, rtol=1e-12, atol=1e-12)


def test_saved_tokenformer_loads_with_auto_classes(src):
    from transformers import AutoConfig, AutoModelForCausalLM

    assert (src / "model.safetensors").exists()
    assert json.loads((src / "config.json").read_text())["model_type"] == "tokenformer"
    assert AutoConfig.from_pretrained(src).qkv_slot_num == 24
    model = AutoModelForCausalLM.from_pretrained(src, trust_remote_code=False).eval()
    ids = torch.randint(3, 128, (2, 12), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        got = model(input_ids=ids).logits
        want = make_model("tokenformer")(input_ids=ids).logits
    assert torch.equal(got, want)
    # a padding mask leaves the unpadded rows alone
    mask = torch.ones_like(ids)
    mask[1, :3] = 0
    with torch.no_grad():
        masked = model(input_ids=ids, attention_mask=mask).logits
    assert torch.equal(masked[0], got[0]) and not torch.allclose(masked[1], got[1])


OPS = [
    ("stack", {"factor": 2}),
    ("zero-depth", {"factor": 2}),
    ("random-depth", {"num_layers": 5}),
    ("direct-width", {"hidden_size": 64}),
    ("zero-width", {"hidden_size": 48}),
    ("random-width", {"hidden_size": 64}),
    ("clone-width", {"factor": 2}),
    ("param-tokens", {"new_tokens": 8}),
    ("stack+param-tokens", {"factor": 2, "new_tokens": 4}),
]


@pytest.mark.parametrize(("op", "params"), OPS, ids=lambda x: str(x))
def test_every_operator_on_tokenformer(op, params, src, tmp_path):
    report = growlm.grow(src, tmp_path / "out", op, params, GrowOptions(check=True)).to_json()
    if report["function_preserving"]:
        assert report["max_abs_logit_diff"] < TOL, report
    else:
        assert report["max_abs_logit_diff"] > TOL, report


def _with_score_scale(model, extra: int):
    """The source model with every Pattention's sqrt(P) replaced by sqrt(P + extra)."""

    def forward(self, x):
        k = self.key_param_tokens
        a = x @ k.T
        n = a * math.sqrt(k.shape[0] + extra) / a.norm(p=2, dim=-1, keepdim=True)
        return F.gelu(n) @ self.value_param_tokens

    for m in model.modules():
        if isinstance(m, Pattention):
            m.forward = forward.__get__(m)
    return model


def test_param_tokens_adds_nothing_but_the_score_scale(src, tmp_path):
    n = 8
    report = growlm.grow(
        src, tmp_path / "out", "param-tokens", {"new_tokens": n}, GrowOptions(check=True)
    ).to_json()
    cfg = json.loads((tmp_path / "out" / "config.json").read_text())
    assert (cfg["qkv_slot_num"], cfg["proj_slot_num"], cfg["ffn_slot_num"]) == (32, 24, 72)
    a, b = (
        load_file(str(src / "model.safetensors")),
        load_file(str(tmp_path / "out/model.safetensors")),
    )
    name = "model.layers.1.mlp.{}_param_tokens"
    assert torch.equal(b[name.format("key")][:64], a[name.format("key")])
    assert not b[name.format("key")][64:].any()  # new key tokens: zero scores
    assert torch.equal(b[name.format("value")][:64], a[name.format("value")])
    assert b[name.format("value")][64:].abs().min() > 0  # random values (a zero one never learns)
    # exactly the source with sqrt(P + N) in every score: the new tokens contribute nothing ...
    from transformers import AutoModelForCausalLM

    grown = AutoModelForCausalLM.from_pretrained(tmp_path / "out").eval()
    scaled = _with_score_scale(make_model("tokenformer"), n)
    ids = torch.randint(3, 128, (2, 16), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(
            grown(input_ids=ids).logits, scaled(input_ids=ids).logits, rtol=0, atol=1e-5
        )
    # ... and that scale is the whole deviation --check measures (0.106 max logit on this model)
    assert 1e-2 < report["max_abs_logit_diff"] < 0.5
    assert abs(report["loss_after"] - report["loss_before"]) < 0.05


def test_param_tokens_moments_copied_old_zero_new():
    model = make_model("tokenformer")
    ones = {k: torch.ones_like(v) for k, v in model.state_dict().items()}
    for key in ("exp_avg", "exp_avg_sq"):
        _, out, _ = grow_tensors(model.config, ones, "param-tokens", {"new_tokens": 3}, fill=key)
        k = out["model.layers.0.attention.query.key_param_tokens"]  # [24 + 3, 32]
        v = out["model.layers.0.attention.query.value_param_tokens"]
        assert k.shape == (27, 32) and bool((k[:24] == 1).all()) and not k[24:].any()
        assert bool((v[:24] == 1).all()) and not v[24:].any()
        assert bool((out["model.layers.0.input_layernorm.weight"] == 1).all())


def test_tokenformer_trains_and_grows_in_a_recipe(tmp_path, monkeypatch):
    from growlm.train.loop import train
    from growlm.train.recipe import recipe_from_dict

    recipes = Path(__file__).parents[1] / "recipes"
    raw = yaml.safe_load((recipes / "tiny.yaml").read_text())
    raw["model"] = {
        "type": "tokenformer",
        "config": {"hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 4,
                   "qkv_slot_num": 16, "proj_slot_num": 16, "ffn_slot_num": 32,
                   "max_position_embeddings": 256},
    }  # fmt: skip
    raw["stages"] = [
        {"name": "s1", "tokens": 3 * 512},
        {"name": "s2", "tokens": 3 * 512, "grow": {"op": "param-tokens", "new_tokens": 8},
         "optimizer_state": "carry"},
    ]  # fmt: skip
    raw["run"].update({"eval_every": 0, "checkpoint_every": 0, "precision": "fp32"})
    monkeypatch.setenv("GROWLM_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "run"
    train(recipe_from_dict(copy.deepcopy(raw), [], base_dir=recipes), out)
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["stage"] for r in rows if "loss" in r] == ["s1"] * 3 + ["s2"] * 3
    assert all(math.isfinite(r["loss"]) for r in rows if "loss" in r)
    s2 = json.loads((out / "s2" / "config.json").read_text())
    assert (s2["model_type"], s2["qkv_slot_num"], s2["ffn_slot_num"]) == ("tokenformer", 24, 40)
    w = load_file(str(out / "s2" / "model.safetensors"))
    assert w["model.layers.0.mlp.key_param_tokens"][32:].any()  # the new keys were trained


def _step(model, ids, bf16: bool):
    """One training step's loss and gradients (by parameter name)."""
    model.zero_grad(set_to_none=True)
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        loss = model(input_ids=ids, labels=ids).loss
    loss.backward()
    grads = {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.grad is not None}
    return loss.detach(), grads


def test_tokenformer_trains_under_bf16_autocast():
    """Every parameter gets a finite, nonzero gradient; loss within 1e-3 and each gradient
    within 10% (relative L2) of fp32 (measured: 4e-5 and 3%)."""
    model = make_model("tokenformer").train()
    ids = torch.randint(3, 128, (2, 32), generator=torch.Generator().manual_seed(0))
    loss32, grads32 = _step(model, ids, bf16=False)
    loss16, grads16 = _step(model, ids, bf16=True)
    names = [n for n, _ in model.named_parameters()]
    assert sorted(grads16) == sorted(names) and len(names) == 46
    assert torch.isfinite(loss16) and abs(loss16.item() - loss32.item()) < 1e-3
    for name, g in grads16.items():
        assert torch.isfinite(g).all() and g.abs().max() > 0, name
        assert (g - grads32[name]).norm() <= 0.1 * grads32[name].norm(), name


def test_compiled_tokenformer_step_matches_eager():
    """The trainer's per-block torch.compile (run.compile): one fp32 step, loss and every
    gradient within 1e-5 of eager (measured: equal loss, gradients 4e-7). ~25 s on 2 CPUs
    with inductor's cache cold, ~5 s warm."""
    from growlm.train.model import compile_blocks

    eager = make_model("tokenformer").train()
    compiled = copy.deepcopy(eager)
    assert compile_blocks(compiled) == 3  # the 3 TokenFormerLayers
    ids = torch.randint(3, 128, (2, 32), generator=torch.Generator().manual_seed(0))
    loss_e, grads_e = _step(eager, ids, bf16=False)
    loss_c, grads_c = _step(compiled, ids, bf16=False)
    torch.testing.assert_close(loss_c, loss_e, rtol=0, atol=1e-5)
    assert grads_c.keys() == grads_e.keys()
    for name in grads_e:
        torch.testing.assert_close(grads_c[name], grads_e[name], rtol=0, atol=1e-5)

"""MoE training in ``growlm train``: the router statistics and losses by hand, the export's hub
layout, and an upcycle stage of a recipe end to end (aux loss, z-loss and expert load in the
metrics, FLOPs on active parameters, the export named as ``grow --op upcycle`` names it)."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import torch
import yaml
from tiny_models import make_model, save_model

from growlm.grow import grow
from growlm.io.checkpoint import SourceCheckpoint
from growlm.ops.in_memory import grow_tensors
from growlm.train.checkpoint import export_hf
from growlm.train.distributed import DistContext
from growlm.train.loop import train
from growlm.train.moe import (
    RouterTap,
    active_params,
    hub_layout,
    module_layout,
    moe_spec,
    router_tap,
)
from growlm.train.recipe import recipe_from_dict

RECIPES = Path(__file__).parents[1] / "recipes"
STEP = 8 * 64


def test_router_losses_and_load_by_hand():
    model = make_model("llama")
    conf, _, _ = grow_tensors(model.config, dict(model.state_dict()), "upcycle",
                              {"experts": 2, "top_k": 1})  # fmt: skip
    spec = moe_spec(conf)
    assert spec is not None
    tap = RouterTap(torch.nn.Module(), spec, top_k=1)
    # 4 tokens, 2 experts: three go to expert 0 (p = 0.75, 0.5+, 0.5+), one to expert 1
    logits = torch.tensor([[1.0986, 0.0], [0.1, 0.0], [0.1, 0.0], [0.0, 1.0986]])
    tap.logits = [logits]
    aux, z = tap.losses()
    probs = logits.softmax(-1)
    frac = torch.tensor([0.75, 0.25])
    assert torch.allclose(aux, 2 * (frac * probs.mean(0)).sum())
    assert torch.allclose(z, torch.logsumexp(logits, -1).pow(2).mean())
    # a step of two micro-batches: the second sends every token to expert 1
    tap.tally(aux, z)
    tap.logits = [torch.tensor([[0.0, 1.0]] * 4)]
    aux2, z2 = tap.losses()
    tap.tally(aux2, z2)
    stats = tap.step_stats(DistContext())
    assert stats["expert_load"] == [[0.375, 0.625]]  # 3 of 8 assignments to expert 0
    assert stats["aux_loss"] == pytest.approx(float(aux + aux2) / 2, abs=1e-6)
    assert stats["z_loss"] == pytest.approx(float(z + z2) / 2, abs=1e-6)


def test_router_tap_keeps_training_forwards_only():
    """An evaluation's forward (eval mode, e.g. the validation loss between steps) leaves no
    router logits behind to leak into the next training step's losses and expert load."""
    from transformers import AutoModelForCausalLM

    model = make_model("llama")
    conf, _, _ = grow_tensors(model.config, dict(model.state_dict()), "upcycle",
                              {"experts": 4, "top_k": 2})  # fmt: skip
    moe = AutoModelForCausalLM.from_config(conf)
    tap = router_tap(moe, conf)
    assert tap is not None and len(tap.hooks) == 3
    ids = torch.arange(10).view(2, 5)
    with torch.no_grad():
        moe.eval()
        moe(input_ids=ids)
        assert tap.logits == []
        moe.train()
        moe(input_ids=ids)
    assert [t.shape for t in tap.logits] == [(10, 4)] * 3  # [tokens, E] per layer
    tap.remove()


def test_active_params_count_top_k_experts():
    from transformers import AutoModelForCausalLM

    model = make_model("llama")
    conf, _, _ = grow_tensors(model.config, dict(model.state_dict()), "upcycle",
                              {"experts": 4, "top_k": 1})  # fmt: skip
    moe = AutoModelForCausalLM.from_config(conf)
    # one of four experts active: the dense model plus the routers (3 layers x 4 x 32)
    assert active_params(moe, conf) == sum(p.numel() for p in model.parameters()) + 3 * 4 * 32


def _weights(folder: Path) -> dict[str, torch.Tensor]:
    """Every tensor of a checkpoint folder (single file or sharded with an index)."""
    ckpt = SourceCheckpoint(folder)
    return {name: ckpt.get(name) for name in ckpt.names}


@pytest.mark.parametrize("family", ["llama", "qwen2", "qwen3"])  # mixtral, qwen2_moe, qwen3_moe
def test_export_writes_the_hub_layout_upcycle_writes(tmp_path, family):
    """A stage export of an MoE (experts fused in memory) writes what ``grow --op upcycle``
    writes for the same model: the same tensor names, bitwise the same tensors; transformers
    loads it back to bitwise the same fp32 logits."""
    from transformers import AutoModelForCausalLM

    grown = tmp_path / "grown"
    grow(save_model(family, tmp_path / "src"), grown, "upcycle", {"experts": 4, "top_k": 2})
    model = AutoModelForCausalLM.from_pretrained(str(grown)).eval()
    state = dict(model.state_dict())
    assert "model.layers.1.mlp.experts.gate_up_proj" in state  # fused in memory
    (tmp_path / "tok").mkdir()
    folder = export_hf(tmp_path / "export", model.config, state, tmp_path / "tok")
    want, got = _weights(grown), _weights(folder)
    assert sorted(got) == sorted(want)
    assert [n for n in want if not torch.equal(got[n], want[n])] == []
    ids = torch.randint(0, 128, (2, 16), generator=torch.Generator().manual_seed(0))
    reloaded = AutoModelForCausalLM.from_pretrained(str(folder)).eval()
    with torch.no_grad():
        assert torch.equal(reloaded(input_ids=ids).logits, model(input_ids=ids).logits)


def test_hub_layout_inverts_module_layout_without_copies():
    model = make_model("qwen2")
    conf, hub, _ = grow_tensors(model.config, dict(model.state_dict()), "upcycle",
                                {"experts": 3, "top_k": 2})  # fmt: skip
    fused = module_layout(conf, hub)
    back = hub_layout(conf, fused)
    assert list(back) != list(fused) and sorted(back) == sorted(hub)
    assert [n for n in hub if not torch.equal(back[n], hub[n])] == []
    storage = fused["model.layers.0.mlp.experts.gate_up_proj"].untyped_storage().data_ptr()
    for e in range(3):  # views of the fused tensor: an export holds no second copy
        for role in ("gate", "up"):
            view = back[f"model.layers.0.mlp.experts.{e}.{role}_proj.weight"]
            assert view.untyped_storage().data_ptr() == storage


def test_dense_export_is_the_state_dict(tmp_path):
    model = make_model("llama-tied")
    state = dict(model.state_dict())
    assert hub_layout(model.config, state) is state
    (tmp_path / "tok").mkdir()
    got = _weights(export_hf(tmp_path / "export", model.config, state, tmp_path / "tok"))
    assert sorted(got) == sorted(n for n in state if n != "lm_head.weight")  # tied head dropped
    assert [n for n in got if not torch.equal(got[n], state[n])] == []


def test_recipe_with_an_upcycle_stage(tmp_path, monkeypatch):
    monkeypatch.setenv("GROWLM_CACHE", str(tmp_path / "cache"))
    raw = yaml.safe_load((RECIPES / "stack-upcycle.yaml").read_text())
    for stage in raw["stages"]:
        stage["tokens"] = 3 * STEP
    raw["run"].update({"eval_every": 0, "checkpoint_every": 0})
    raw["stages"][2]["grow"]["params"]["router_init"] = "zero"  # uniform P at the first step
    train(recipe_from_dict(copy.deepcopy(raw), [], base_dir=RECIPES), tmp_path / "run")
    rows = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    steps = [r for r in rows if "step" in r and r.get("loss") is not None]
    moe = [r for r in steps if r["stage"] == "moe"]
    stacked = [r for r in steps if r["stage"] == "stacked"]
    assert len(moe) == 3 and all("aux_loss" not in r for r in stacked)
    # first step, zero router: P_i = 1/E exactly, so E * sum f_i P_i = sum f_i = 1, and the
    # tie-break sends every token to the same k = 2 experts
    assert moe[0]["aux_loss"] == pytest.approx(1.0, abs=1e-6)
    assert all(sorted(layer) == [0.0, 0.0, 0.5, 0.5] for layer in moe[0]["expert_load"])
    for r in moe:
        assert r["z_loss"] > 0
        load = r["expert_load"]
        assert len(load) == 4 and all(len(layer) == 4 for layer in load)  # 4 layers, 4 experts
        assert all(sum(layer) == pytest.approx(1.0, abs=1e-3) for layer in load)
    # FLOPs per token on active parameters: dense 4-layer model + one extra FFN per layer
    # (top-2 of 4 experts, each the dense FFN) + routers
    per_tok_dense = (stacked[1]["flops"] - stacked[0]["flops"]) / STEP
    per_tok_moe = (moe[1]["flops"] - moe[0]["flops"]) / STEP
    ffn, router = 3 * 64 * 176, 4 * 64
    assert per_tok_moe - per_tok_dense == pytest.approx(6 * 4 * (ffn + router))
    from transformers import AutoModelForCausalLM

    exported = AutoModelForCausalLM.from_pretrained(str(tmp_path / "run" / "moe"))
    assert exported.config.model_type == "mixtral"
    # the export is named as growlm grow --op upcycle names the same growth of the stage before
    grown = tmp_path / "grown"
    grow(tmp_path / "run" / "stacked", grown, "upcycle", raw["stages"][2]["grow"]["params"])
    assert sorted(SourceCheckpoint(tmp_path / "run" / "moe").names) == sorted(
        SourceCheckpoint(grown).names
    )

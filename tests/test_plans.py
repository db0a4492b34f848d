"""Plans and layer maps without weights; the in-memory path the trainer uses."""

from __future__ import annotations

import pytest
import torch

import growlm
from growlm.errors import InvalidGrowth
from growlm.grow import GrowOptions
from growlm.ops import depth
from growlm.ops.axes import Shape, head_maps
from growlm.ops.in_memory import grow_tensors
from growlm.ops.planning import plan_tensors
from growlm.ops.registry import get_operator


def srcs(layer_map):
    return [(ls.src, ls.kind) for ls in layer_map]


def test_depth_layer_maps():
    assert [ls.src for ls in depth.stack(3, 2)] == [0, 1, 2, 0, 1, 2]
    assert [ls.src for ls in depth.interleave(3, 2)] == [0, 0, 1, 1, 2, 2]
    assert [ls.src for ls in depth.explicit(4, "0,1,2,1,2,3")] == [0, 1, 2, 1, 2, 3]
    # SOLAR: 32 layers, drop 8 -> 0..23 then 8..31 = 48 layers
    m = depth.solar(32, 8)
    assert len(m) == 48 and [ls.src for ls in m[:24]] == list(range(24))
    assert [ls.src for ls in m[24:]] == list(range(8, 32))


def test_llama_pro_placement_30_to_40():
    m = depth.with_new_blocks(30, "zero", num_layers=40)
    assert len(m) == 40
    new = [j for j, ls in enumerate(m) if ls.kind == "zero"]
    # one identity block after every group of three layers, copying the group's last layer
    assert new == [3 + 4 * k for k in range(10)]
    assert all(m[j].src == m[j - 1].src for j in new)
    appended = depth.with_new_blocks(4, "random", factor=2, placement="append")
    assert (
        srcs(appended) == [(0, "copy"), (1, "copy"), (2, "copy"), (3, "copy")] + [(3, "random")] * 4
    )


def test_paper_names_resolve():
    assert get_operator("G_stack").name == "direct-depth"
    assert get_operator("stack").name == "direct-depth"
    assert get_operator("G_zero").name == "zero-depth"
    assert get_operator("split").name == "direct-width"
    assert get_operator("G_learn").name == "learn-depth"
    with pytest.raises(InvalidGrowth, match="trains its map"):  # growlm.ops.ligo, not a plan
        plan_tensors({"model_type": "llama", "rms_norm_eps": 1e-6}, {}, "learn-depth", {})


def test_gqa_head_maps_keep_groups():
    src = Shape(hidden=32, ffn=64, heads=4, kv_heads=2, head_dim=8)
    new = Shape(hidden=64, ffn=64, heads=8, kv_heads=4, head_dim=8)
    q, kv = head_maps(src, new, copy=True)
    assert kv == [0, 1, 0, 1]
    assert q == [0, 1, 2, 3, 0, 1, 2, 3]
    # every query head sits in a group whose kv head is a copy of its own kv head
    for h, s in enumerate(q):
        assert kv[h // 2] == s // 2
    q0, kv0 = head_maps(src, Shape(64, 64, 6, 3, 8), copy=False)
    assert kv0 == [0, 1, -1] and q0 == [0, 1, 2, 3, -1, -1]


def test_dry_run_touches_no_weights(tiny_dir, tmp_path):
    report = growlm.grow(
        tiny_dir("llama"), tmp_path / "o", "zero-depth", {"factor": 2}, GrowOptions(dry_run=True)
    ).to_json()
    assert not (tmp_path / "o").exists()
    plan = report["plan"]
    assert any("model.layers.1.self_attn.o_proj.weight" in ln and "zero" in ln for ln in plan)
    assert any(
        ln.startswith("model.layers.2.mlp.up_proj.weight") and "<- model.layers.1." in ln
        for ln in plan
    )
    assert report["src_layers"] == 3 and report["out_layers"] == 6


def test_grow_tensors_in_memory_matches_disk(tiny_dir, tmp_path):
    from transformers import AutoModelForCausalLM

    src = AutoModelForCausalLM.from_pretrained(str(tiny_dir("llama-tied")))
    conf, tensors, report = grow_tensors(src.config, src.state_dict(), "zero-depth", {"factor": 2})
    assert report["out_layers"] == 6 and conf.num_hidden_layers == 6
    grown = AutoModelForCausalLM.from_config(conf)
    missing, unexpected = grown.load_state_dict(tensors, strict=False)
    assert unexpected == [] and set(missing) <= {"lm_head.weight"}
    grown.tie_weights()
    ids = torch.arange(20).view(2, 10)
    with torch.no_grad():
        diff = (grown.eval()(ids).logits - src.eval()(ids).logits).abs().max()
    assert diff < 1e-5


def test_tie_defaults_match_transformers():
    """growlm decides tied heads without importing transformers: the defaults must agree."""
    from transformers import AutoConfig

    from growlm.arch import FAMILIES

    for spec in FAMILIES:
        for mt in spec.model_types:
            assert AutoConfig.for_model(mt).tie_word_embeddings == spec.tie_default, mt

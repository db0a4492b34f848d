"""Every operator on a tiny random model of every family, built and reloaded by transformers."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file
from tiny_models import FAMILIES

import growlm
from growlm.arch import spec_for
from growlm.grow import GrowOptions

TOL = 1e-4  # max |logit diff| in float32 for function-preserving operators

DEPTH = [
    ("stack", {"factor": 2}),
    ("interleave", {"factor": 2}),
    ("layers", {"layers": "0,1,2,1,2"}),
    ("solar", {"drop": 1}),
    ("zero-depth", {"factor": 2}),
    ("zero-depth", {"num_layers": 5, "placement": "append"}),
    ("random-depth", {"num_layers": 5}),
]
WIDTH = [
    ("direct-width", {"hidden_size": 64}),
    ("zero-width", {"hidden_size": 48}),
    ("random-width", {"hidden_size": 64}),
    ("zero-width", {"intermediate_size": 200}),
    ("stack+direct-width", {"factor": 2, "hidden_size": 64}),
    ("zero-depth+zero-width", {"factor": 2, "hidden_size": 64}),
]


def _weights(path):
    out = {}
    for f in sorted(path.glob("*.safetensors")):
        out.update(load_file(str(f)))
    return out


def _config(path):
    return json.loads((path / "config.json").read_text())


def _layer_name(family: str, template_name: str, i: int) -> str:
    spec = spec_for(_config_type(family))
    return spec.layer_prefix.replace("{i}", str(i)) + template_name


def _config_type(family: str) -> str:
    return "llama" if family == "llama-tied" else family


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize(("op", "params"), DEPTH + WIDTH, ids=lambda x: str(x))
def test_operator_on_family(family, op, params, tiny_dir, tmp_path):
    src = tiny_dir(family)
    out = tmp_path / "out"
    report = growlm.grow(src, out, op, params, GrowOptions(check=True)).to_json()
    cfg_src, cfg_out = _config(src), _config(out)
    spec = spec_for(cfg_src["model_type"])
    k = spec.keys
    n = cfg_src[k.layers]
    layer_map = report["layer_map"]
    assert cfg_out[k.layers] == report["out_layers"] == len(layer_map)
    if "hidden_size" in params:
        assert cfg_out[k.hidden] == params["hidden_size"]
    if "intermediate_size" in params:
        assert cfg_out[k.ffn] == params["intermediate_size"]
    # the reloaded model (loaded by check) has the planned depth
    assert report["out_layers"] >= n
    if report["function_preserving"]:
        assert report["max_abs_logit_diff"] < TOL, report
        assert abs(report["loss_after"] - report["loss_before"]) < 1e-4
    else:
        assert report["max_abs_logit_diff"] > TOL  # it really changed the function
    if "width" not in op:
        src_w, out_w = _weights(src), _weights(out)
        for j, entry in enumerate(layer_map):
            s = int(str(entry).split(":")[0])
            kind = str(entry).split(":")[1] if ":" in str(entry) else "copy"
            for ts in spec.layer_tensors:
                a = src_w.get(_layer_name(family, ts.name, s))
                b = out_w.get(_layer_name(family, ts.name, j))
                if a is None:
                    continue
                assert b is not None
                if kind == "copy" or (kind == "zero" and not ts.identity_zero):
                    assert torch.equal(a, b), (j, ts.name)
                elif kind == "zero":
                    assert not b.any(), (j, ts.name)
                else:
                    assert a.shape == b.shape


def test_tied_embedding_is_not_duplicated(tiny_dir, tmp_path):
    out = tmp_path / "o"
    growlm.grow(tiny_dir("llama-tied"), out, "direct-width", {"hidden_size": 64})
    names = _weights(out)
    assert "lm_head.weight" not in names
    assert names["model.embed_tokens.weight"].shape == (128, 64)


def test_per_layer_config_lists_follow_layers(tiny_dir, tmp_path):
    src = tiny_dir("qwen2")
    before = _config(src)
    assert before["layer_types"] == ["full_attention", "full_attention", "sliding_attention"]
    out = tmp_path / "o"
    growlm.grow(src, out, "layers", {"layers": "2,0,1,2,2"})
    after = _config(out)
    lt = before["layer_types"]
    assert after["layer_types"] == [lt[2], lt[0], lt[1], lt[2], lt[2]]
    assert after["max_window_layers"] == 2  # source layers 0 and 1 are below the old threshold
    g = tmp_path / "g"
    growlm.grow(tiny_dir("gemma3_text"), g, "interleave", {"factor": 2})
    src_types = _config(tiny_dir("gemma3_text"))["layer_types"]
    assert _config(g)["layer_types"] == [t for t in src_types for _ in range(2)]


def test_growth_json_and_side_files(tiny_dir, tmp_path):
    src = tiny_dir("llama")
    assert (src / "generation_config.json").exists()
    out = tmp_path / "o"
    growlm.grow(src, out, "stack", {"factor": 3}, GrowOptions(dtype="bfloat16"))
    record = json.loads((out / "growth.json").read_text())
    assert record["operator"] == "stack"
    assert record["params"] == {"factor": 3}
    assert [m["src"] for m in record["layer_map"]] == [0, 1, 2] * 3
    assert record["growlm_version"] == growlm.__version__
    assert "generation_config.json" in record["copied_files"]
    w = _weights(out)
    assert all(t.dtype == torch.bfloat16 for t in w.values())
    assert _config(out)["dtype"] == "bfloat16"


def test_sharded_output_has_index(tiny_dir, tmp_path):
    out = tmp_path / "o"
    growlm.grow(tiny_dir("llama"), out, "stack", {"factor": 2}, GrowOptions(shard_size=20_000))
    index = json.loads((out / "model.safetensors.index.json").read_text())
    shards = sorted(set(index["weight_map"].values()))
    assert len(shards) > 2
    assert sorted(p.name for p in out.glob("*.safetensors")) == shards
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(str(out))
    assert model.config.num_hidden_layers == 6


def test_sharded_and_bin_sources(tiny_dir, tmp_path):
    from tiny_models import save_model

    sharded = save_model("llama", tmp_path / "sh", max_shard_size="20KB")
    assert (sharded / "model.safetensors.index.json").exists()
    r1 = growlm.grow(
        sharded, tmp_path / "a", "zero-depth", {"factor": 2}, GrowOptions(check=True)
    ).to_json()
    assert r1["max_abs_logit_diff"] < TOL
    # a .bin checkpoint: read through torch.load(weights_only=True)
    binsrc = tmp_path / "bin"
    binsrc.mkdir()
    src = tiny_dir("llama")
    (binsrc / "config.json").write_text((src / "config.json").read_text())
    torch.save(load_file(str(src / "model.safetensors")), binsrc / "pytorch_model.bin")
    r2 = growlm.grow(binsrc, tmp_path / "b", "stack", {"factor": 2}).to_json()
    assert _weights(tmp_path / "b")["model.layers.3.mlp.up_proj.weight"].equal(
        load_file(str(src / "model.safetensors"))["model.layers.0.mlp.up_proj.weight"]
    )
    assert r2["out_layers"] == 6


def test_gpt2_checkpoint_without_transformer_prefix(tiny_dir, tmp_path):
    """Original GPT-2 hub checkpoints name tensors h.0... without 'transformer.'."""
    from safetensors.torch import save_file

    src = tiny_dir("gpt2")
    alt = tmp_path / "alt"
    alt.mkdir()
    (alt / "config.json").write_text((src / "config.json").read_text())
    w = load_file(str(src / "model.safetensors"))
    save_file(
        {k.removeprefix("transformer."): v for k, v in w.items()},
        str(alt / "model.safetensors"),
        metadata={"format": "pt"},
    )
    r = growlm.grow(
        alt, tmp_path / "o", "zero-depth", {"factor": 2}, GrowOptions(check=True)
    ).to_json()
    assert r["max_abs_logit_diff"] < TOL
    assert "h.5.attn.c_proj.weight" in _weights(tmp_path / "o")

"""``growlm convert tokenformer``: a tiny state dict in the official release's naming (synthetic,
written here with torch.save) converted to a growlm folder gives, in float64, the logits of a
direct re-implementation of the official forward (GPT-NeoX TokenFormer: parameter-free block
LayerNorms, l2_norm_gelu Pattention in its own order of operations, partial rotary from cached
cos/sin, causal softmax attention, sequential residuals, affine final LayerNorm, tied head)."""

from __future__ import annotations

import json
import math
import pickle
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
import yaml

from growlm.cli import main
from growlm.errors import ConversionError, CorruptCheckpoint, UnsupportedArchitecture
from growlm.models.tokenformer_convert import convert, official_to_growlm

H, HEADS, LAYERS, VOCAB, QKV, PROJ, FFN = 32, 4, 2, 96, 12, 8, 20
PCT, BASE, EPS = 0.25, 10000, 1e-5


def official_state(seed: int = 0, tied: bool = True) -> dict[str, torch.Tensor]:
    """Random weights under the names of the released pytorch_model.bin (DeepSpeed pipeline
    module made sequential: embedding 0, layers 2..L+1, final norm L+3, untied head L+4)."""
    g = torch.Generator().manual_seed(seed)

    def rand(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=g, dtype=torch.float64) * 0.5

    state = {"sequential.0.word_embeddings.weight": rand(VOCAB, H)}
    for i in range(LAYERS):
        for part, p in [("query", QKV), ("key", QKV), ("value", QKV), ("proj", PROJ)]:
            state[f"sequential.{2 + i}.attention.{part}.key_param_tokens"] = rand(p, H)
            state[f"sequential.{2 + i}.attention.{part}.value_param_tokens"] = rand(p, H)
        state[f"sequential.{2 + i}.mlp.key_param_tokens"] = rand(FFN, H)
        state[f"sequential.{2 + i}.mlp.value_param_tokens"] = rand(FFN, H)
    state[f"sequential.{LAYERS + 3}.norm.weight"] = 1 + rand(H)
    state[f"sequential.{LAYERS + 3}.norm.bias"] = rand(H)
    if not tied:
        state[f"sequential.{LAYERS + 4}.final_linear.weight"] = rand(VOCAB, H)
    return state


def official_forward(state: dict[str, torch.Tensor], ids: torch.Tensor) -> torch.Tensor:
    """The official model's eval forward, written from its code's formulas ([B, T] -> [B, T, V])."""

    def pattention(x: torch.Tensor, prefix: str) -> torch.Tensor:
        k, v = state[f"{prefix}.key_param_tokens"], state[f"{prefix}.value_param_tokens"]
        w = x @ k.transpose(-2, -1)  # [..., P]
        w = w / torch.norm(w, p=2, dim=-1, keepdim=True) * math.sqrt(w.shape[-1])
        return F.gelu(w) @ v

    b, t = ids.shape
    hd = H // HEADS
    rot = int(hd * PCT)
    inv = 1.0 / (BASE ** (torch.arange(0, rot, 2).float() / rot))
    freqs = torch.einsum("i,j->ij", torch.arange(t).type_as(inv), inv)
    emb = torch.cat((freqs, freqs), dim=-1)  # cos/sin cached in float32 as the official code
    cos, sin = emb.cos().double()[:, None, :], emb.sin().double()[:, None, :]  # [T, 1, rot]

    def rotary(x: torch.Tensor) -> torch.Tensor:  # [B, T, nh, hd]
        r, rest = x[..., :rot], x[..., rot:]
        half = torch.cat((-r[..., rot // 2 :], r[..., : rot // 2]), dim=-1)
        return torch.cat((r * cos + half * sin, rest), dim=-1)

    x = state["sequential.0.word_embeddings.weight"][ids]  # [B, T, H]
    causal = torch.ones(t, t, dtype=torch.bool).tril()
    for i in range(LAYERS):
        pre = f"sequential.{2 + i}"
        h = F.layer_norm(x, (H,), eps=EPS)  # layernorm_nonparam
        q, k, v = (
            pattention(h, f"{pre}.attention.{n}").view(b, t, HEADS, hd)
            for n in ("query", "key", "value")
        )
        q, k = rotary(q).transpose(1, 2), rotary(k).transpose(1, 2)  # [B, nh, T, hd]
        scores = (q @ k.transpose(-1, -2)) / math.sqrt(hd)
        probs = scores.masked_fill(~causal, float("-inf")).softmax(-1)
        ctx = (probs @ v.transpose(1, 2)).transpose(1, 2).reshape(b, t, H)
        x = x + pattention(ctx, f"{pre}.attention.proj")
        x = x + pattention(F.layer_norm(x, (H,), eps=EPS), f"{pre}.mlp")
    weight, bias = (state[f"sequential.{LAYERS + 3}.norm.{n}"] for n in ("weight", "bias"))
    x = F.layer_norm(x, (H,), weight, bias, eps=EPS)
    head = state.get(f"sequential.{LAYERS + 4}.final_linear.weight")
    return x @ (state["sequential.0.word_embeddings.weight"] if head is None else head).T


def _neox_yaml(path: Path, **changes) -> Path:
    """A config like the release's configs/tokenformer/150M_eval.yml, at the tiny sizes."""
    raw = {
        "num_layers": LAYERS, "hidden_size": H, "num_attention_heads": HEADS,
        "qkv_slot_num": QKV, "proj_slot_num": PROJ, "ffn_slot_num": FFN,
        "seq_length": 64, "max_position_embeddings": 64, "pos_emb": "rotary",
        "rotary_pct": PCT, "no_weight_tying": False, "norm": "layernorm_nonparam",
        "final_norm": "layernorm", "gpt_j_residual": False,
        "attention_config": [[["tokenformer"], LAYERS]], "norm_activation_type": "l2_norm_gelu",
    }  # fmt: skip
    raw.update(changes)
    path.write_text(yaml.safe_dump(raw))
    return path


@pytest.mark.parametrize("tied", [True, False])
def test_converted_logits_equal_the_official_forward(tmp_path, tied):
    from transformers import AutoModelForCausalLM

    state = official_state(tied=tied)
    torch.save(state, tmp_path / "pytorch_model.bin")
    neox = _neox_yaml(tmp_path / "c.yml", no_weight_tying=not tied)
    record = convert(tmp_path, tmp_path / "out", neox_config=neox)
    cfg = json.loads((tmp_path / "out" / "config.json").read_text())
    assert cfg["model_type"] == "tokenformer" and cfg["tie_word_embeddings"] is tied
    assert (cfg["qkv_slot_num"], cfg["proj_slot_num"], cfg["ffn_slot_num"]) == (QKV, PROJ, FFN)
    assert record["parameters"] == sum(t.numel() for t in state.values())
    model = AutoModelForCausalLM.from_pretrained(tmp_path / "out", dtype=torch.float64).eval()
    ids = torch.randint(0, VOCAB, (2, 17), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        got = model(input_ids=ids).logits
    want = official_forward(state, ids)
    # float64; the only differences are the order of a few roundings (measured ~1e-15)
    torch.testing.assert_close(got, want, rtol=0, atol=1e-10)
    assert want.abs().max() > 1  # not a degenerate comparison


def test_cli_converts_a_release_without_a_config(tmp_path, capsys):
    """Heads come from the release table when the sizes are a release's; here from --heads."""
    torch.save(official_state(), tmp_path / "pytorch_model.bin")
    out = tmp_path / "out"
    assert main(["convert", "tokenformer", str(tmp_path / "pytorch_model.bin"), str(out),
                 "--heads", str(HEADS)]) == 0  # fmt: skip
    assert "2 layers, hidden 32, 4 heads" in capsys.readouterr().out
    cfg = json.loads((out / "config.json").read_text())
    assert (cfg["rotary_pct"], cfg["rope_theta"], cfg["layer_norm_eps"]) == (0.25, 10000.0, EPS)
    assert main(["convert", "tokenformer", str(tmp_path), str(out), "--heads", "4"]) == 2
    assert "exists" in capsys.readouterr().err
    assert main(["convert", "tokenformer", str(tmp_path), str(out), "--heads", "4", "--force"]) == 0


def test_heads_are_required_off_the_release_sizes():
    with pytest.raises(ConversionError, match="pass --heads N or --neox-config"):
        official_to_growlm(official_state())


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"norm_activation_type": "gelu_l2_norm"}, "norm_activation_type is 'gelu_l2_norm'"),
        ({"norm": "rmsnorm"}, "norm is 'rmsnorm'"),
        ({"gpt_j_residual": True}, "gpt_j_residual is True"),
        ({"hidden_size": 64}, "says hidden_size 64 but the weights have 32"),
        ({"no_weight_tying": True}, "no_weight_tying True but the weights have no output"),
        ({"pos_emb": None}, "pos_emb is None"),
    ],
)
def test_options_growlm_does_not_implement_are_refused(tmp_path, changes, message):
    neox = yaml.safe_load(_neox_yaml(tmp_path / "c.yml", **changes).read_text())
    with pytest.raises((UnsupportedArchitecture, CorruptCheckpoint), match=message):
        official_to_growlm(official_state(), neox=neox)


def test_unevenly_grown_or_renamed_weights_are_refused():
    state = official_state()
    state["sequential.3.mlp.key_param_tokens"] = torch.zeros(FFN + 4, H, dtype=torch.float64)
    state["sequential.3.mlp.value_param_tokens"] = torch.zeros(FFN + 4, H, dtype=torch.float64)
    with pytest.raises(UnsupportedArchitecture, match=r"mlp have parameter-token counts \[20, 24"):
        official_to_growlm(state, heads=HEADS)
    state = official_state()
    state["sequential.2.attention.dense.weight"] = state.pop(
        "sequential.2.attention.proj.key_param_tokens"
    )
    with pytest.raises(CorruptCheckpoint, match=r"missing.*proj\.key_param_tokens.*unexpected"):
        official_to_growlm(state, heads=HEADS)


class _Payload:  # any object that is not a tensor or a plain container
    pass


def test_a_pickle_with_code_is_never_unpickled(tmp_path, capsys):
    path = tmp_path / "pytorch_model.bin"
    with path.open("wb") as f:
        pickle.dump({"sequential.0.word_embeddings.weight": _Payload()}, f, protocol=2)
    assert main(["convert", "tokenformer", str(path), str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "torch.load(weights_only=True)" in err[0]
    assert not (tmp_path / "out").exists()

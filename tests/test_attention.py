"""growlm's CPU attention (flash forward, recomputing backward) against transformers' SDPA:
the same logits and gradients (fp32 to 1e-5; under bf16 autocast no further from the fp32
result than SDPA's own), SDPA's exact result wherever the fast path does not apply (padding,
sliding windows), the fast backward really in use under per-block compile, and a compiled
two-stage run that trains like the eager one and exports a config transformers loads alone."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import torch
from tiny_models import FAMILIES, make_model
from transformers import AutoModelForCausalLM

from growlm.train import attention
from growlm.train.loop import train
from growlm.train.model import compile_blocks
from growlm.train.recipe import load_recipe

TINY = Path(__file__).parents[1] / "recipes" / "tiny.yaml"


def _pair(family: str):
    """The tiny ``family`` model twice, with SDPA and with growlm_cpu, same weights."""
    attention.register()
    base = make_model(family).train()
    models = []
    for impl in ("sdpa", attention.NAME):
        config = copy.deepcopy(base.config)  # from_config writes the choice into its config
        model = AutoModelForCausalLM.from_config(config, attn_implementation=impl)
        model.load_state_dict(base.state_dict())
        models.append(model.train())
    return models


def _run(model, ids, autocast: bool = False, mask=None):
    model.zero_grad(set_to_none=True)
    torch.manual_seed(0)  # GPT-2 trains with attention dropout (SDPA's path): same draws
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
        logits = model(input_ids=ids, attention_mask=mask).logits.float()
    logits.logsumexp(-1).mean().backward()
    grads = {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.grad is not None}
    return logits.detach(), grads


def test_gradcheck_in_double():
    torch.manual_seed(0)
    q, k, v = (torch.randn(2, 3, 7, 4, dtype=torch.float64, requires_grad=True) for _ in range(3))
    assert torch.autograd.gradcheck(lambda a, b, c: attention.causal_attention(a, b, c), (q, k, v))


def test_blocked_backward_matches_sdpa_in_double():
    """Lengths across the block size: one partial block, exact blocks, a ragged last block.
    (1e-6: the flash kernel's log-sum-exp is fp32 even for fp64 inputs.)"""
    for length in (5, attention.BLOCK, 2 * attention.BLOCK + 37):
        torch.manual_seed(length)
        leaves = [torch.randn(2, 2, length, 8, dtype=torch.float64, requires_grad=True)]
        leaves += [torch.randn_like(leaves[0], requires_grad=True) for _ in range(2)]
        grad = torch.randn_like(leaves[0])
        ours = torch.autograd.grad(attention.causal_attention(*leaves), leaves, grad)
        sdpa = torch.nn.functional.scaled_dot_product_attention(*leaves, is_causal=True)
        for a, b in zip(ours, torch.autograd.grad(sdpa, leaves, grad), strict=True):
            torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-5)


def test_matches_the_causal_softmax():
    torch.manual_seed(0)
    q, k, v = (torch.randn(2, 3, 9, 8) for _ in range(3))
    scores = (q @ k.transpose(-1, -2)) / 8**0.5
    scores = scores.masked_fill(torch.ones(9, 9, dtype=torch.bool).triu(1), float("-inf"))
    expected = scores.softmax(-1) @ v
    torch.testing.assert_close(attention.causal_attention(q, k, v), expected, atol=1e-6, rtol=0)


SDPA_FAMILIES = [f for f in FAMILIES if make_model(f).config.model_type != "gemma2"]


# fast-path calls per forward at T = 12 and 24 where not every layer takes it: GPT-2 trains with
# attention dropout (SDPA's path); at T = 24 the sliding-window layers (window 16) get a mask
FAST_CALLS = {"gpt2": (0, 0), "mistral": (3, 0), "gemma3_text": (4, 0), "qwen2": (3, 2)}


@pytest.mark.parametrize("family", SDPA_FAMILIES)
@pytest.mark.parametrize("length", [12, 24])  # below and above the sliding windows (16)
def test_family_parity_fp32(family, length, monkeypatch):
    sdpa, fast = _pair(family)
    ids = torch.randint(3, 128, (2, length), generator=torch.Generator().manual_seed(1))
    calls = []
    kernel = attention._CausalAttention.apply
    monkeypatch.setattr(
        attention._CausalAttention, "apply", lambda *a: calls.append(1) or kernel(*a)
    )
    (la, ga), (lb, gb) = _run(sdpa, ids), _run(fast, ids)
    layers = fast.config.num_hidden_layers
    assert len(calls) == FAST_CALLS.get(family, (layers, layers))[length == 24]
    torch.testing.assert_close(lb, la, atol=1e-5, rtol=0)
    assert ga.keys() == gb.keys()
    for name in ga:
        torch.testing.assert_close(gb[name], ga[name], atol=1e-6, rtol=1e-4, msg=name)


def test_bf16_gradients_as_close_to_fp32_as_sdpa():
    sdpa, fast = _pair("llama")
    ids = torch.randint(3, 128, (4, 64), generator=torch.Generator().manual_seed(2))
    _, exact = _run(sdpa, ids)
    _, ga = _run(sdpa, ids, autocast=True)
    _, gb = _run(fast, ids, autocast=True)

    def error(grads):
        return max(float((grads[n] - exact[n]).norm() / exact[n].norm()) for n in exact)

    assert error(gb) < max(2 * error(ga), 0.01), (error(gb), error(ga))


def test_value_heads_of_another_size_take_sdpa_path():
    """DeepSeek-V3-style attention (value head size != query head size): the flash kernel
    refuses it, SDPA's math path does not; growlm_cpu hands it to SDPA."""
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    module = torch.nn.Module()
    module.is_causal = True
    q, k = torch.randn(2, 4, 9, 16), torch.randn(2, 4, 9, 16)
    v = torch.randn(2, 4, 9, 8)
    with pytest.raises(RuntimeError, match="same head size"):
        attention.causal_attention(q, k, v)
    got, _ = attention.attention_forward(module, q, k, v, None)
    expected, _ = sdpa_attention_forward(module, q, k, v, None)
    assert torch.equal(got, expected)


def test_padding_mask_takes_sdpa_path():
    sdpa, fast = _pair("llama")
    ids = torch.randint(3, 128, (2, 10), generator=torch.Generator().manual_seed(3))
    mask = torch.ones(2, 10, dtype=torch.long)
    mask[1, :4] = 0  # left padding
    (la, ga), (lb, gb) = _run(sdpa, ids, mask=mask), _run(fast, ids, mask=mask)
    assert torch.equal(la, lb)
    assert all(torch.equal(ga[n], gb[n]) for n in ga)


def test_compiled_run_trains_like_eager_and_uses_the_recomputing_backward(tmp_path, monkeypatch):
    """One compiled run serves both checks (each torch.compile costs ~15-30 s on 2 CPUs): it
    trains like the eager run and exports a config transformers loads alone; then its final
    model, rebuilt with growlm_cpu and compiled per block, takes a step on the trainer's shapes
    (bf16 autocast, grad on: dynamo's cache from the run's grown stage usually serves it) that
    runs the flash forward and the recomputing (bmm) backward, not the flash backward."""
    monkeypatch.setenv("GROWLM_CACHE", str(tmp_path / "cache"))
    sets = ["stages.base.tokens=5120", "stages.grown.tokens=5120", "run.eval_every=0"]
    losses = {}
    for compiled in (False, True):
        out = tmp_path / f"compiled-{compiled}"
        train(load_recipe(TINY, [*sets, f"run.compile={str(compiled).lower()}"]), out)
        records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
        losses[compiled] = [r["loss"] for r in records]
    assert len(losses[True]) == len(losses[False]) == 20
    # same data, weights and schedule; bf16 rounding differs between compiled and eager kernels
    assert max(abs(a - b) for a, b in zip(losses[True], losses[False], strict=True)) < 0.02
    assert losses[True][-1] < losses[True][0] - 0.5
    final = tmp_path / "compiled-True" / "final"
    config = json.loads((final / "config.json").read_text())
    assert attention.NAME not in json.dumps(config)
    model = AutoModelForCausalLM.from_pretrained(final)
    assert model.config.num_hidden_layers == 4

    attention.register()
    fast = AutoModelForCausalLM.from_pretrained(final, attn_implementation=attention.NAME).train()
    assert compile_blocks(fast) == 4
    ids = torch.randint(3, 128, (8, 64), generator=torch.Generator().manual_seed(4))
    _run(fast, ids, autocast=True)  # compile (or dynamo's cached graph from the run)
    with torch.profiler.profile() as prof:
        _run(fast, ids, autocast=True)
    ops = {event.key for event in prof.key_averages()}
    assert "aten::_scaled_dot_product_flash_attention_for_cpu" in ops
    assert "aten::_scaled_dot_product_flash_attention_for_cpu_backward" not in ops
    assert "aten::bmm" in ops


def test_dry_runs_leave_the_live_models_attention_alone(tmp_path):
    """A growth stage's dry run and the checkpoint-room check build the model on meta tensors;
    the live model's attention (read from its config at every forward) stays growlm_cpu."""
    from transformers import LlamaConfig

    from growlm.train.checkpoint import require_checkpoint_room
    from growlm.train.growth import check_growth
    from growlm.train.model import build_model
    from growlm.train.recipe import GrowConfig

    cfg = LlamaConfig(
        vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=64,
    )  # fmt: skip
    model = build_model(cfg, "auto", compiled=True, seq_len=32)
    assert model.config is cfg and cfg._attn_implementation == attention.NAME
    grown = check_growth(cfg, GrowConfig(op="stack", params={"factor": 2}), "stages.1.grow")
    assert grown.num_hidden_layers == 4
    assert model.config._attn_implementation == attention.NAME  # was reset to sdpa
    require_checkpoint_room(tmp_path, cfg)
    assert model.config._attn_implementation == attention.NAME  # was reset to sdpa too


def test_auto_resolution():
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    llama, gemma2 = make_model("llama").config, make_model("gemma2").config
    assert attention.resolve("auto", llama, cpu, True, 512) == attention.NAME
    assert attention.resolve("auto", llama, cpu, True, 1024) == "sdpa"  # slower there
    assert attention.resolve("auto", llama, cpu, False, 256) == "sdpa"
    assert attention.resolve("auto", llama, cuda, True, 256) == "sdpa"
    assert attention.resolve("eager", llama, cpu, True, 256) == "eager"
    # no SDPA in Gemma-2 (soft-capping): transformers' own default
    assert attention.resolve("auto", gemma2, cpu, True, 256) is None

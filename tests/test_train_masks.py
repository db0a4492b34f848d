"""MSG masks: G_random grown with ``fade_steps`` is function-preserving at growth (m = 0) for
depth, width (hidden, MLP units, heads) and both, and becomes the plain grown model at m = 1."""

from __future__ import annotations

import pytest
import torch
from tiny_models import make_model

from growlm.errors import InvalidRecipe
from growlm.train.growth import grow_weights
from growlm.train.masks import FadeMasks, fade_plan
from growlm.train.model import build_model
from growlm.train.recipe import GrowConfig

TOL = 2e-5  # fp32 logits; the grown matmuls sum extra exact zeros in another order

CASES = {
    "depth-interleave": ("random-depth", {"num_layers": 5}),
    "depth-append": ("random-depth", {"num_layers": 6, "placement": "append"}),
    "width-all": ("random-width", {"hidden_size": 48, "intermediate_size": 64, "num_heads": 6}),
    "width-ffn": ("random-width", {"intermediate_size": 96}),
    "both": ("random-depth+random-width", {"factor": 2, "hidden_size": 64}),
}


def _grown(family: str, op: str, params: dict, fade: int = 4):
    small = make_model(family).float().eval()
    grow = GrowConfig(op=op, params=params, fade_steps=fade)
    config, weights, report = grow_weights(small.config, dict(small.state_dict()), grow, seed=3)
    big = build_model(config).float().eval()
    big.load_state_dict(weights, strict=False)
    big.tie_weights()
    plan = fade_plan(small.config, config, report, fade)
    return small, big, plan


def _logits(model, ids):
    with torch.no_grad():
        return model(input_ids=ids).logits


@pytest.mark.parametrize("family", ["llama", "llama-tied", "mistral", "qwen2", "qwen3", "phi3"])
@pytest.mark.parametrize("case", list(CASES))
def test_masks_preserve_the_function_at_growth(family, case):
    op, params = CASES[case]
    small, big, plan = _grown(family, op, params)
    ids = torch.randint(3, 128, (2, 24), generator=torch.Generator().manual_seed(0))
    ref = _logits(small, ids)
    unmasked = (_logits(big, ids) - ref).abs().max().item()
    masks = FadeMasks(big, plan)
    assert masks.set(0) == 0.0
    assert (_logits(big, ids) - ref).abs().max().item() < TOL
    assert unmasked > 1e-3  # without the masks the random structure changes the function
    masks.set(2)  # halfway: something in between
    half = (_logits(big, ids) - ref).abs().max().item()
    assert half > TOL
    # m = 1: every hook is the identity, so removing them changes nothing
    assert masks.set(4) == 1.0 and masks.done
    at_one = _logits(big, ids)
    masks.remove()
    assert torch.allclose(_logits(big, ids), at_one, atol=1e-6, rtol=0)


def test_gradients_flow_into_new_structure_while_masked():
    _, big, plan = _grown("llama", "random-depth+random-width", {"factor": 2, "hidden_size": 64})
    masks = FadeMasks(big, plan)
    masks.set(1)  # m = 0.25
    ids = torch.randint(3, 128, (2, 16), generator=torch.Generator().manual_seed(1))
    big.train()
    big(input_ids=ids, labels=ids).loss.backward()
    new_layer = plan.new_layers[0]
    grad = big.model.layers[new_layer].mlp.down_proj.weight.grad
    assert grad is not None and grad.abs().sum() > 0
    emb = big.model.embed_tokens.weight.grad
    assert emb[:, plan.new_units["hidden"]].abs().sum() > 0


def test_width_masks_refuse_families_with_post_norms():
    small = make_model("gemma2").float()
    grow = GrowConfig(op="random-width", params={"hidden_size": 48}, fade_steps=4)
    config, _, report = grow_weights(small.config, dict(small.state_dict()), grow)
    with pytest.raises(InvalidRecipe, match="fade_steps with width growth supports llama"):
        fade_plan(small.config, config, report, 4)


def test_width_fade_families_follow_from_the_family_specs():
    """Pre-norm RMSNorm blocks (ArchSpec.pre_norm_only): not Gemma (norms after the sublayers),
    OLMo 2 (also a norm over all heads), GPT-2 / GPT-NeoX / TokenFormer (LayerNorm)."""
    from growlm.train.masks import WIDTH_FAMILIES

    assert WIDTH_FAMILIES == ("llama", "mistral", "qwen2", "qwen3", "phi3")

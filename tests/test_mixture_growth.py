"""MixtureGrowth: template-mixed llama projections (growlm/models/templates.py) and the
mixture-growth operator (growlm/ops/mixture_growth.py).

The layer equals its direct formula; a template model's materialised checkpoint loads with
AutoModelForCausalLM and gives its logits; growth keeps the templates, copies the trained
coefficients on the diagonal and puts new, orthogonal combinations of the trained templates
off it; coef_scale 0 preserves the function exactly, the paper's orthogonal init changes it
(measured); AdamW moments follow; bad input is one line; a recipe trains, grows and exports."""

from __future__ import annotations

import copy

import pytest
import torch
from safetensors.torch import load_file, save_file
from test_train_stages import STEP_TOKENS, _raw, _train
from tiny_models import LLAMA_LIKE, V
from transformers import AutoConfig, AutoModelForCausalLM

import growlm
from growlm.errors import InvalidGrowth, InvalidRecipe
from growlm.models.templates import (
    KEY,
    PREFIX,
    PROJECTIONS,
    TemplateBank,
    TemplateLinear,
    dense_params,
    materialise,
)
from growlm.ops.mixture_growth import CHECKPOINT_REFUSAL, grow_state
from growlm.train.checkpoint import list_checkpoints, load_checkpoint
from growlm.train.model import build_model
from growlm.train.recipe import recipe_from_dict

LOGIT_TOL = 1e-5  # float32 logits of the same function computed two ways
COUNT = 4  # templates per projection in these tests


def _config(tied: bool = False, count: int = COUNT):
    # 3 layers, hidden 32, FFN 48, 4 heads of 8, 2 kv heads; vocabulary 128
    cfg = AutoConfig.for_model("llama", **LLAMA_LIKE, vocab_size=V, tie_word_embeddings=tied)
    setattr(cfg, KEY, {"count": count, "grid": 1})
    return cfg


def _model(cfg, seed: int = 0):
    torch.manual_seed(seed)
    return build_model(cfg).eval()


IDS = torch.randint(0, 128, (2, 16), generator=torch.Generator().manual_seed(1))


@torch.no_grad()
def _logits(model) -> torch.Tensor:
    return model(input_ids=IDS).logits


# ---- the layer ---------------------------------------------------------------------------
def test_template_layer_equals_the_direct_formula():
    torch.manual_seed(0)
    bank = TemplateBank(count=3, layers=2, grid=2, out_features=10, in_features=6).double()
    bank.reset(0.02)
    for layer in range(2):
        direct = torch.zeros(10, 6, dtype=torch.float64)
        for r in range(2):
            for c in range(2):
                for t in range(3):
                    coef = bank.coefs[layer, r, c, t]
                    direct[r * 5 : (r + 1) * 5, c * 3 : (c + 1) * 3] += coef * bank.templates[t]
        torch.testing.assert_close(bank.weight(layer), direct, rtol=0, atol=1e-15)
        x = torch.randn(4, 6, dtype=torch.float64)
        out = TemplateLinear(bank, layer)(x)
        torch.testing.assert_close(out, x @ direct.T, rtol=0, atol=1e-14)
    # init: unit-norm coefficient vectors, so each mixed weight starts at the family's scale
    norms = bank.coefs.detach().norm(dim=-1)
    torch.testing.assert_close(norms, torch.ones_like(norms))


def test_template_model_shares_templates_and_trains_them():
    model = _model(_config()).train()
    state = model.state_dict()
    for _, name in PROJECTIONS:
        assert state[f"{PREFIX}{name}.coefs"].shape[:3] == (3, 1, 1)
    assert not [n for n in state if n.endswith("_proj.weight")]  # no per-layer weights
    loss = model(input_ids=IDS, labels=IDS).loss
    loss.backward()
    for name, param in model.named_parameters():
        assert param.grad is not None and bool(param.grad.abs().sum() > 0), name


def test_materialised_checkpoint_loads_with_automodel_and_gives_the_same_logits(tmp_path):
    cfg = _config()
    model = _model(cfg)
    plain_cfg, weights = materialise(cfg, dict(model.state_dict()))
    assert not hasattr(plain_cfg, KEY) and hasattr(cfg, KEY)
    plain_cfg.to_json_file(str(tmp_path / "config.json"))
    save_file({k: v.contiguous() for k, v in weights.items()}, str(tmp_path / "model.safetensors"))
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path, dtype=torch.float32).eval()
    assert type(loaded).__name__ == "LlamaForCausalLM"
    torch.testing.assert_close(_logits(loaded), _logits(model), rtol=0, atol=LOGIT_TOL)


def test_flops_count_the_mixed_weights():
    model = _model(_config())
    stored = sum(p.numel() for p in model.parameters())
    _, plain = materialise(model.config, dict(model.state_dict()))
    assert dense_params(model, stored) == sum(t.numel() for t in plain.values())


# ---- growth --------------------------------------------------------------------------------
@pytest.mark.parametrize("factor", [2, 3])
def test_growth_keeps_templates_copies_the_diagonal_and_adds_orthogonal_combinations(factor):
    cfg = _config(count=9)  # 9 templates: all 9 blocks of a 3 x 3 grid can be orthogonal
    model = _model(cfg)
    old = {n: t.clone() for n, t in model.state_dict().items()}
    new_cfg, new, report = grow_state(cfg, old, "mixture-growth", {"factor": factor})
    assert report["function_preserving"] is False
    assert (new_cfg.hidden_size, new_cfg.intermediate_size) == (32 * factor, 48 * factor)
    assert (new_cfg.num_attention_heads, new_cfg.num_key_value_heads) == (4 * factor, 2 * factor)
    assert new_cfg.head_dim == 8 and getattr(new_cfg, KEY) == {"count": 9, "grid": factor}
    grown = build_model(new_cfg)
    assert grown.load_state_dict(new, strict=True)  # every shape as the grown config's
    _, old_plain = materialise(cfg, old)
    _, new_plain = materialise(new_cfg, new)
    for group, name in PROJECTIONS:
        templates = old[f"{PREFIX}{name}.templates"]
        assert torch.equal(new[f"{PREFIX}{name}.templates"], templates)
        coefs, old_coefs = new[f"{PREFIX}{name}.coefs"], old[f"{PREFIX}{name}.coefs"]
        basis = templates.reshape(9, -1).double()  # [T, o*i]
        o, i = templates.shape[1:]
        for layer in range(3):
            w_old = old_plain[f"model.layers.{layer}.{group}.{name}.weight"]
            w_new = new_plain[f"model.layers.{layer}.{group}.{name}.weight"]
            assert w_new.shape == (o * factor, i * factor)
            vectors = []
            for r in range(factor):
                for c in range(factor):
                    block = w_new[r * o : (r + 1) * o, c * i : (c + 1) * i]
                    if r == c:  # the trained combination, exactly
                        assert torch.equal(coefs[layer, r, c], old_coefs[layer, 0, 0])
                        torch.testing.assert_close(block, w_old, rtol=0, atol=1e-7)
                        continue
                    # a combination of the trained templates: least squares recovers the
                    # block's coefficients with no residual
                    solved = torch.linalg.lstsq(basis.T, block.reshape(-1).double()).solution
                    torch.testing.assert_close(
                        solved, coefs[layer, r, c].double(), rtol=0, atol=1e-5
                    )
                    vectors.append(coefs[layer, r, c].double())
            vectors.append(old_coefs[layer, 0, 0].double())
            gram = torch.stack(vectors) @ torch.stack(vectors).T
            norm2 = float(old_coefs[layer, 0, 0].double().norm() ** 2)
            # mutually orthogonal, each with the trained vector's norm
            torch.testing.assert_close(
                gram, norm2 * torch.eye(len(vectors), dtype=torch.float64), rtol=0, atol=1e-6
            )


def test_more_blocks_than_templates_take_the_least_spanned_directions():
    cfg = _config(count=2)  # 3 new blocks in 2 dimensions: orthogonal while possible
    old = dict(_model(cfg).state_dict())
    _, new, _ = grow_state(cfg, old, "mixture-growth", {"factor": 2})
    coefs = new[f"{PREFIX}q_proj.coefs"][0].double()  # [2, 2, T]
    first = coefs[0, 0]
    assert abs(float(first @ coefs[0, 1])) < 1e-6  # the one orthogonal direction
    assert torch.isfinite(coefs).all() and coefs[1, 0].norm() > 0


def test_coef_scale_zero_preserves_the_function_the_papers_init_does_not():
    cfg = _config()
    model = _model(cfg)
    before = _logits(model)
    deviations = {}
    for scale in (0.0, 0.1, 1.0):
        new_cfg, new, report = grow_state(
            cfg, dict(model.state_dict()), "mixture-growth", {"factor": 2, "coef_scale": scale}
        )
        grown = build_model(new_cfg).eval()
        grown.load_state_dict(new)
        deviations[scale] = float((_logits(grown) - before).abs().max())
        assert report["function_preserving"] is (scale == 0)
    assert deviations[0.0] < LOGIT_TOL
    # measured on this random tiny model: ~0.04 at 0.1, ~0.36 at 1.0 (logits up to ~0.5)
    assert LOGIT_TOL < deviations[0.1] < deviations[1.0]


def test_tied_head_with_coef_scale_zero_scales_the_logits_by_k():
    cfg = _config(tied=True)
    model = _model(cfg)
    new_cfg, new, report = grow_state(
        cfg, dict(model.state_dict()), "mixture-growth", {"factor": 2, "coef_scale": 0}
    )
    assert report["function_preserving"] is False
    grown = build_model(new_cfg).eval()
    grown.load_state_dict(new)
    grown.tie_weights()
    torch.testing.assert_close(_logits(grown), 2 * _logits(model), rtol=0, atol=2 * LOGIT_TOL)


def test_moments_follow_the_growth():
    cfg = _config()
    state = dict(_model(cfg).state_dict())
    moments = {n: torch.rand_like(t) for n, t in state.items()}
    _, avg, _ = grow_state(cfg, moments, "mixture-growth", {"factor": 2}, fill="exp_avg")
    _, sq, _ = grow_state(cfg, moments, "mixture-growth", {"factor": 2}, fill="exp_avg_sq")
    name = f"{PREFIX}up_proj.coefs"
    assert torch.equal(avg[name][:, 1, 1], moments[name][:, 0, 0])
    assert not avg[name][:, 0, 1].any() and not avg[name][:, 1, 0].any()
    torch.testing.assert_close(avg["lm_head.weight"][:, 32:], moments["lm_head.weight"] / 2)
    torch.testing.assert_close(sq["lm_head.weight"][:, :32], moments["lm_head.weight"] / 4)
    templates = f"{PREFIX}down_proj.templates"
    assert torch.equal(avg[templates], moments[templates])


def test_growth_plans_on_meta_tensors():
    cfg = _config()
    with torch.device("meta"):
        state = dict(build_model(cfg).state_dict())
    _, new, _ = grow_state(cfg, state, "mixturegrowth", {"factor": 2})
    assert new[f"{PREFIX}q_proj.coefs"].shape == (3, 2, 2, COUNT)
    assert all(t.is_meta for t in new.values())


# ---- bad input -----------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"factor": 2.5}, "factor must be an integer >= 2, got 2.5"),
        ({"factor": 1}, "factor must be an integer >= 2, got 1"),
        ({"factor": True}, "factor must be an integer >= 2, got True"),
        ({}, "mixture-growth needs --factor N"),
        ({"factor": 2, "coef_scale": -1}, "--coef-scale must be a finite number >= 0, got -1"),
        (
            {"factor": 2, "coef_scale": float("nan")},
            "--coef-scale must be a finite number >= 0, got nan",
        ),
        ({"factor": 2, "hidden_size": 64}, "--hidden-size does not apply to mixture-growth"),
        ({"factor": 1 << 20}, "the hidden size would pass"),
    ],
)
def test_bad_parameters_are_one_line(params, message):
    cfg = _config()
    with torch.device("meta"):
        state = dict(build_model(cfg).state_dict())
    with pytest.raises(InvalidGrowth, match=message) as info:
        grow_state(cfg, state, "mixture-growth", params)
    assert "\n" not in str(info.value)


def test_plain_model_and_other_operators_are_refused():
    cfg = _config()
    with torch.device("meta"):
        state = dict(build_model(cfg).state_dict())
    with pytest.raises(InvalidGrowth, match="grows only with mixture-growth, not 'stack'"):
        grow_state(cfg, state, "stack", {"factor": 2})
    plain = copy.deepcopy(cfg)
    delattr(plain, KEY)
    with pytest.raises(InvalidGrowth, match=r"set model\.templates in the recipe"):
        grow_state(plain, state, "mixture-growth", {"factor": 2})


def test_grow_on_a_checkpoint_folder_names_the_recipe_path(tiny_dir, tmp_path):
    with pytest.raises(InvalidGrowth) as info:
        growlm.grow(tiny_dir("llama"), tmp_path / "out", "mixture-growth", {"factor": 2})
    assert str(info.value) == CHECKPOINT_REFUSAL


def _recipe(**model) -> dict:
    raw = _raw([{"name": "a", "tokens": STEP_TOKENS}])
    raw["model"].update(model)
    return raw


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"templates": {"count": 0}}, "model.templates.count must be >= 1, got 0"),
        ({"templates": {"count": 2}, "type": "qwen2"}, "built for the llama family, not 'qwen2'"),
        ({"templates": {"count": 2}, "init": "x"}, "a model.init checkpoint has no templates"),
        ({"templates": {"cnt": 2}}, "model.templates.cnt: unknown key"),
    ],
)
def test_bad_template_recipes_are_one_line(change, message):
    with pytest.raises(InvalidRecipe, match=message) as info:
        recipe_from_dict(_recipe(**change), [])
    assert "\n" not in str(info.value)


def test_recipe_growth_needs_templates_and_templates_need_mixture_growth():
    raw = _raw(
        [
            {"name": "a", "tokens": STEP_TOKENS},
            {"name": "b", "tokens": STEP_TOKENS, "grow": {"op": "mixture-growth", "factor": 2}},
        ]
    )
    with pytest.raises(InvalidRecipe, match=r"stages\.1\.grow: mixture-growth grows a template"):
        recipe_from_dict(copy.deepcopy(raw), [])
    raw["model"]["templates"] = {"count": 2}
    raw["stages"][1]["grow"] = {"op": "stack", "factor": 2}
    with pytest.raises(InvalidRecipe, match="grows only with mixture-growth, not 'stack'"):
        recipe_from_dict(raw, [])


# ---- a recipe: train, grow, export -----------------------------------------------------------
def test_recipe_trains_grows_and_exports_plain_llama(tmp_path, monkeypatch):
    raw = _raw(
        [
            {"name": "small", "tokens": 3 * STEP_TOKENS},
            {
                "name": "wide",
                "tokens": 3 * STEP_TOKENS,
                "grow": {"op": "mixture-growth", "factor": 2},
                "optimizer_state": "carry",
            },
        ],
        precision="fp32",
    )
    raw["model"]["config"].update(hidden_size=32, intermediate_size=64, num_attention_heads=2)
    raw["model"]["config"]["num_key_value_heads"] = 2
    raw["model"]["templates"] = {"count": 3}
    out = tmp_path / "run"
    records = _train(raw, out, monkeypatch)
    assert [r["stage"] for r in records] == ["small"] * 3 + ["wide"] * 3
    first, last = list_checkpoints(out)[0], list_checkpoints(out)[-1]
    small, wide = load_checkpoint(first), load_checkpoint(last)
    assert getattr(wide.config, KEY) == {"count": 3, "grid": 2}
    assert wide.model[f"{PREFIX}q_proj.coefs"].shape == (1, 2, 2, 3)
    # a checkpoint rebuilds its template model (resume): every tensor in place
    assert build_model(wide.config).load_state_dict(wide.model, strict=True)
    # the templates kept training after growth
    name = f"{PREFIX}gate_proj.templates"
    assert not torch.equal(wide.model[name], small.model[name])
    # the exports are plain llama checkpoints of the materialised weights
    for stage, ckpt, hidden in (("small", small, 32), ("wide", wide, 64)):
        config = AutoConfig.from_pretrained(out / stage)
        assert config.hidden_size == hidden and not hasattr(config, KEY)
        exported = load_file(str(out / stage / "model.safetensors"))
        _, plain = materialise(ckpt.config, ckpt.model)
        assert set(exported) == set(plain)
        for key, tensor in exported.items():
            torch.testing.assert_close(tensor, plain[key], rtol=0, atol=0)
        loaded = AutoModelForCausalLM.from_pretrained(out / stage, dtype=torch.float32)
        assert loaded.config.hidden_size == hidden
    # FLOPs count the mixed (dense) weights: 6 N D with N of the exported model
    n_small = sum(t.numel() for t in load_file(str(out / "small" / "model.safetensors")).values())
    assert records[2]["flops"] == pytest.approx(6 * n_small * 3 * STEP_TOKENS)

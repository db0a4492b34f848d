"""growlm plan: the paper's guideline table, range warnings, recipes, user errors."""

from __future__ import annotations

import json
import math

import pytest
import yaml

from growlm.analysis.guideline import PAPER, Guideline, load_guideline, save_guideline
from growlm.analysis.plan import make_plan
from growlm.cli import main

REPO = __import__("pathlib").Path(__file__).resolve().parent.parent


@pytest.mark.parametrize(
    ("params", "tokens", "expected_billions"),
    [(7e9, 2e12, 11.11), (70e9, 2e12, 42.48), (8e9, 15e12, 6.58), (13e9, 2e12, 15.84)],
)
def test_paper_table(params, tokens, expected_billions):
    """The paper's Llama table (README of the official code), to two decimals."""
    d = make_plan(params, tokens).growth_tokens
    assert round(d / 1e9, 2) == expected_billions


def test_compute_budget_equals_tokens_budget():
    a = make_plan(7e9, tokens=2e12)
    b = make_plan(7e9, compute=6 * 7e9 * 2e12)
    assert math.isclose(a.growth_tokens, b.growth_tokens, rel_tol=1e-12)
    assert a.compute == pytest.approx(8.4e22)


def test_stage_flops_add_up():
    p = make_plan(1.1e9, 1e11)
    assert p.base_flops == pytest.approx(6 * (1.1e9 / 4) * p.growth_tokens)
    assert p.grown_flops == pytest.approx(6 * 1.1e9 * (1e11 - p.growth_tokens))
    assert p.total_flops == pytest.approx(p.base_flops + p.grown_flops)
    assert 0 < p.flops_saved < 1
    assert p.warnings == []  # 1.1B at 6.6e20 FLOPs lies inside the fitted range


def test_warns_outside_fitted_range():
    tiny = make_plan(1e6, 1e8)
    text = " ".join(tiny.warnings)
    assert "parameter range" in text and "compute range" in text and "meaningless" in text
    assert "not below the budget" in text  # d explodes at tiny C
    big = make_plan(70e9, 2e12)
    assert any("parameter range" in w for w in big.warnings)


def test_cli_json(capsys):
    assert main(["plan", "--params", "7B", "--tokens", "2T", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert round(data["growth_tokens"] / 1e9, 2) == 11.11
    assert data["growth_factor"] == 4


def test_model_counts_params_and_writes_recipe(tmp_path, capsys):
    out = tmp_path / "planned.yaml"
    code = main(
        [
            "plan",
            "--model",
            str(REPO / "recipes" / "tiny.yaml"),
            "--tokens",
            "40960",
            "--growth-tokens",
            "10240",
            "--growth-factor",
            "2",
            "--write-recipe",
            str(out),
            "--json",
        ]
    )
    assert code == 0
    data = json.loads(capsys.readouterr().out)
    assert data["target_layers"] == 4 and data["small_layers"] == 2
    assert data["small_params_exact"] and data["small_params"] < data["params"]
    from growlm.train.recipe import load_recipe

    recipe = load_recipe(out)  # the trainer's own schema accepts it
    assert [s.name for s in recipe.stages] == ["base", "grown"]
    assert recipe.stages[0].tokens == 10240 and recipe.stages[1].tokens == 30720
    assert recipe.stages[1].grow is not None and recipe.stages[1].grow.params == {"factor": 2}
    assert recipe.model.config["num_hidden_layers"] == 2
    assert recipe.optim.lr == 1e-3 and recipe.stage_optim(1).lr == 3e-4
    assert yaml.safe_load(out.read_text())["data"]["sources"][0].startswith("/")


def test_model_config_json(tmp_path):
    cfg = dict(
        model_type="llama",
        vocab_size=1000,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=8,
        num_attention_heads=4,
        num_key_value_heads=2,
        tie_word_embeddings=False,
    )
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    from growlm.analysis.params import count_params, load_model_spec

    spec = load_model_spec(tmp_path)
    per_layer = 64 * 64 * 2 + 64 * 32 * 2 + 3 * 64 * 128 + 2 * 64  # q,o + k,v + mlp + norms
    assert count_params(spec) == 2 * 1000 * 64 + 8 * per_layer + 64
    plan = make_plan(tokens=1e9, model=spec)
    assert plan.small_layers == 2 and plan.params == count_params(spec)


def test_user_guideline(tmp_path):
    g = Guideline(
        alpha=0.5,
        beta=10.0,
        gamma=1.0,
        growth_factor=2,
        params_range=(1e6, 1e7),
        compute_range=(1e12, 1e14),
        source="mine",
    )
    save_guideline(g, tmp_path / "g.json")
    loaded = load_guideline(tmp_path / "g.json")
    assert loaded.alpha == 0.5 and loaded.growth_factor == 2
    p = make_plan(4e6, 1e6, guideline=loaded)
    expected = 10 ** (0.5 * math.log10(4e6) + 10.0 / math.log10(6 * 4e6 * 1e6) + 1.0)
    assert p.growth_tokens == pytest.approx(expected) and p.growth_factor == 2
    assert [w for w in p.warnings if "guideline" in w] == []  # inside its fitted range
    assert PAPER.growth_factor == 4


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["plan", "--params", "-5", "--tokens", "1e9"], "--params must be a positive"),
        (["plan", "--params", "7e9"], "exactly one budget"),
        (["plan", "--tokens", "1e9"], "target size"),
        (
            ["plan", "--params", "7e9", "--tokens", "2e12", "--guideline", "/nonexistent.json"],
            "does not exist",
        ),
        (
            ["plan", "--params", "7e9", "--tokens", "2e12", "--write-recipe", "x.yaml"],
            "needs --model",
        ),
        (["plan", "--model", "/nonexistent", "--tokens", "2e12"], "no such config.json"),
    ],
)
def test_user_errors_one_line(argv, needle, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and needle in err and err.count("\n") == 1


def test_advisor_warns_oversized_target_and_names_a_better_size(capsys):
    """`growlm plan --params 50M --tokens 10M` (issue 19): C = 3e15 FLOPs. Chinchilla's
    approach-3 fit gives N_opt = G (C/6)^(b/(a+b)) = 5.85M, so the target is 8.55x too big."""
    a, b = 0.34, 0.28
    n_opt = (a * 406.4 / (b * 410.7)) ** (1 / (a + b)) * (3e15 / 6) ** (b / (a + b))
    assert main(["plan", "--params", "50M", "--tokens", "10M"]) == 0
    out = capsys.readouterr().out
    assert f"{n_opt / 1e6:.2f}M params" in out and "5.85M params" in out
    warning = next(line for line in out.splitlines() if "oversized" in line)
    assert warning.startswith("warning: the target is oversized for this budget")
    assert "a model 8.6x smaller (5.85M params" in warning and "lower loss" in warning
    assert "Hoffmann et al. 2022" in warning
    # the guideline's d exceeds D: unusable, and then no saving is stated anywhere
    assert "no usable plan" in out and "% below scratch" not in out and "+49.1%" not in out
    assert main(["plan", "--params", "50M", "--tokens", "10M", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    adv = data["advice"]
    assert adv["optimal_params"] == pytest.approx(n_opt, rel=1e-12)
    assert adv["target_over_optimal"] == pytest.approx(50e6 / n_opt)
    assert adv["expected_loss_optimal"] < adv["expected_loss_target"]
    assert data["usable"] is False and data["flops_saved"] is None
    assert adv["growth"]["expected_saving"] == "not stated: no usable plan"
    assert not adv["growth"]["query_inside_fitted_range"]
    assert any("oversized" in w for w in data["warnings"])


def test_advisor_inside_the_papers_range_quotes_its_measurement_and_no_spread():
    p = make_plan(1.1e9, compute=8e20)
    grow = p.advice["growth"]
    assert p.usable and grow["query_inside_fitted_range"]
    assert grow["expected_saving"]["mean"] == 0.491 and grow["expected_saving"]["t95"] is None
    assert "without a spread" in grow["pays_off"]
    assert not any("oversized" in w or "undersized" in w for w in p.warnings)  # 0.67x N_opt


def test_advisor_rules_and_user_fit(tmp_path):
    from growlm.analysis.scaling import load_scaling

    p = make_plan(50e6, 10e6, scaling=load_scaling("20tpp"))
    assert p.advice["optimal_params"] == pytest.approx(math.sqrt(3e15 / 120))
    (tmp_path / "fit.json").write_text(
        json.dumps({"tokens_per_param": 5.0, "compute_range": [1e15, 1e16], "source": "bench"})
    )
    q = make_plan(50e6, 10e6, scaling=load_scaling(tmp_path / "fit.json"))
    assert q.advice["optimal_params"] == pytest.approx(math.sqrt(3e15 / 30))
    assert q.advice["scaling"]["inside_fitted_range"] and "bench" in q.advice["scaling"]["rule"]
    saving = {"mean": 0.2, "sd": 0.05, "t95": [0.1, 0.3], "seeds": 3, "where": "here"}
    g = Guideline(params_range=(1e7, 1e8), compute_range=(1e15, 1e16), source="mine",
                  extra={"measured_saving": saving})  # fmt: skip
    r = make_plan(5e7, 1e7, guideline=g, growth_tokens=1e6)
    assert r.advice["growth"]["pays_off"].startswith("expected")
    g2 = Guideline(params_range=(1e7, 1e8), compute_range=(1e15, 1e16), source="mine",
                   extra={"measured_saving": {**saving, "t95": [-0.1, 0.3]}})  # fmt: skip
    assert (
        "includes zero"
        in make_plan(5e7, 1e7, guideline=g2, growth_tokens=1e6).advice["growth"]["pays_off"]
    )

"""The demo's two arms spend the same FLOPs; the operator showcase runs offline."""

from __future__ import annotations

import json

from growlm.analysis.params import ModelSpec, count_params
from growlm.cli import main
from growlm.demo import BATCH, SEQ_LEN, _print_table, arm_regime, demo_recipes, small_alone_recipe


def _n(raw, layers):
    cfg = {
        **raw["model"]["config"],
        "num_hidden_layers": layers,
        "vocab_size": raw["data"]["vocab_size"],
    }
    return count_params(ModelSpec("llama", cfg))


def test_demo_arms_have_equal_flops():
    scratch, stacked = demo_recipes(seed=0)
    n_big = _n(scratch, 8)
    n_small = _n(stacked, 2)
    c_scratch = 6 * n_big * sum(s["tokens"] for s in scratch["stages"])
    base, grown = stacked["stages"]
    c_stack = 6 * n_small * base["tokens"] + 6 * n_big * grown["tokens"]
    assert grown["grow"] == {"op": "stack", "factor": 4}
    assert 0 <= c_scratch - c_stack <= 6 * n_big * BATCH * SEQ_LEN  # within one step
    assert stacked["stages"][1]["optim"]["lr"] < stacked["optim"]["lr"]  # paper: lower lr after


def test_operator_showcase(tmp_path, capsys):
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "keep.txt").write_text("a trained run lives here")
    assert main(["demo", "--operators", "--out", str(tmp_path / "d")]) == 0
    assert (tmp_path / "d" / "keep.txt").exists()  # never wipes the demo's training runs
    reports = json.loads((tmp_path / "d" / "operators" / "summary.json").read_text())
    assert [r["op"] for r in reports][:2] == ["stack", "interleave"]
    for r in reports:
        if r["function_preserving"]:
            assert r["max_abs_logit_diff"] < 1e-4
    assert "zero-depth" in capsys.readouterr().out


def test_demo_names_each_arms_regime_and_the_small_alone_control():
    scratch, stacked = demo_recipes(seed=0)
    control = small_alone_recipe(seed=0)
    n_big, n_small = _n(scratch, 8), _n(stacked, 2)
    assert n_big == 1_845_376  # docs/demo.md
    regime = arm_regime(scratch)
    assert regime["target_params"] == n_big
    assert regime["stages"][0]["tokens_per_param"] == 500 * BATCH * SEQ_LEN / n_big
    grown = arm_regime(stacked)["stages"]
    assert [(s["layers"], s["params"]) for s in grown] == [(2, n_small), (8, n_big)]
    assert grown[1]["tokens_per_param"] == stacked["stages"][1]["tokens"] / n_big
    # the control is the small model alone for scratch's FLOPs (within one step)
    c_scratch = 6 * n_big * scratch["stages"][0]["tokens"]
    c_alone = 6 * n_small * control["stages"][0]["tokens"]
    assert control["model"] == stacked["model"] and len(control["stages"]) == 1
    assert 0 <= c_scratch - c_alone <= 6 * n_small * BATCH * SEQ_LEN


def test_demo_table_prints_tokens_per_param_and_points_to_the_control(capsys):
    arms = (*demo_recipes(seed=0), small_alone_recipe(seed=0))
    result = {
        "target": "t", "corpus": "c", "scratch_flops": 2.3e13, "g_stack_flops": 2.3e13,
        "scratch_final_val_loss": 4.0, "g_stack_final_val_loss": 3.9, "speedup_flops": 0.5,
        "speedup_time": 0.4, "plot": "p", "compare": "r", "small_alone": None,
        "regime": {raw["name"]: arm_regime(raw) for raw in arms},
    }  # fmt: skip
    _print_table(result)
    out = capsys.readouterr().out
    assert "regime: 1.1 tokens per parameter of the target" in out
    rows = {line.split()[0]: line.split()[1:] for line in out.splitlines() if line}
    assert rows["scratch"] == ["1,845,376", "1.11", "2.3e+13", "4.0000"]
    small, big = result["regime"]["g_stack"]["stages"]
    line = f"{small['tokens_per_param']:.2f} (2L) + {big['tokens_per_param']:.2f} (8L)"
    assert rows["G_stack"][1:6] == line.split() and line == "0.78 (2L) + 1.01 (8L)"
    assert "control not run" in out and "growlm demo --control trains it" in out
    result["small_alone"] = {"final_val_loss": 3.8, "flops": 2.3e13, "speedup_flops": 0.25}
    _print_table(result)
    out = capsys.readouterr().out
    assert "small alone" in out and "reaches scratch's final loss at FLOPs +25.0% vs scratch" in out

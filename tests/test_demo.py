"""The demo's two arms spend the same FLOPs; the operator showcase runs offline."""

from __future__ import annotations

import json

from growlm.analysis.params import ModelSpec, count_params
from growlm.cli import main
from growlm.demo import BATCH, SEQ_LEN, demo_recipes


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

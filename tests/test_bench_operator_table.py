"""bench/operator_table.py --quick: the issue-17 rows (clone-width, mixture-growth, TokenFormer's
param-tokens and its own scratch reference) run over two seeds with per-seed values and
statistics over seeds; a rerun reuses every run, evaluation and comparison; rows from an earlier
invocation (the one-seed table's form included) are kept."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import crash_child
import pytest

ROOT = Path(__file__).resolve().parent.parent
NEW = ("clone-width", "mixture-growth", "param-tokens")


@pytest.mark.slow
def test_quick_table_new_rows_over_seeds_and_rerun_reuses_runs(tmp_path):
    out, res = tmp_path / "work", tmp_path / "ot.json"
    committed = json.loads((ROOT / "bench" / "results" / "operator_table.json").read_text())
    legacy = committed["rows"]["zero-width"]
    if "seeds" not in legacy:  # the one-seed table's form: kept and converted on merge
        res.write_text(json.dumps({"command": "old", "date": "2026-11-30",
                                   "rows": {"zero-width": legacy}}))  # fmt: skip
    script = str(ROOT / "bench" / "operator_table.py")
    base = [sys.executable, script, "--quick", "--rows", ",".join(NEW), "--seeds", "0", "1",
            "--results", str(res), "--keep", str(tmp_path / "kept")]  # fmt: skip
    cmd = [*base, "--out", str(out)]
    env = {"PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin",
           "OMP_NUM_THREADS": "1"}  # fmt: skip
    # each run forked from crash_child's pre-imported server: as a subprocess, without the
    # seconds of importing torch
    code, output = crash_child.python(cmd, env, tmp_path / "first.log", 600)
    assert code == 0, output[-3000:]
    r = json.loads(res.read_text())
    # the new rows and the rows they are measured against, each seed in its own folder
    ran = ["scratch", "direct-depth", "direct-width", *NEW[:2], "tokenformer-scratch", NEW[2]]
    assert r["rows_run_this_invocation"] == ran
    assert r["runs_trained_this_invocation"] == 14 and r["runs_evaluated_this_invocation"] == 14
    for seed in (0, 1):
        for name in ran:
            assert (out / f"seed{seed}" / name / "final" / "config.json").is_file()
    assert r["git_revision"] and r["date"] and r["machine"] and "--quick" in r["command"]
    rows = r["rows"]
    expected = {"clone-width": ("scratch", ["direct-width"]),
                "mixture-growth": ("scratch", ["direct-width"]),
                "param-tokens": ("tokenformer-scratch", ["direct-depth"]),
                "tokenformer-scratch": (None, ["scratch"])}  # fmt: skip
    for name, (reference, against) in expected.items():
        row = rows[name]
        assert row["reference"] == reference and sorted(row["against"]) == against
        assert [x["seed"] for x in row["seeds"]] == [0, 1]
        losses = [x["final_val_loss"] for x in row["seeds"]]
        stats = row["final_val_loss"]
        assert stats["seeds"] == 2 and stats["values"] == losses
        assert stats["mean"] == pytest.approx(sum(losses) / 2, abs=1e-12)
        assert stats["sd"] == pytest.approx(abs(losses[0] - losses[1]) / 2**0.5, abs=1e-12)
        half = 12.706 * stats["sd"] / 2**0.5  # t(0.975, df 1)
        assert stats["t95"] == pytest.approx([stats["mean"] - half, stats["mean"] + half])
        speed = row["speedup_flops"]  # no seed dropped: censored ones enter at their bound
        assert speed["seeds"] == 2 and len(speed["entered_as"]) == 2
        for x in row["seeds"]:
            assert x["perplexity"]["perplexity"] > 1 and x["flops"] > 0
            assert (x["speedup_flops"] is None) == (x["upper_bound_if_not_reached"] is not None)
            for other in against:
                assert set(x["against"][other]) >= {"speedup_flops", "reference_loss"}
        assert row["against"][against[0]]["speedup_flops"]["seeds"] == 2
    assert rows["tokenformer-scratch"]["speedup_flops"]["values"] == [0.0, 0.0]
    # every row's schedule ends within one step of the Llama scratch run's FLOPs (6 N D)
    setting = r["setting"]
    budget, step = setting["budget_flops"], 8 * 32
    fpt = setting["flops_per_token"]
    assert abs(fpt["tokenformer_over_llama"] - 1) < 0.01
    for name in ("scratch", "tokenformer-scratch"):
        for x in rows[name]["seeds"]:
            per_token = x["flops"] / x["tokens"]
            assert abs(x["flops"] - budget) <= per_token * step
    for name in NEW:
        for x in rows[name]["seeds"]:
            assert budget - 2 * fpt["llama_target"]["model"] * step <= x["flops"] <= budget
    assert fpt["template_width_base"] == fpt["llama_width_base"]  # mixed weights counted
    assert setting["mixture_growth_templates"] == 4  # the quick target's layers
    shapes = setting["tokenformer"]
    assert shapes["base_tokens"] + shapes["new_tokens"] == shapes["target_tokens"]
    if "seeds" not in legacy:
        kept = rows["zero-width"]
        assert kept["final_val_loss"]["values"] == [legacy["final_val_loss"]]
        assert kept["seeds"][0]["seed"] == 0 and kept["run"]["date"] == "2026-11-30"

    def rerun_reuses_everything(out_dir):
        log = tmp_path / f"rerun-{out_dir.name}.log"
        code, output = crash_child.python([*base, "--out", str(out_dir)], env, log, 300)
        assert code == 0, output[-3000:]
        again = json.loads(res.read_text())
        assert again["runs_trained_this_invocation"] == 0
        assert again["runs_evaluated_this_invocation"] == 0
        for name in ran:
            first, second = dict(rows[name]), dict(again["rows"][name])
            first.pop("run"), second.pop("run")
            assert first == second

    # rerun: every run, evaluation and comparison is reused; the statistics are the same
    rerun_reuses_everything(out)
    # a fresh clone: no work folder, only what --keep put in git (evaluations, compact metrics)
    assert len(list((tmp_path / "kept" / "seed0" / "eval").glob("*.json"))) == len(ran)
    rerun_reuses_everything(tmp_path / "fresh")

"""bench/compute_optimal.py --quick: every arm runs, writes its JSON, and a rerun skips them."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import crash_child
import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_quick_benchmark_runs_and_resumes(tmp_path):
    out, res, keep = tmp_path / "work", tmp_path / "co.json", tmp_path / "kept"
    cmd = [sys.executable, str(ROOT / "bench" / "compute_optimal.py"), "--quick", "--no-plots",
           "--results", str(res), "--keep", str(keep)]  # fmt: skip
    cmd_here = [*cmd, "--out", str(out)]
    env = {"PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin"}
    # each run forked from crash_child's pre-imported server: as a subprocess, without the
    # seconds of importing torch
    code, output = crash_child.python(cmd_here, env, tmp_path / "first.log", 300)
    assert code == 0, output[-3000:]
    r = json.loads(res.read_text())
    iso = r["isoflop"]
    assert len(iso["arms"]) == 5 and iso["fit"]["n_opt"] > 0
    for arm in iso["arms"].values():  # schedules end at C (to whole steps of 256 tokens)
        assert abs(arm["flops"] - iso["compute"]) <= 6 * arm["params"]["total"] * 256
        assert arm["params"]["without_embeddings"] < arm["params"]["total"]
    g = next(iter(r["growth"].values()))
    assert g["lr_tuning_seed0"]["grid"] == [2e-3, 5e-3, 1e-2]
    assert set(g["lr_tuning_seed0"]["arms"]) == {"scratch", "g_stack"}
    stats = g["speedup_flops"]
    assert stats["seeds"] == 2 and len(stats["entered_as"]) == 2  # no seed dropped
    assert set(g["controls_seed0"]) == {"small_alone", "small_continued"}
    assert len(r["timing_at_n_opt"]["arms"]) == 2
    arms = sorted(p.name for p in (out / "arms").glob("*.json"))
    assert r["arms_trained_this_invocation"] == len(arms)
    curve = json.loads((out / "arms" / arms[0]).read_text())["eval_curve"]
    assert curve and all("val_loss" in c and "flops" in c for c in curve)
    # rerun: every finished arm is skipped, the results are the same
    code, output = crash_child.python(cmd_here, env, tmp_path / "rerun.log", 120)
    assert code == 0, output[-3000:]
    again = json.loads(res.read_text())
    assert again["arms_trained_this_invocation"] == 0
    assert again["growth"] == r["growth"] and again["isoflop"] == r["isoflop"]
    # a fresh clone: no work folder, only the kept arms (result + compact metrics) from git
    assert sorted(p.name for p in keep.glob("*.json")) == arms
    fresh_cmd = [*cmd, "--out", str(tmp_path / "fresh")]
    code, output = crash_child.python(fresh_cmd, env, tmp_path / "fresh.log", 120)
    assert code == 0, output[-3000:]
    fresh = json.loads(res.read_text())
    assert fresh["arms_trained_this_invocation"] == 0
    assert fresh["growth"] == r["growth"] and fresh["isoflop"] == r["isoflop"]


def test_compact_metrics_keep_what_compare_reads(tmp_path):
    sys.path.insert(0, str(ROOT / "bench"))
    from resumable import compact_metrics

    from growlm.analysis.runs import load_run

    rows, flops, tokens = [], 0.0, 0
    for stage, rate, steps in (("base", 6.0e3, 7), ("grown", 2.4e4, 9)):
        for i in range(steps):
            tokens += 64
            flops += rate * 64
            row = {
                "step": len(rows) + 1,
                "stage": stage,
                "tokens": tokens,
                "flops": flops,
                "attn_flops": 0.0,
                "loss": 5.0 - 0.1 * len(rows),
                "elapsed": 0.5 * len(rows),
            }
            if i % 3 == 2:
                row["val_loss"] = 5.5 - 0.1 * len(rows)
            rows.append(row)  # fmt: skip
    full, short = tmp_path / "full.jsonl", tmp_path / "short.jsonl"
    full.write_text("".join(json.dumps(r) + "\n" for r in rows))
    kept = compact_metrics(rows)
    short.write_text("".join(json.dumps(r) + "\n" for r in kept))
    assert len(kept) < len(rows)
    a, b = load_run(full, "x"), load_run(short, "x")
    assert a.boundaries == b.boundaries and a.stage_rate == b.stage_rate
    assert a.stage_rate == pytest.approx({"base": 6.0e3, "grown": 2.4e4})
    for axis in ("flops", "tokens", "val_loss"):
        assert (getattr(a, axis) == getattr(b, axis)).all()

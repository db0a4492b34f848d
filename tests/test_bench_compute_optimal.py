"""bench/compute_optimal.py --quick: every arm runs, writes its JSON, and a rerun skips them."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_quick_benchmark_runs_and_resumes(tmp_path):
    out, res = tmp_path / "work", tmp_path / "co.json"
    cmd = [sys.executable, str(ROOT / "bench" / "compute_optimal.py"), "--quick", "--no-plots",
           "--out", str(out), "--results", str(res)]  # fmt: skip
    env = {"PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin"}
    subprocess.run(cmd, check=True, env=env, capture_output=True, timeout=300)
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
    subprocess.run(cmd, check=True, env=env, capture_output=True, timeout=120)
    again = json.loads(res.read_text())
    assert again["arms_trained_this_invocation"] == 0
    assert again["growth"] == r["growth"] and again["isoflop"] == r["isoflop"]

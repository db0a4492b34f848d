"""bench/upcycle.py: --quick runs the dense stage and every arm at equal active FLOPs, writes
each run's JSON, and a rerun skips finished runs, reuses the upcycled folders and resumes an
unfinished run; the summary reports every seed and across-seed statistics."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import crash_child
import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))

import upcycle as bench  # noqa: E402  (bench/upcycle.py)

ARMS = bench.ARMS


def test_summary_reports_every_seed_and_paired_gaps():
    losses = {0: [3.0, 2.8, 2.9, 3.2], 1: [3.2, 2.9, 3.1, 3.3], 5: [3.1, 2.7, 2.9, 3.1]}
    per_seed = {
        seed: {"arms": {arm: {"final_val_loss": v} for arm, v in zip(ARMS, vals, strict=True)}}
        for seed, vals in losses.items()
    }
    s = bench.summarise(per_seed)
    assert s["seeds"] == [0, 1, 5]
    up = s["final_val_loss"]["upcycle"]
    assert up["per_seed"] == {0: 2.8, 1: 2.9, 5: 2.7} and up["seeds"] == 3
    assert up["mean"] == pytest.approx(2.8) and up["sd"] == pytest.approx(0.1)
    half = 4.303 * 0.1 / 3**0.5  # t(0.975, df=2)
    assert up["t95"] == pytest.approx([2.8 - half, 2.8 + half])
    # paired by seed: upcycle - dense = -0.2, -0.3, -0.4
    gap = s["minus_dense"]["upcycle"]
    assert gap["values"] == pytest.approx([-0.2, -0.3, -0.4]) and gap["mean"] == pytest.approx(-0.3)
    assert s["upcycle_minus_scratch"]["values"] == pytest.approx([-0.4, -0.4, -0.4])
    assert s["drop_minus_upcycle"]["values"] == pytest.approx([0.1, 0.2, 0.2])
    assert set(s["minus_dense"]) == {"upcycle", "drop-0.5", "scratch"}


def test_quick_benchmark_runs_and_resumes(tmp_path):
    work, res = tmp_path / "work", tmp_path / "up.json"
    cmd = [sys.executable, str(ROOT / "bench" / "upcycle.py"), "--quick", "--no-plots",
           "--out", str(work), "--results", str(res)]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    # killed (SIGKILL) right after the dense stage's first checkpoint (step 4 of 8)
    kill = {**env, "GROWLM_TEST_KILL_AT": "checkpoint.renamed@1"}
    # each run forked from crash_child's pre-imported server: as a subprocess, without the
    # seconds of importing torch
    code, output = crash_child.python(cmd, kill, tmp_path / "killed.log", 300)
    assert code == -9, output[-2000:]
    stage = work / "runs" / "dense-stage-s0"
    assert [p.name for p in (stage / "checkpoints").iterdir()] == ["step-00000004"]
    assert list((work / "arms").glob("*.json")) == []
    code, output = crash_child.python(cmd, env, tmp_path / "done.log", 300)
    assert code == 0, output[-2000:]
    r = json.loads(res.read_text())
    names = ["dense-stage-s0", *(f"{arm}-s0" for arm in ARMS)]
    assert sorted(p.stem for p in (work / "arms").glob("*.json")) == sorted(names)
    assert r["runs_trained_this_invocation"] == 5
    rows = [json.loads(x) for x in (stage / "metrics.jsonl").read_text().splitlines()]
    assert [x["step"] for x in rows if "loss" in x] == list(range(1, 9))  # resumed at step 5
    run = r["runs"]["0"]
    step = 6 * run["active_params"]["dense"] * 8 * 32  # one dense step of 8 x 32 tokens
    moe_flops = run["arms"]["upcycle"]["flops"]
    assert run["active_params"]["moe"] > run["active_params"]["dense"]
    assert abs(run["arms"]["dense"]["flops"] - moe_flops) <= step  # equal active FLOPs
    assert run["arms"]["drop-0.5"]["flops"] == run["arms"]["scratch"]["flops"] == moe_flops
    assert run["arms"]["upcycle"]["final_aux_loss"] is not None
    for arm in ARMS:
        stats = r["summary"]["final_val_loss"][arm]
        assert stats["per_seed"] == {"0": run["arms"][arm]["final_val_loss"]}
        assert stats["seeds"] == 1 and stats["t95"] is None  # one seed: no interval
    # rerun with one run's JSON gone: that run resumes (from its last checkpoint: here the end),
    # the others are skipped and the upcycled folders reused (grow would refuse to overwrite)
    # (with --keep: the finished seed's result is kept there)
    (work / "arms" / "scratch-s0.json").unlink()
    keep = tmp_path / "kept"
    code, output = crash_child.python([*cmd, "--keep", str(keep)], env, tmp_path / "rerun.log", 120)
    assert code == 0, output[-2000:]
    again = json.loads(res.read_text())
    assert again["runs_trained_this_invocation"] == 1
    assert again["summary"] == r["summary"]
    kept = json.loads((keep / "seed-0.json").read_text())
    assert kept == {"setting": again["setting"], "run": again["runs"]["0"]}
    # a fresh clone (empty work folder) with the kept seed trains nothing
    fresh = [*cmd[:-4], "--out", str(tmp_path / "fresh"), "--results", str(res), "--keep",
             str(keep)]  # fmt: skip
    code, output = crash_child.python(fresh, env, tmp_path / "fresh.log", 120)
    assert code == 0, output[-2000:]
    third = json.loads(res.read_text())
    assert third["runs_trained_this_invocation"] == 0
    assert third["summary"] == r["summary"] and third["runs"] == again["runs"]


def test_a_seed_kept_under_another_setting_trains_again(tmp_path, monkeypatch):
    kept = tmp_path / "seed-0.json"
    kept.write_text(json.dumps({"setting": {**bench.QUICK, "moe_tokens": 1}, "run": {"old": 0}}))
    monkeypatch.setattr(bench, "train_seed", lambda s, runs, seed: {"new": seed})
    assert bench.seed_run(bench.QUICK, None, 0, tmp_path) == {"new": 0}
    assert json.loads(kept.read_text()) == {"setting": bench.QUICK, "run": {"new": 0}}
    monkeypatch.setattr(bench, "train_seed", lambda *a: pytest.fail("trained a kept seed"))
    assert bench.seed_run(bench.QUICK, None, 0, tmp_path) == {"new": 0}  # now kept: reused

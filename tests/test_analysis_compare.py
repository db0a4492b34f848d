"""growlm compare: equal-loss speedups with a known answer, plots, report, user errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from growlm.analysis.runs import load_run
from growlm.analysis.speedup import cost_at_loss, speedup_at
from growlm.cli import main

PNG = b"\x89PNG\r\n\x1a\n"


def write_run(
    folder: Path,
    flops: np.ndarray,
    loss: np.ndarray,
    stages: list[str] | None = None,
    time_scale: float = 1e-9,
    tokens_per_flop: float = 1e-6,
    val_every: int = 1,
) -> Path:
    folder.mkdir(parents=True)
    stages = stages or ["scratch"] * len(flops)
    with (folder / "metrics.jsonl").open("w") as fh:
        for i, (c, val, stage) in enumerate(zip(flops, loss, stages, strict=True)):
            rec = {
                "step": i + 1,
                "stage": stage,
                "tokens": c * tokens_per_flop,
                "flops": c,
                "attn_flops": 0.0,
                "loss": val + 0.05,
                "lr": 1e-3,
                "grad_norm": 1.0,
                "tokens_per_s": 1.0,
                "elapsed": c * time_scale,
            }
            if i % val_every == 0:
                rec["val_loss"] = float(val)
            fh.write(json.dumps(rec) + "\n")
    return folder


def curve(flops: np.ndarray) -> np.ndarray:
    return 2.0 * (flops / 1e12) ** -0.25 + 1.5


@pytest.fixture
def shifted(tmp_path):
    """A reference and the same curve reached with 1/1.6 of the FLOPs (speedup 0.6), noisy."""
    rng = np.random.default_rng(0)
    flops = np.geomspace(1e12, 1e15, 40)
    noisy = curve(flops) + rng.normal(0, 0.01, flops.size)
    ref = write_run(tmp_path / "scratch", flops, noisy)
    stages = ["base"] * 10 + ["grown"] * 30
    run = write_run(tmp_path / "stack", flops / 1.6, noisy, stages, time_scale=1.25e-9)
    return ref, run


def test_shifted_curve_gives_exact_factor(shifted):
    ref, run = (load_run(p) for p in shifted)
    for level in np.linspace(ref.best[1], ref.best[-1], 15):
        s = speedup_at(ref, run, float(level))
        assert s.speedup["flops"] == pytest.approx(0.6, rel=1e-9)
        assert s.speedup["tokens"] == pytest.approx(0.6, rel=1e-9)
        # time per FLOP is 1.25x the reference's: 1.6 / 1.25 - 1
        assert s.speedup["time"] == pytest.approx(1.6 / 1.25 - 1, rel=1e-9)


def test_interpolation_in_log_cost():
    cost = np.array([1e10, 1e12])
    best = np.array([3.0, 2.0])
    assert cost_at_loss(cost, best, 2.5) == pytest.approx(1e11)  # halfway in log10
    assert cost_at_loss(cost, best, 1.9) is None


def test_running_minimum_ignores_noise_bumps(tmp_path):
    flops = np.geomspace(1e12, 1e14, 5)
    run = load_run(write_run(tmp_path / "r", flops, np.array([3.0, 2.5, 2.9, 2.4, 2.6])))
    assert run.best.tolist() == [3.0, 2.5, 2.5, 2.4, 2.4]


def test_compare_cli_outputs(shifted, tmp_path, capsys):
    ref, run = shifted
    out = tmp_path / "cmp"
    # --all-evals: the fixture's geometric spacing differs by 1.6x between the runs by design
    assert main(["compare", str(ref), str(run), "--out", str(out), "--all-evals"]) == 0
    assert "flops +60.0%" in capsys.readouterr().out
    summary = json.loads((out / "summary.json").read_text())
    entry = summary["runs"]["stack"]
    assert entry["speedup_flops"] == pytest.approx(0.6)
    assert entry["speedup_tokens"] == pytest.approx(0.6)
    assert entry["speedup_time"] == pytest.approx(0.28)
    assert entry["stages"] == ["base", "grown"] and len(entry["growth_flops"]) == 1
    assert all(r["speedup"]["flops"] == pytest.approx(0.6) for r in entry["levels"])
    # power-law fit of the last stage also lands near +60% (curves are identical up to shift)
    fit = entry["speedup_flops_fit"]
    assert fit["speedup"] == pytest.approx(0.6, abs=0.15)
    for name in summary["plots"]:
        data = (out / name).read_bytes()
        assert data.startswith(PNG) and len(data) > 5000
    report = (out / "report.md").read_text()
    assert "| stack |" in report and "+60.0%" in report and "loss_vs_flops.png" in report


def test_run_that_never_reaches_reference_loss(tmp_path):
    flops = np.geomspace(1e12, 1e15, 20)
    ref = write_run(tmp_path / "ref", flops, curve(flops))
    worse = write_run(tmp_path / "worse", flops, curve(flops) + 0.3)
    from growlm.analysis.compare import compare

    summary = compare([ref, worse], tmp_path / "out", plots=False, bootstrap=20)
    entry = summary["runs"]["worse"]
    assert entry["speedup_flops"] is None and not entry["reached_reference_loss"]
    assert "never reaches" in entry["note"]
    assert "never reached" in (tmp_path / "out" / "report.md").read_text()


def test_plots_of_a_run_without_speedups_warn_nothing(tmp_path):
    """No speedup line to label (the demo at small --scale): no empty-legend warning."""
    import warnings

    flops = np.geomspace(1e12, 1e15, 20)
    ref = write_run(tmp_path / "ref", flops, curve(flops))
    above = write_run(tmp_path / "above", flops, curve(flops) + 3.0)  # no loss level in common
    from growlm.analysis.compare import compare

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        summary = compare([ref, above], tmp_path / "out", plots=True, bootstrap=20)
    assert "speedup_vs_loss.png" in summary["plots"]
    assert all(r["speedup"]["flops"] is None for r in summary["runs"]["above"]["levels"])


@pytest.mark.parametrize("case", ["missing", "no_val", "one_run"])
def test_user_errors_one_line(case, tmp_path, capsys):
    flops = np.geomspace(1e12, 1e14, 5)
    ok = write_run(tmp_path / "ok", flops, curve(flops))
    if case == "missing":
        argv, needle = [str(ok), str(tmp_path / "nope")], "does not exist"
    elif case == "no_val":
        bad = write_run(tmp_path / "bad", flops, curve(flops), val_every=10**9)
        for line in (bad / "metrics.jsonl").read_text().splitlines():
            assert "val_loss" not in line or line.startswith('{"step": 1,')
        (bad / "metrics.jsonl").write_text(
            "\n".join(
                json.dumps({k: v for k, v in json.loads(x).items() if k != "val_loss"})
                for x in (bad / "metrics.jsonl").read_text().splitlines()
            )
        )
        argv, needle = [str(ok), str(bad)], "no val_loss"
    else:
        argv, needle = [str(ok)], "at least one other run"
    assert main(["compare", *argv, "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and needle in err and err.count("\n") == 1


def test_small_model_evals_do_not_enter_the_grown_runs_minimum(tmp_path):
    """A small model (6N/4 FLOPs per token) that alone reaches the reference's final loss must
    not be credited to growth: the grown run is read on its target-size evaluations only."""
    flops = np.geomspace(1e12, 1e15, 20)
    ref = write_run(tmp_path / "scratch", flops, curve(flops))
    folder = tmp_path / "grown"
    folder.mkdir()
    with (folder / "metrics.jsonl").open("w") as fh:
        tokens, c = 0.0, 0.0
        small = [3.0, 2.0, 1.6]  # small model: lower than scratch's final loss (~1.856)
        grown = [3.5, 2.2, 1.95, 1.9]  # target size: never reaches it
        for i, val in enumerate(small + grown):
            stage, rate = ("base", 1.5e6) if i < len(small) else ("stacked", 6e6)
            tokens += 1e8
            c += rate * 1e8
            rec = {"step": i + 1, "stage": stage, "tokens": tokens, "flops": c, "val_loss": val}
            fh.write(json.dumps(rec) + "\n")
    runs = [load_run(ref), load_run(folder)]
    from growlm.analysis.compare import compare_runs

    new = compare_runs(runs, bootstrap=0, equal_spacing=False)["runs"]["grown"]
    assert new["speedup_flops"] is None and not new["reached_reference_loss"]
    assert runs[1].target_mask().tolist() == [False] * 3 + [True] * 4
    old = compare_runs(runs, include_small_model_evals=True, bootstrap=0, equal_spacing=False)
    assert old["runs"]["grown"]["speedup_flops"] > 1.0  # the small model's evals credited


def test_equal_flops_spacing_removes_extra_draws_at_the_minimum(tmp_path):
    """Same curve; the second run evaluates 4x as often and its extra evaluations happen to be
    lucky (0.05 low). Read at the common spacing it ties the reference exactly."""
    flops = np.linspace(1e13, 4e14, 40)
    ref = write_run(tmp_path / "ref", flops[::4], curve(flops[::4]))
    lucky = curve(flops) - 0.05 * (np.arange(40) % 4 != 0)
    dense = write_run(tmp_path / "dense", flops, lucky)
    from growlm.analysis.compare import compare_runs

    runs = [load_run(ref), load_run(dense)]
    fair = compare_runs(runs, bootstrap=0)
    assert fair["eval_spacing_flops"] == pytest.approx(4 * (flops[1] - flops[0]))
    assert fair["runs"]["dense"]["speedup_flops"] == pytest.approx(0.0, abs=1e-12)
    old = compare_runs(runs, bootstrap=0, equal_spacing=False)
    assert old["runs"]["dense"]["speedup_flops"] > 0.05  # more draws bought a "speedup"

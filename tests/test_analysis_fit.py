"""Loss-curve fits and the guideline fit recover known parameters from noisy synthetic data."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from growlm.analysis.fit import extrapolated_speedup, fit_power_law
from growlm.analysis.guideline import Guideline, save_guideline
from growlm.analysis.guideline_fit import SweepPoint, best_timing, fit_guideline
from growlm.cli import main


def test_power_law_recovers_parameters():
    rng = np.random.default_rng(3)
    cost = np.geomspace(1e15, 1e18, 60)
    loss = 3.0 * (cost / 1e15) ** -0.3 + 1.5 + rng.normal(0, 0.003, cost.size)
    fit = fit_power_law(cost, loss, bootstrap=100)
    assert fit.b == pytest.approx(0.3, abs=0.03)
    assert fit.c == pytest.approx(1.5, abs=0.06)
    assert fit.a * (fit.c0 / 1e15) ** fit.b == pytest.approx(3.0, rel=0.05)  # a at C0 = 1e15
    assert fit.r2 > 0.999
    for key, true in (("b", 0.3), ("c", 1.5)):
        lo, hi = fit.intervals[key]
        assert lo <= true <= hi  # the 90% bootstrap interval covers the truth here
    assert float(fit.loss(1e19)) == pytest.approx(3.0 * 1e4**-0.3 + 1.5, abs=0.02)


def test_extrapolated_speedup_beyond_measured_range():
    rng = np.random.default_rng(4)
    cost = np.geomspace(1e15, 1e17, 40)
    ref = fit_power_law(
        cost, 2.0 * (cost / 1e15) ** -0.25 + 2.0 + rng.normal(0, 0.002, 40), bootstrap=100
    )
    fast = fit_power_law(
        cost, 2.0 * (1.5 * cost / 1e15) ** -0.25 + 2.0 + rng.normal(0, 0.002, 40), bootstrap=100
    )
    level = 2.0 * 1e3**-0.25 + 2.0  # the reference's loss at 1e18: beyond both curves
    out = extrapolated_speedup(ref, fast, level)
    assert out["speedup"] == pytest.approx(0.5, abs=0.1)
    lo, hi = out["interval"]
    assert lo < out["speedup"] < hi


def test_fit_needs_points():
    with pytest.raises(Exception, match="needs >= 4"):
        fit_power_law(np.array([1.0, 2.0]), np.array([3.0, 2.0]))


def test_best_timing_parabola_vertex():
    d_star = 3e9
    pts = [
        SweepPoint(1e9, 1e21, d, 4, 2.0 + 0.2 * (math.log10(d / d_star)) ** 2)
        for d in (1e9, 2e9, 5e9, 1e10)
    ]
    d, loss = best_timing(pts)
    assert d == pytest.approx(d_star, rel=1e-6) and loss == pytest.approx(2.0)


def test_guideline_fit_recovers_coefficients_and_factor():
    rng = np.random.default_rng(5)
    true = Guideline(alpha=0.7, beta=120.0, gamma=-3.0)
    pts = []
    for n in (1e7, 4e7, 1.6e8):
        for c in (1e16, 1e17, 1e18):
            ds = true.growth_tokens(n, c)
            for k in (0.25, 0.5, 1.0, 2.0, 4.0):
                loss = 3.0 + 0.1 * math.log10(k) ** 2 + rng.normal(0, 2e-4)
                pts.append(SweepPoint(n, c, ds * k, 4, loss))
                pts.append(SweepPoint(n, c, ds * k, 2, loss + 0.02))
    g = fit_guideline(pts)
    assert g.alpha == pytest.approx(0.7, abs=0.05)
    assert g.beta == pytest.approx(120.0, rel=0.05)
    assert g.gamma == pytest.approx(-3.0, abs=0.5)
    assert g.growth_factor == 4
    assert g.extra["fitted"] == ["gamma", "alpha", "beta"] and g.extra["r2"] > 0.99


def test_one_size_keeps_paper_alpha():
    pts = [
        SweepPoint(1e6, c, d, 2, 3.0 + abs(math.log10(d) - 3.5 - 0.1 * i))
        for i, c in enumerate((1e12, 1e13))
        for d in (1e3, 1e4)
    ]
    g = fit_guideline(pts)
    assert g.alpha == 0.88 and "alpha" in g.extra["fixed"]


def test_fit_sweep_cli_writes_guideline_plan_reads(tmp_path, capsys):
    true = Guideline(alpha=0.5, beta=50.0, gamma=-1.0)
    runs = {}
    for n in (1e6, 4e6):
        for c in (1e13, 1e14):
            for k in (0.5, 1.0, 2.0):
                d = true.growth_tokens(n, c) * k
                runs[f"{n}-{c}-{k}"] = {
                    "params": n,
                    "compute": c,
                    "growth_tokens": d,
                    "growth_factor": 2,
                    "best_val_loss": 3 + math.log10(k) ** 2,
                }
    (tmp_path / "sweep.json").write_text(json.dumps({"runs": runs}))
    assert main(["fit", "--sweep", str(tmp_path)]) == 0
    gl = json.loads((tmp_path / "guideline.json").read_text())
    assert gl["alpha"] == pytest.approx(0.5, abs=1e-6) and gl["growth_factor"] == 2
    capsys.readouterr()
    argv = [
        "plan",
        "--params",
        "2e6",
        "--tokens",
        "1e6",
        "--guideline",
        str(tmp_path / "guideline.json"),
        "--json",
    ]
    assert main(argv) == 0
    plan = json.loads(capsys.readouterr().out)
    assert plan["growth_tokens"] == pytest.approx(true.growth_tokens(2e6, 1.2e13), rel=1e-6)
    assert plan["growth_factor"] == 2 and plan["advice"]["growth"]["query_inside_fitted_range"]
    assert [w for w in plan["warnings"] if "guideline" in w] == []


def test_the_irreducible_loss_is_never_fitted_below_zero():
    """A curve that is still a pure power law over the measured range (no visible floor) used
    to get a large negative c, which extrapolates to nonsense; c is held at >= 0."""
    from growlm.analysis.fit import fit_power_law

    rng = np.random.default_rng(0)
    cost = np.geomspace(1e12, 6e13, 18)
    loss = 6.0 * (cost / 1e12) ** -0.12 + rng.normal(0.0, 0.01, cost.size)
    fit = fit_power_law(cost, loss, bootstrap=50)
    assert fit.c >= 0.0 and all(row[2] >= 0.0 for row in fit.samples)
    assert abs(fit.b - 0.12) < 0.03
    assert abs(fit.loss(6e14) - 6.0 * 600**-0.12) < 0.1  # 10x beyond the data


def test_guideline_fit_flags_edge_optimum_and_exact_fit(tmp_path, capsys):
    """One (N, C) point whose best d is the grid's last value: the old fit returned gamma from
    that one point with no flag and no uncertainty; now it says why it is not usable."""
    pts = [SweepPoint(1e6, 1e13, d, 4, 3.0 - 0.1 * i) for i, d in enumerate((1e4, 2e4, 4e4))]
    g = fit_guideline(pts)
    assert g.extra["usable"] is False and g.extra["stderr"] is None
    text = " ".join(g.extra["problems"])
    assert "edge of the grid" in text and "no uncertainty" in text
    save_guideline(g, tmp_path / "g.json")
    argv = ["plan", "--params", "1e6", "--tokens", "1e7", "--guideline", str(tmp_path / "g.json")]
    assert main([*argv, "--json"]) == 0
    plan = json.loads(capsys.readouterr().out)
    assert any("flagged by growlm fit" in w and "edge of the grid" in w for w in plan["warnings"])


def test_guideline_fit_reports_standard_errors():
    true = Guideline(alpha=0.6, beta=80.0, gamma=-2.0)
    rng = np.random.default_rng(1)
    pts = []
    for n in (1e6, 3e6, 1e7):
        for c in (1e13, 1e14, 1e15):
            ds = true.growth_tokens(n, c) * 10 ** rng.normal(0, 0.02)
            for k in (0.5, 1.0, 2.0):
                pts.append(SweepPoint(n, c, ds * k, 4, 3 + math.log10(k) ** 2))
    g = fit_guideline(pts)
    se = g.extra["stderr"]
    assert g.extra["usable"] and g.extra["residual_dof"] == 6
    assert set(se) == {"alpha", "beta", "gamma"} and all(v > 0 for v in se.values())
    assert abs(g.alpha - 0.6) < 4 * se["alpha"] + 1e-9

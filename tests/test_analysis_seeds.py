"""Across-seed statistics and per-arm lr tuning (issue 19): every seed counts, same lr grid."""

from __future__ import annotations

import math

import pytest

from growlm.analysis.errors import AnalysisError
from growlm.analysis.seeds import across_seeds, best_lr_per_arm, t_critical_95


def test_mean_sd_and_t_interval():
    s = across_seeds([0.1, 0.3, 0.2])
    assert s["mean"] == pytest.approx(0.2) and s["sd"] == pytest.approx(0.1)
    half = 4.303 * 0.1 / math.sqrt(3)
    assert s["t95"] == pytest.approx([0.2 - half, 0.2 + half])
    assert s["censored"] == 0 and not s["upper_bound"]


def test_t_critical_matches_scipy():
    stats = pytest.importorskip("scipy.stats")
    for df in (1, 2, 5, 29, 30, 31, 60, 200):
        assert t_critical_95(df) == pytest.approx(stats.t.ppf(0.975, df), rel=1e-3)


def test_a_seed_that_never_reaches_the_target_is_counted_not_dropped():
    """Dropping the failed seed would report mean 0.5 over 2 seeds; it enters at its bound."""
    s = across_seeds([0.5, None, 0.5], bounds=[None, -0.1, None])
    assert s["seeds"] == 3 and s["reached"] == 2 and s["censored"] == 1
    assert s["entered_as"] == [0.5, -0.1, 0.5]
    assert s["mean"] == pytest.approx(0.3) and s["upper_bound"]
    assert s["t95"][0] < 0 < s["t95"][1]


def test_censored_seed_without_bound_withholds_statistics():
    s = across_seeds([0.5, None, 0.4])
    assert s["mean"] is None and s["t95"] is None and "never reached" in s["note"]


def test_best_lr_per_arm_same_grid_edge_flag():
    res = best_lr_per_arm(
        {
            "scratch": {1e-3: 3.2, 2e-3: 3.1, 4e-3: 3.15},
            "grown": {1e-3: 3.0, 2e-3: 3.05, 4e-3: 3.3},
        }
    )
    assert res["arms"]["scratch"] == {"lr": 2e-3, "loss": 3.1, "at_edge": False}
    assert res["arms"]["grown"]["lr"] == 1e-3 and res["arms"]["grown"]["at_edge"]
    with pytest.raises(AnalysisError, match="same grid"):
        best_lr_per_arm({"a": {1e-3: 1.0, 2e-3: 1.0, 3e-3: 1.0}, "b": {1e-3: 1.0, 2e-3: 1.0}})
    with pytest.raises(AnalysisError, match="at least 3"):
        best_lr_per_arm({"a": {1e-3: 1.0, 2e-3: 1.0}, "b": {1e-3: 1.0, 2e-3: 1.0}})

"""Fit the growth-timing guideline from a sweep, the paper's method: for every target size N
and budget C, the growth timing d with the lowest final loss (a parabola in log10 d through the
grid when it has three or more points and a minimum inside it), then least squares of
log10(d*) = alpha log10(N) + beta / log10(C) + gamma. Coefficients the sweep cannot identify
(one size: alpha; one budget: beta) stay at the paper's values and are listed in ``fixed``."""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from dataclasses import dataclass
from typing import Any

import numpy as np

from growlm.analysis.errors import FitFailed
from growlm.analysis.guideline import PAPER, Guideline


@dataclass
class SweepPoint:
    """One grown run: target params N, budget C (FLOPs), growth timing d, factor g, loss."""

    params: float
    compute: float
    growth_tokens: float
    growth_factor: int
    loss: float


def best_timing(points: list[SweepPoint]) -> tuple[float, float]:
    """(d*, loss at d*) among runs of one (N, C, g)."""
    pts = sorted(points, key=lambda p: p.growth_tokens)
    x = np.log10([p.growth_tokens for p in pts])
    y = np.array([p.loss for p in pts])
    k = int(np.argmin(y))
    if len(set(x.tolist())) >= 3:
        c2, c1, c0 = np.polyfit(x, y, 2)
        if c2 > 0:
            vertex = -c1 / (2 * c2)
            if x.min() <= vertex <= x.max():
                return float(10**vertex), float(c0 + c1 * vertex + c2 * vertex**2)
    return float(10 ** x[k]), float(y[k])


def fit_guideline(points: list[SweepPoint], base: Guideline = PAPER) -> Guideline:
    """The guideline that best explains the sweep's optimal growth timings."""
    if not points:
        raise FitFailed("no grown runs to fit a guideline on")
    groups: dict[tuple[float, float], dict[int, list[SweepPoint]]] = defaultdict(
        lambda: defaultdict(list)
    )
    for p in points:
        groups[(p.params, float(f"{p.compute:.3g}"))][p.growth_factor].append(p)
    best: list[dict[str, Any]] = []
    g_wins: Counter[int] = Counter()
    for (n, c), by_g in sorted(groups.items()):
        per_g = {g: best_timing(pts) for g, pts in by_g.items()}
        g_best = min(per_g, key=lambda g: per_g[g][1])
        g_wins[g_best] += 1
        d, loss = per_g[g_best]
        best.append(
            {
                "params": n,
                "compute": c,
                "growth_factor": g_best,
                "growth_tokens": d,
                "loss": loss,
                "per_factor": {str(g): v[0] for g, v in per_g.items()},
            }
        )
    g_star = max(sorted(g_wins), key=lambda g: g_wins[g])
    rows = [b for b in best if b["growth_factor"] == g_star] or best
    logn = np.array([math.log10(b["params"]) for b in rows])
    invc = np.array([1.0 / math.log10(b["compute"]) for b in rows])
    y = np.array([math.log10(b["growth_tokens"]) for b in rows])
    coef = {"alpha": base.alpha, "beta": base.beta, "gamma": base.gamma}
    free = ["gamma"]
    if len(set(logn.round(6))) > 1:
        free.append("alpha")
    if len(set(invc.round(9))) > 1:
        free.append("beta")
    columns = {"alpha": logn, "beta": invc, "gamma": np.ones_like(y)}
    while True:
        a_mat = np.stack([columns[k] for k in free], axis=1)
        if len(rows) >= len(free) and np.linalg.matrix_rank(a_mat) == len(free):
            break
        free.pop()  # drop beta, then alpha, when the design cannot separate them
    target = y - sum(columns[k] * coef[k] for k in coef if k not in free)
    sol, *_ = np.linalg.lstsq(a_mat, target, rcond=None)
    coef.update({k: float(v) for k, v in zip(free, sol, strict=True)})
    pred = coef["alpha"] * logn + coef["beta"] * invc + coef["gamma"]
    ss_tot = float(np.sum((y - y.mean()) ** 2))
    r2 = 1.0 - float(np.sum((y - pred) ** 2)) / ss_tot if ss_tot > 0 else None
    return Guideline(
        alpha=coef["alpha"],
        beta=coef["beta"],
        gamma=coef["gamma"],
        growth_factor=g_star,
        params_range=(float(min(b["params"] for b in best)), float(max(b["params"] for b in best))),
        compute_range=(
            float(min(b["compute"] for b in best)),
            float(max(b["compute"] for b in best)),
        ),
        source="growlm fit (sweep)",
        extra={
            "fitted": free,
            "fixed": {k: coef[k] for k in coef if k not in free},
            "r2": r2,
            "best": best,
            "growth_factor_wins": {str(g): n for g, n in g_wins.items()},
        },
    )

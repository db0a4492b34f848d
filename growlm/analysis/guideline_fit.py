"""Fit the growth-timing guideline from a sweep, the paper's method: for every target size N
and budget C, the growth timing d with the lowest final loss (a parabola in log10 d through the
grid when it has three or more points and a minimum inside it), then least squares of
log10(d*) = alpha log10(N) + beta / log10(C) + gamma. Coefficients the sweep cannot identify
(one size: alpha; one budget: beta) stay at the paper's values and are listed in ``fixed``.

A fit is only as good as its points, so the guideline carries ``problems`` (and ``usable`` is
false when there are any): an optimum d at the edge of its grid (the true optimum may lie
outside it), or as many (N, C) points as free coefficients (an exact fit: no residual, no
uncertainty). Standard errors of the fitted coefficients come from the residual variance of the
least squares (``stderr``), when there are more points than coefficients."""

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
    d, loss, _ = best_timing_info(points)
    return d, loss


def best_timing_info(points: list[SweepPoint]) -> tuple[float, float, bool]:
    """(d*, loss at d*, at_edge): at_edge when the lowest loss is the grid's first or last d
    (or the grid has one d) and no parabola vertex lies inside the grid."""
    pts = sorted(points, key=lambda p: p.growth_tokens)
    x = np.log10([p.growth_tokens for p in pts])
    y = np.array([p.loss for p in pts])
    k = int(np.argmin(y))
    if len(set(x.tolist())) >= 3:
        c2, c1, c0 = np.polyfit(x, y, 2)
        if c2 > 0:
            vertex = -c1 / (2 * c2)
            if x.min() <= vertex <= x.max():
                return float(10**vertex), float(c0 + c1 * vertex + c2 * vertex**2), False
    edge = len(set(x.tolist())) < 2 or x[k] in (x.min(), x.max())
    return float(10 ** x[k]), float(y[k]), bool(edge)


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
        per_g = {g: best_timing_info(pts) for g, pts in by_g.items()}
        g_best = min(per_g, key=lambda g: per_g[g][1])
        g_wins[g_best] += 1
        d, loss, edge = per_g[g_best]
        best.append(
            {
                "params": n,
                "compute": c,
                "growth_factor": g_best,
                "growth_tokens": d,
                "loss": loss,
                "at_grid_edge": edge,
                "grid": sorted({p.growth_tokens for p in by_g[g_best]}),
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
    ss_res = float(np.sum((y - pred) ** 2))
    r2 = 1.0 - ss_res / ss_tot if ss_tot > 0 else None
    dof = len(rows) - len(free)
    stderr: dict[str, float] | None = None
    problems: list[str] = []
    if dof > 0:
        cov = ss_res / dof * np.linalg.inv(a_mat.T @ a_mat)
        stderr = {k: float(math.sqrt(max(cov[i, i], 0.0))) for i, k in enumerate(free)}
    else:
        problems.append(
            f"{', '.join(free)} fitted from {len(rows)} (N, C) point(s): an exact fit with no "
            "residual, so no uncertainty; sweep more sizes or budgets"
        )
    for b in rows:
        if b["at_grid_edge"]:
            grid = ", ".join(f"{d:.3g}" for d in b["grid"])
            problems.append(
                f"at N={b['params']:.3g}, C={b['compute']:.3g} the best d ({b['growth_tokens']:.3g}"
                f") is at the edge of the grid [{grid}]: the optimum may lie outside it; "
                "extend the grid"
            )
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
            "points": len(rows),
            "residual_dof": dof,
            "stderr": stderr,
            "problems": problems,
            "usable": not problems,
            "best": best,
            "growth_factor_wins": {str(g): n for g, n in g_wins.items()},
        },
    )

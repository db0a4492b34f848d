"""Loss-curve fits L(C) = a (C / C0)^-b + c (C0 = the first point's cost, for conditioning),
used to extrapolate a run's loss, and the cost it needs for a loss, beyond what it measured.

The fit profiles out c: for each c below the lowest loss, log(L - c) is linear in log C, which
gives a and b by least squares; c minimises the squared error in loss space (a 1-D search on a
grid then golden-section refinement). No initial guess is needed, unlike a raw 3-parameter
curve_fit. Intervals come from a residual bootstrap (refit on fitted + resampled residuals),
which keeps the x design of a training curve."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from growlm.analysis.errors import FitFailed


@dataclass
class PowerLawFit:
    """Fitted parameters with R^2 and bootstrap percentile intervals."""

    a: float
    b: float
    c: float
    c0: float
    r2: float
    n: int
    intervals: dict[str, tuple[float, float]] = field(default_factory=dict)
    samples: np.ndarray | None = None  # bootstrap (a, b, c) rows

    def loss(self, cost: float | np.ndarray) -> Any:
        return self.a * (np.asarray(cost, dtype=float) / self.c0) ** (-self.b) + self.c

    def cost(self, loss: float) -> float | None:
        """Cost at which the fitted curve reaches ``loss`` (None below the asymptote c)."""
        return _cost(self.a, self.b, self.c, self.c0, loss)

    def to_json(self) -> dict[str, Any]:
        return {
            "form": "L(C) = a * (C / C0)^-b + c",
            "a": self.a,
            "b": self.b,
            "c": self.c,
            "C0": self.c0,
            "r2": self.r2,
            "points": self.n,
            "intervals": {k: list(v) for k, v in self.intervals.items()},
        }


def _cost(a: float, b: float, c: float, c0: float, loss: float) -> float | None:
    if loss <= c or a <= 0 or b <= 0:
        return None
    return float(c0 * ((loss - c) / a) ** (-1.0 / b))


def _linear_given_c(x: np.ndarray, y: np.ndarray, c: float) -> tuple[float, float, float]:
    """(a, b, sse) for fixed c: log(y - c) = log a - b x with x = log(C / C0)."""
    z = np.log(y - c)
    slope, intercept = np.polyfit(x, z, 1)
    a, b = math.exp(intercept), -slope
    sse = float(np.sum((a * np.exp(-b * x) + c - y) ** 2))
    return a, b, sse


def _fit_once(x: np.ndarray, y: np.ndarray) -> tuple[float, float, float]:
    top = float(np.min(y))
    span = float(np.max(y) - top) or abs(top) or 1.0
    lo_c = top - 50.0 * span
    grid = top - span * np.geomspace(1e-4, 50.0, 60)  # candidate asymptotes below the data
    floor = 0.0 if top > 0 else lo_c  # a cross-entropy's irreducible part is never negative
    grid = np.append(grid[grid > floor], floor) if top > 0 else grid
    errors = [_linear_given_c(x, y, float(c))[2] for c in grid]
    k = int(np.argmin(errors))
    lo = float(grid[min(k + 1, len(grid) - 1)])
    hi = float(grid[max(k - 1, 0)])
    phi = (math.sqrt(5) - 1) / 2
    for _ in range(60):  # golden section on the profile error between the neighbours
        m1, m2 = hi - phi * (hi - lo), lo + phi * (hi - lo)
        if _linear_given_c(x, y, m1)[2] < _linear_given_c(x, y, m2)[2]:
            hi = m2
        else:
            lo = m1
    c = max((lo + hi) / 2, floor)
    a, b, _ = _linear_given_c(x, y, c)
    return _refine(x, y, a, b, c, floor)


def _refine(
    x: np.ndarray, y: np.ndarray, a: float, b: float, c: float, floor: float = -math.inf
) -> tuple[float, float, float]:
    """Levenberg-Marquardt steps on (log a, b, c) for the squared error in loss space (the
    profile's a, b minimise it in log space, which weights the tail differently)."""
    p = np.array([math.log(a), b, c])

    def sse(q: np.ndarray) -> float:
        return float(np.sum((np.exp(q[0] - q[1] * x) + q[2] - y) ** 2))

    best, lam = sse(p), 1e-3
    for _ in range(50):
        term = np.exp(p[0] - p[1] * x)
        r = term + p[2] - y
        jac = np.stack([term, -x * term, np.ones_like(x)], axis=1)
        h = jac.T @ jac
        step = np.linalg.solve(h + lam * np.diag(np.diag(h) + 1e-12), -jac.T @ r)
        trial = p + step
        value = sse(trial)
        if value < best and trial[1] > 0 and floor <= trial[2] < float(y.min()):
            converged = best - value < 1e-12 * max(best, 1e-300)
            p, best, lam = trial, value, lam / 3
            if converged:
                break
        else:
            lam *= 10
            if lam > 1e8:
                break
    return float(math.exp(p[0])), float(p[1]), float(p[2])


def fit_power_law(
    cost: np.ndarray, loss: np.ndarray, bootstrap: int = 200, seed: int = 0, level: float = 0.9
) -> PowerLawFit:
    """Fit L(C) = a (C/C0)^-b + c; ``bootstrap`` resamples give ``level`` intervals."""
    cost = np.asarray(cost, dtype=float)
    loss = np.asarray(loss, dtype=float)
    keep = np.isfinite(cost) & np.isfinite(loss) & (cost > 0)
    cost, loss = cost[keep], loss[keep]
    if cost.size < 4 or np.ptp(np.log(cost)) == 0:
        raise FitFailed(
            f"a loss-curve fit needs >= 4 evaluations at distinct costs, got {cost.size} "
            "(evaluate more often: run.eval_every)"
        )
    c0 = float(cost.min())
    x = np.log(cost / c0)
    a, b, c = _fit_once(x, loss)
    pred = a * np.exp(-b * x) + c
    ss_tot = float(np.sum((loss - loss.mean()) ** 2)) or 1e-300
    r2 = 1.0 - float(np.sum((loss - pred) ** 2)) / ss_tot
    result = PowerLawFit(a, b, c, c0, r2, int(cost.size))
    if bootstrap > 0:
        rng = np.random.default_rng(seed)
        resid = loss - pred
        rows = []
        for _ in range(bootstrap):
            y = pred + rng.choice(resid, size=resid.size, replace=True)
            try:
                rows.append(_fit_once(x, y))
            except (ValueError, FloatingPointError, np.linalg.LinAlgError):
                continue
        if rows:
            result.samples = np.array(rows)
            q = ((1 - level) / 2 * 100, (1 + level) / 2 * 100)
            for i, key in enumerate("abc"):
                lo, hi = np.percentile(result.samples[:, i], q)
                result.intervals[key] = (float(lo), float(hi))
    return result


def extrapolated_speedup(
    ref: PowerLawFit, run: PowerLawFit, loss: float, level: float = 0.9
) -> dict[str, Any]:
    """C_ref(L) / C_run(L) - 1 from two fitted curves, with a bootstrap interval when both fits
    carry samples (paired by index). None where a curve's asymptote lies above L."""
    cr, cu = ref.cost(loss), run.cost(loss)
    out: dict[str, Any] = {"loss": loss, "speedup": None, "interval": None}
    if cr is not None and cu is not None:
        out["speedup"] = cr / cu - 1.0
    if ref.samples is not None and run.samples is not None:
        n = min(len(ref.samples), len(run.samples))
        values = []
        for (a1, b1, c1), (a2, b2, c2) in zip(ref.samples[:n], run.samples[:n], strict=True):
            x1 = _cost(a1, b1, c1, ref.c0, loss)
            x2 = _cost(a2, b2, c2, run.c0, loss)
            if x1 is not None and x2 is not None:
                values.append(x1 / x2 - 1.0)
        if len(values) >= max(10, n // 2):
            q = ((1 - level) / 2 * 100, (1 + level) / 2 * 100)
            lo, hi = np.percentile(values, q)
            out["interval"] = [float(lo), float(hi)]
    return out

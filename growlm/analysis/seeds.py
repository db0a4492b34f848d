"""Statistics across seeds and learning rates, for claims about training (issue 19).

- ``across_seeds``: mean, standard deviation (n - 1) and a two-sided Student-t interval over
  seeds. Every seed is included. A seed whose grown run never reaches the target loss is
  *censored*, not dropped: it enters at a bound the caller supplies (for an equal-loss speedup,
  C_ref(L) / C_run_final - 1, since the run needs more than its final FLOPs, so its true
  speedup is at most that). With any censored seed the mean and interval are upper bounds
  and say so (``upper_bound``); without a bound the statistics are withheld, not computed on
  the seeds that happened to succeed.
- ``best_lr_per_arm``: every arm tuned on the same grid of at least three learning rates, the
  best of each arm used; a best value at the edge of the grid is flagged (tune further).
"""

from __future__ import annotations

import math
from typing import Any

from growlm.analysis.errors import AnalysisError

# two-sided 95% critical values of Student's t, df = 1..30 (beyond: an expansion in 1/df)
_T95 = (
    12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228,
    2.201, 2.179, 2.160, 2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086,
    2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042,
)  # fmt: skip


def t_critical_95(df: int) -> float:
    """Two-sided 95% quantile of Student's t with ``df`` degrees of freedom."""
    if df < 1:
        raise ValueError("a t-interval needs at least 2 seeds (df >= 1)")
    if df <= len(_T95):
        return _T95[df - 1]
    return 1.959964 + 2.3722 / df + 2.8224 / df**2  # Cornish-Fisher, < 0.01% off past 30


def across_seeds(
    values: list[float | None], bounds: list[float | None] | None = None
) -> dict[str, Any]:
    """Mean, sd and 95% t-interval over seeds. ``values[i]`` is None for a censored seed (it
    never reached the target); ``bounds[i]`` is then the value it enters with (an upper bound)."""
    n = len(values)
    if n == 0:
        raise AnalysisError("no seeds to summarise")
    bounds = bounds or [None] * n
    if len(bounds) != n:
        raise AnalysisError("one bound per seed (None where the seed reached the target)")
    censored = [i for i, v in enumerate(values) if v is None]
    entered = [v if v is not None else bounds[i] for i, v in enumerate(values)]
    out: dict[str, Any] = {
        "seeds": n,
        "reached": n - len(censored),
        "censored": len(censored),
        "values": values,
        "entered_as": entered,
        "rule": "every seed included; a seed that never reaches the target enters at its "
        "bound (upper bound on its value), which makes mean and interval upper bounds",
        "upper_bound": bool(censored),
        "mean": None,
        "sd": None,
        "t95": None,
    }
    if any(v is None for v in entered):
        out["note"] = (
            f"{len(censored)} of {n} seed(s) never reached the target and have no bound: "
            "no statistics (the reached seeds alone would overstate the result)"
        )
        return out
    xs = [float(v) for v in entered if v is not None]
    mean = sum(xs) / n
    out["mean"] = mean
    if n >= 2:
        sd = math.sqrt(sum((x - mean) ** 2 for x in xs) / (n - 1))
        half = t_critical_95(n - 1) * sd / math.sqrt(n)
        out["sd"] = sd
        out["t95"] = [mean - half, mean + half]
    else:
        out["note"] = "one seed: no spread, no interval"
    return out


def best_lr_per_arm(results: dict[str, dict[float, float]], min_grid: int = 3) -> dict[str, Any]:
    """``results[arm][lr] = final loss``. Every arm must share one grid of >= ``min_grid``
    learning rates; returns each arm's best lr and loss, and flags a best at the grid's edge."""
    if not results:
        raise AnalysisError("no arms to tune")
    grids = {arm: sorted(r) for arm, r in results.items()}
    first = next(iter(grids.values()))
    for arm, grid in grids.items():
        if grid != first:
            raise AnalysisError(
                f"arm {arm!r} was tuned on lr {grid}, another on {first}: tune every arm on "
                "the same grid"
            )
    if len(first) < min_grid:
        raise AnalysisError(
            f"lr grid {first} has {len(first)} value(s): tune on at least {min_grid} per arm"
        )
    out: dict[str, Any] = {"grid": first, "arms": {}}
    for arm, by_lr in results.items():
        lr = min(first, key=lambda v: (by_lr[v], v))
        entry: dict[str, Any] = {
            "lr": lr,
            "loss": by_lr[lr],
            "at_edge": lr in (first[0], first[-1]),
        }
        if entry["at_edge"]:
            entry["note"] = f"best lr {lr:g} is at the edge of the grid: extend the grid"
        out["arms"][arm] = entry
    return out

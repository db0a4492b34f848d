"""Speedup at equal validation loss, as the paper defines it: C_ref(L) / C_run(L) - 1, with C
the cumulative cost (FLOPs with the small model's training included, tokens, or seconds) at
which a run's running-minimum validation loss first reaches L.

Between two evaluations the cost is interpolated linearly in log(cost) against loss, so a run
whose costs are the reference's divided by k gives exactly k - 1 at every level. A level a run
never reaches gives ``None``; a level reached already at its first evaluation is reported as
that evaluation's cost (an upper bound on the true cost).

Two rules keep the comparison fair (issue 19):
- a grown run's curve is read on the *target-size* model's evaluations only (its small model's
  FLOPs are counted, but the small model's own evaluations do not enter the running minimum;
  ``include_small_model_evals=True`` restores the old behaviour);
- every run is read at the same FLOPs spacing (``spacing``: the first evaluation in each FLOPs
  bin of that width, counted from its first evaluation, is kept), so a run evaluated more
  often gets no extra draws at the minimum.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from growlm.analysis.runs import AXES, Run


def cost_at_loss(cost: np.ndarray, best: np.ndarray, level: float) -> float | None:
    """First cost at which the non-increasing curve ``best`` reaches ``level`` (or None)."""
    reached = np.nonzero(best <= level)[0]
    if reached.size == 0:
        return None
    i = int(reached[0])
    if i == 0 or not (cost[i - 1] > 0 and cost[i] > 0):
        return float(cost[i])
    hi, lo = best[i - 1], best[i]  # hi > level >= lo
    frac = (hi - level) / (hi - lo)
    log_c = math.log(cost[i - 1]) + frac * (math.log(cost[i]) - math.log(cost[i - 1]))
    return float(math.exp(log_c))


@dataclass
class Speedup:
    """Speedups of one run against the reference at one loss level (None: not reached)."""

    loss: float
    cost_ref: dict[str, float | None]
    cost_run: dict[str, float | None]
    speedup: dict[str, float | None]


def eval_mask(
    run: Run, include_small_model_evals: bool = False, spacing: float = 0.0
) -> np.ndarray:
    """The evaluations a run is read on: the target-size model's (or all), thinned to the first
    evaluation in each FLOPs bin of width ``spacing`` counted from the first of them (0: no
    thinning). The rule looks at FLOPs only, never at losses."""
    mask = np.ones(len(run.val_loss), bool) if include_small_model_evals else run.target_mask()
    if spacing > 0:
        last_bin = None
        kept = np.nonzero(mask)[0]
        origin = run.flops[kept[0]] if kept.size else 0.0
        for i in kept:
            b = math.floor((run.flops[i] - origin) / spacing + 1e-9)
            if b == last_bin:
                mask[i] = False
            last_bin = b
    return mask


def eval_spacing(runs: list[Run], include_small_model_evals: bool = False) -> float:
    """The common FLOPs spacing: the sparsest run's median gap between the evaluations it is
    read on (so thinning never invents points, only drops extra ones)."""
    gaps = []
    for run in runs:
        f = run.flops[eval_mask(run, include_small_model_evals)]
        if f.size >= 2:
            gaps.append(float(np.median(np.diff(f))))
    return max(gaps) if gaps else 0.0


def running_best(run: Run, include_small_model_evals: bool = False, spacing: float = 0.0) -> Any:
    """(mask, running minimum of val_loss over the masked evaluations)."""
    mask = eval_mask(run, include_small_model_evals, spacing)
    return mask, np.minimum.accumulate(run.val_loss[mask])


def speedup_at(
    ref: Run,
    run: Run,
    level: float,
    include_small_model_evals: bool = False,
    spacing: float = 0.0,
) -> Speedup:
    """Speedups in FLOPs, tokens and time at loss ``level`` (see the module docstring for the
    evaluations each run is read on)."""
    cref: dict[str, float | None] = {}
    crun: dict[str, float | None] = {}
    out: dict[str, float | None] = {}
    mref, bref = running_best(ref, include_small_model_evals, spacing)
    mrun, brun = running_best(run, include_small_model_evals, spacing)
    for axis in AXES:
        a = cost_at_loss(ref.axis(axis)[mref], bref, level)
        b = cost_at_loss(run.axis(axis)[mrun], brun, level)
        cref[axis], crun[axis] = a, b
        out[axis] = a / b - 1.0 if a is not None and b is not None and b > 0 else None
    return Speedup(level, cref, crun, out)


def shared_levels(
    ref: Run,
    run: Run,
    count: int = 25,
    include_small_model_evals: bool = False,
    spacing: float = 0.0,
) -> np.ndarray:
    """Loss levels both runs reach after their first evaluation, evenly spaced, highest first."""
    bref = running_best(ref, include_small_model_evals, spacing)[1]
    brun = running_best(run, include_small_model_evals, spacing)[1]
    hi = min(float(bref[0]), float(brun[0]))
    lo = max(float(bref[-1]), float(brun[-1]))
    if not hi > lo:
        return np.array([lo]) if lo <= hi else np.array([])
    return np.linspace(hi, lo, count + 1)[1:]

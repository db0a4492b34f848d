"""Speedup at equal validation loss, as the paper defines it: C_ref(L) / C_run(L) - 1, with C
the cumulative cost (FLOPs with the small model's training included, tokens, or seconds) at
which a run's running-minimum validation loss first reaches L.

Between two evaluations the cost is interpolated linearly in log(cost) against loss, so a run
whose costs are the reference's divided by k gives exactly k - 1 at every level. A level a run
never reaches gives ``None``; a level reached already at its first evaluation is reported as
that evaluation's cost (an upper bound on the true cost)."""

from __future__ import annotations

import math
from dataclasses import dataclass

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


def speedup_at(ref: Run, run: Run, level: float, only_final_stage: bool = False) -> Speedup:
    """Speedups in FLOPs, tokens and time at loss ``level``."""
    cref: dict[str, float | None] = {}
    crun: dict[str, float | None] = {}
    out: dict[str, float | None] = {}
    mask = run.final_stage_mask() if only_final_stage else np.ones(len(run.val_loss), bool)
    for axis in AXES:
        a = cost_at_loss(ref.axis(axis), ref.best, level)
        b = cost_at_loss(run.axis(axis)[mask], np.minimum.accumulate(run.val_loss[mask]), level)
        cref[axis], crun[axis] = a, b
        out[axis] = a / b - 1.0 if a is not None and b is not None and b > 0 else None
    return Speedup(level, cref, crun, out)


def shared_levels(ref: Run, run: Run, count: int = 25) -> np.ndarray:
    """Loss levels both runs reach after their first evaluation, evenly spaced, highest first."""
    hi = min(float(ref.best[0]), float(run.best[0]))
    lo = max(float(ref.best[-1]), float(run.best[-1]))
    if not hi > lo:
        return np.array([lo]) if lo <= hi else np.array([])
    return np.linspace(hi, lo, count + 1)[1:]

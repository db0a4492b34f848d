"""``growlm compare``: equal-loss speedups of runs against a reference (the first run, usually
trained from scratch), written as summary.json, plots and a Markdown report.

Headline numbers are taken at the reference's final (running-minimum) validation loss; the
per-level table covers every loss both runs reach. Each run is read on its target-size model's
evaluations (a grown run's small model counts in FLOPs, not in the running minimum) and at one
common FLOPs spacing of evaluations (see growlm/analysis/speedup.py). When a run never reaches
the reference's final loss, a power-law fit of each run's target-size evaluations extrapolates
the speedup (marked as such).
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from growlm.analysis.errors import AnalysisError, FitFailed
from growlm.analysis.fit import PowerLawFit, extrapolated_speedup, fit_power_law
from growlm.analysis.runs import Run, load_run, unique_names
from growlm.analysis.speedup import eval_spacing, running_best, shared_levels, speedup_at
from growlm.io.atomic import write_text_atomic


def compare_runs(
    runs: list[Run],
    levels: int = 25,
    include_small_model_evals: bool = False,
    bootstrap: int = 200,
    equal_spacing: bool = True,
) -> dict[str, Any]:
    """The summary: per run, speedups at the reference's final loss and at shared levels."""
    if len(runs) < 2:
        raise AnalysisError("compare needs a reference run and at least one other run")
    ref = runs[0]
    small = include_small_model_evals
    spacing = eval_spacing(runs, small) if equal_spacing else 0.0
    target = float(running_best(ref, small, spacing)[1][-1])
    ref_fit = _tail_fit(ref, bootstrap)
    out: dict[str, Any] = {
        "reference": ref.name,
        "reference_final_loss": target,
        "definition": "speedup = C_ref(L) / C_run(L) - 1 at equal validation loss L; C is "
        "cumulative (the small model's training included); running minimum of val_loss over "
        + (
            "every evaluation, the small model's included (old behaviour)"
            if small
            else "the target-size model's evaluations only"
        )
        + "; interpolated in log(cost) between evaluations",
        "small_model_evals_in_minimum": small,
        "eval_spacing_flops": spacing or None,
        "eval_spacing_rule": "first evaluation in each FLOPs bin of this width (the sparsest "
        "run's median gap), every run alike"
        if spacing
        else "every evaluation as logged",
        "runs": {},
    }
    for run in runs:
        head = speedup_at(ref, run, target, small, spacing)
        rows = [
            asdict(speedup_at(ref, run, float(level), small, spacing))
            for level in shared_levels(ref, run, levels, small, spacing)
        ]
        entry: dict[str, Any] = {
            "path": str(run.path),
            "final_val_loss": float(run.val_loss[-1]),
            "best_val_loss": float(run.best[-1]),
            "best_val_loss_target_size": float(running_best(run, False, 0.0)[1][-1]),
            "final_flops": float(run.flops[-1]),
            "final_tokens": float(run.tokens[-1]),
            "final_time": float(run.time[-1]),
            "stages": [b[0] for b in run.boundaries],
            "growth_flops": [b[1] for b in run.boundaries[1:]],
            "reached_reference_loss": head.cost_run["flops"] is not None,
            "speedup_flops": head.speedup["flops"],
            "speedup_tokens": head.speedup["tokens"],
            "speedup_time": head.speedup["time"],
            "flops_to_reference_loss": head.cost_run["flops"],
            "levels": rows,
        }
        if run is not ref and head.cost_run["flops"] is None:
            entry["note"] = f"never reaches the reference's final loss {target:.4f}"
        fit = _tail_fit(run, bootstrap)
        if fit is not None:
            entry["fit"] = fit.to_json()
            if ref_fit is not None and run is not ref:
                entry["speedup_flops_fit"] = extrapolated_speedup(ref_fit, fit, target)
        out["runs"][run.name] = entry
    return out


def _tail_fit(run: Run, bootstrap: int) -> PowerLawFit | None:
    """Power law through the target-size model's evaluations (growth breaks the curve's form)."""
    mask = run.target_mask()
    try:
        return fit_power_law(run.flops[mask], run.val_loss[mask], bootstrap=bootstrap)
    except FitFailed:
        return None


def compare(
    paths: list[Path],
    out_dir: Path,
    levels: int = 25,
    include_small_model_evals: bool = False,
    attn_flops: bool = False,
    plots: bool = True,
    bootstrap: int = 200,
    equal_spacing: bool = True,
) -> dict[str, Any]:
    """Load runs, compute the summary, write OUT/summary.json, plots and OUT/report.md."""
    if levels < 1:
        raise AnalysisError(f"--levels must be >= 1, got {levels}")
    if out_dir.exists() and not out_dir.is_dir():
        raise AnalysisError(f"--out {str(out_dir)!r} is a file, not a folder: choose another --out")
    names = unique_names(paths)
    runs = [load_run(p, n, attn_flops) for p, n in zip(paths, names, strict=True)]
    summary = compare_runs(runs, levels, include_small_model_evals, bootstrap, equal_spacing)
    summary["flops_include_attention"] = attn_flops
    out_dir.mkdir(parents=True, exist_ok=True)
    images: list[str] = []
    if plots:
        from growlm.analysis.plots import plot_comparison

        images = plot_comparison(runs, summary, out_dir)
    summary["plots"] = images
    write_text_atomic(out_dir / "summary.json", json.dumps(summary, indent=2, default=_json) + "\n")
    from growlm.analysis.report import comparison_report

    write_text_atomic(out_dir / "report.md", comparison_report(summary, images))
    return summary


def _json(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")

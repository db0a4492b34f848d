"""``growlm plan``: an advisor. Given a target size N and a budget (D tokens or C FLOPs) it
says (1) the compute-optimal size for that budget (growlm/analysis/scaling.py: Chinchilla's
parametric fit by default) and warns when the target is far from it, and (2) the paper's growth
recipe: train a model g times shallower for d tokens, stack it g times, keep training, with
whether growth is expected to pay off, the guideline used and whether the query lies inside the
range it was fitted on, and the measured saving with its spread (or "not measured").

FLOPs follow the paper's (and the trainer's) convention C = 6 N D, the small model's training
included. The grown run spends less than a scratch run of the same D because its first d tokens
go through the small model; ``flops_saved`` reports that share.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

from growlm.analysis.errors import AnalysisError
from growlm.analysis.guideline import PAPER, Guideline
from growlm.analysis.params import ModelSpec, count_params
from growlm.analysis.scaling import CHINCHILLA, ScalingLaw

OVERSIZED = 2.0  # warn when the target is this many times N_opt (or 1/this)


@dataclass
class Plan:
    """The guideline's answer and the two stages it implies."""

    params: float
    tokens: float
    compute: float
    growth_tokens: float
    growth_factor: int
    small_params: float
    small_params_exact: bool
    target_layers: int | None
    small_layers: int | None
    base_flops: float
    grown_flops: float
    total_flops: float
    flops_saved: float | None  # None: no usable plan, so no saving is stated
    usable: bool
    guideline: dict[str, Any]
    advice: dict[str, Any] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def make_plan(
    params: float | None = None,
    tokens: float | None = None,
    compute: float | None = None,
    model: ModelSpec | None = None,
    guideline: Guideline = PAPER,
    growth_factor: int | None = None,
    growth_tokens: float | None = None,
    scaling: ScalingLaw = CHINCHILLA,
) -> Plan:
    """The plan for a target of ``params`` (or counted from ``model``) and ``tokens`` or
    ``compute`` (one of them); ``growth_tokens`` overrides the guideline's d. Without a model
    shape the small model's size is approximated as N / g (embeddings ignored) and says so."""
    if model is not None and params is None:
        params = float(count_params(model))
    if params is None:
        raise AnalysisError("give the target size: --params N or --model CONFIG")
    if not math.isfinite(params) or params <= 0:
        raise AnalysisError(f"--params must be a positive number of parameters, got {params:g}")
    if (tokens is None) == (compute is None):
        raise AnalysisError("give exactly one budget: --tokens D or --compute C")
    if tokens is not None:
        if not math.isfinite(tokens) or tokens <= 0:
            raise AnalysisError(f"--tokens must be positive, got {tokens:g}")
        compute = 6.0 * params * tokens
        if not math.isfinite(compute):
            raise AnalysisError(f"6 N D = 6 x {params:g} x {tokens:g} overflows: realistic sizes")
    else:
        assert compute is not None
        if not math.isfinite(compute) or compute <= 6.0 * params:
            raise AnalysisError(f"--compute must exceed 6 N = {6 * params:.3g} FLOPs")
        tokens = compute / (6.0 * params)
    g = int(guideline.growth_factor if growth_factor is None else growth_factor)
    if g < 2:
        raise AnalysisError(f"growth factor must be >= 2, got {g}")
    if growth_tokens is not None:
        if not growth_tokens > 0:
            raise AnalysisError(f"--growth-tokens must be positive, got {growth_tokens:g}")
        d, warnings = float(growth_tokens), []
    else:
        d = guideline.growth_tokens(params, compute)
        warnings = guideline.warnings(params, compute)
    target_layers = small_layers = None
    if model is not None:
        target_layers = model.layers
        if target_layers % g:
            raise AnalysisError(
                f"G_stack needs the target depth ({target_layers}) divisible by g={g}"
            )
        small_layers = target_layers // g
        small = float(count_params(model.with_layers(small_layers)))
    else:
        small = params / g
    usable = d < tokens
    if not usable:
        warnings.append(
            f"growth timing d={d:.3g} tokens is not below the budget D={tokens:.3g}: the "
            "guideline gives no usable plan here (grow earlier, or fit your own guideline)"
        )
    base_tokens = min(d, tokens)
    base = 6.0 * small * base_tokens
    grown = 6.0 * params * (tokens - base_tokens)
    advice = advise(params, tokens, compute, scaling, guideline, usable, growth_tokens is not None)
    warnings = advice.pop("warnings") + warnings
    return Plan(
        params=params,
        tokens=tokens,
        compute=compute,
        growth_tokens=d,
        growth_factor=g,
        small_params=small,
        small_params_exact=model is not None,
        target_layers=target_layers,
        small_layers=small_layers,
        base_flops=base,
        grown_flops=grown,
        total_flops=base + grown,
        flops_saved=1.0 - (base + grown) / compute if usable else None,
        usable=usable,
        advice=advice,
        guideline={
            "growth_tokens": "given" if growth_tokens is not None else "guideline",
            "alpha": guideline.alpha,
            "beta": guideline.beta,
            "gamma": guideline.gamma,
            "source": guideline.source,
        },
        warnings=warnings,
    )


def advise(
    params: float,
    tokens: float,
    compute: float,
    scaling: ScalingLaw,
    guideline: Guideline,
    usable: bool,
    d_given: bool,
) -> dict[str, Any]:
    """The compute-optimal size at C and whether growth is expected to pay off; ``warnings``
    holds the sentences the plan prints first."""
    n_opt = scaling.optimal_params(compute)
    d_opt = compute / (6.0 * n_opt)
    ratio = params / n_opt
    warnings: list[str] = []
    loss_target, loss_opt = scaling.loss(params, tokens), scaling.loss(n_opt, d_opt)
    expected = (
        f" (expected loss {loss_opt:.3f} vs {loss_target:.3f} for the target, in the fit's units)"
        if loss_target is not None and loss_opt is not None
        else ""
    )
    if ratio >= OVERSIZED:
        warnings.append(
            f"the target is oversized for this budget: at C={compute:.3g} FLOPs a model "
            f"{ratio:.1f}x smaller ({_big(n_opt)} params on {_big(d_opt)} tokens, "
            f"{d_opt / n_opt:.0f} tokens/param) alone is expected to reach a lower loss"
            f"{expected}; {scaling.name}: {scaling.source}"
        )
    elif ratio <= 1.0 / OVERSIZED:
        warnings.append(
            f"the target is undersized for this budget: a model {1 / ratio:.1f}x larger "
            f"({_big(n_opt)} params on {_big(d_opt)} tokens) is expected to reach a lower loss"
            f"{expected}; {scaling.name}: {scaling.source}"
        )
    inside_scaling = scaling.inside(n_opt, compute)
    if not inside_scaling:
        warnings.append(
            f"the compute-optimal size comes from {scaling.name} extrapolated outside the range "
            "it was fitted on (measure your own: bench/compute_optimal.py, --scaling FILE)"
        )
    inside = d_given or guideline.inside(params, compute)
    measured = guideline.measured_saving
    if not usable:
        verdict = "no usable plan: no saving is stated"
    elif guideline.problems and not d_given:
        verdict = "unknown: the guideline is flagged (see the warnings)"
    elif not inside:
        verdict = (
            "unknown: the query lies outside the guideline's fitted range, where growth's "
            "saving has not been measured (run bench/compute_optimal.py, or growlm sweep + fit)"
        )
    elif not isinstance(measured, dict):
        verdict = "unknown: the guideline carries no measured saving"
    else:
        t95 = measured.get("t95")
        if isinstance(t95, list) and len(t95) == 2:
            lo, hi = t95
            verdict = (
                "expected: the measured interval lies above zero"
                if lo > 0
                else "not expected: the measured interval lies at or below zero"
                if hi <= 0
                else "not established: the measured interval includes zero"
            )
        else:
            verdict = "reported by the source without a spread (one run per arm)"
    return {
        "scaling": {
            "name": scaling.name,
            "rule": scaling.describe(),
            "inside_fitted_range": inside_scaling,
        },
        "compute": compute,
        "tokens_per_param": tokens / params,
        "optimal_params": n_opt,
        "optimal_tokens": d_opt,
        "optimal_tokens_per_param": d_opt / n_opt,
        "target_over_optimal": ratio,
        "expected_loss_target": loss_target,
        "expected_loss_optimal": loss_opt,
        "growth": {
            "guideline": guideline.source,
            "query_inside_fitted_range": inside,
            "d_given": d_given,
            "pays_off": verdict,
            "expected_saving": measured
            if isinstance(measured, dict) and usable and inside
            else "not stated: no usable plan"
            if not usable
            else "not measured in this regime"
            if isinstance(measured, dict)
            else "not measured",
        },
        "warnings": warnings,
    }


def format_plan(plan: Plan) -> str:
    """Human-readable plan, one fact per line."""
    gl = plan.guideline
    adv = plan.advice
    grow = adv["growth"]
    saving = grow["expected_saving"]
    if isinstance(saving, dict):
        spread = (
            f", 95% t-interval {100 * saving['t95'][0]:+.1f}%..{100 * saving['t95'][1]:+.1f}%"
            if saving.get("t95")
            else ", no spread"
        )
        saving_text = f"{100 * saving['mean']:+.1f}%{spread} ({saving.get('where', '')})"
    else:
        saving_text = str(saving)
    lines = [
        f"compute-optimal size at C = {adv['compute']:.4g} FLOPs: {_big(adv['optimal_params'])} "
        f"params on {_big(adv['optimal_tokens'])} tokens "
        f"({adv['optimal_tokens_per_param']:.0f} tokens/param); {adv['scaling']['rule']}"
        + ("" if adv["scaling"]["inside_fitted_range"] else " [outside its fitted range]"),
        f"target: {adv['target_over_optimal']:.2f}x the compute-optimal size, "
        f"{adv['tokens_per_param']:.3g} tokens/param",
        f"growth pays off: {grow['pays_off']}",
        f"expected saving (equal-loss FLOPs speedup): {saving_text}",
        f"guideline: log10(d) = {gl['alpha']:g} log10(N) + {gl['beta']:g} / log10(C) "
        f"{gl['gamma']:+g}  ({gl['source']}); query "
        + ("inside" if grow["query_inside_fitted_range"] else "outside")
        + " its fitted range",
        f"target N: {_big(plan.params)} params"
        + (f", {plan.target_layers} layers" if plan.target_layers else ""),
        f"budget D: {_big(plan.tokens)} tokens; C = 6 N D = {plan.compute:.4g} FLOPs",
        f"growth timing d: {_big(plan.growth_tokens)} tokens ({plan.growth_tokens:.6g})",
        f"growth factor g: {plan.growth_factor} (G_stack: the small model stacked g times)",
        "small model: "
        + (f"{plan.small_layers} layers, " if plan.small_layers else "")
        + f"{_big(plan.small_params)} params"
        + ("" if plan.small_params_exact else " (approx. N/g; give --model for the exact shape)"),
        f"stage 1 (small, d tokens): {plan.base_flops:.4g} FLOPs",
        f"stage 2 (grown, D - d tokens): {plan.grown_flops:.4g} FLOPs",
        f"total: {plan.total_flops:.4g} FLOPs ({100 * plan.flops_saved:.1f}% below scratch's C;"
        " spent, not a speedup)"
        if plan.flops_saved is not None
        else "total: no usable plan (d >= D), so no saving is stated",
    ]
    lines += [f"warning: {w}" for w in plan.warnings]
    return "\n".join(lines)


def _big(x: float) -> str:
    for unit, scale in (("T", 1e12), ("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if abs(x) >= scale:
            return f"{x / scale:.2f}{unit}"
    return f"{x:.0f}"

"""``growlm plan``: turn a target size N and budget (D tokens or C FLOPs) into the paper's
growth recipe: train a model g times shallower for d tokens, stack it g times, keep training.

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
    flops_saved: float
    guideline: dict[str, Any]
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
    else:
        assert compute is not None
        if not math.isfinite(compute) or compute <= 6.0 * params:
            raise AnalysisError(f"--compute must exceed 6 N = {6 * params:.3g} FLOPs")
        tokens = compute / (6.0 * params)
    g = int(growth_factor or guideline.growth_factor)
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
    if d >= tokens:
        warnings.append(
            f"growth timing d={d:.3g} tokens is not below the budget D={tokens:.3g}: the "
            "guideline gives no usable plan here (grow earlier, or fit your own guideline)"
        )
    base_tokens = min(d, tokens)
    base = 6.0 * small * base_tokens
    grown = 6.0 * params * (tokens - base_tokens)
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
        flops_saved=1.0 - (base + grown) / compute,
        guideline={
            "growth_tokens": "given" if growth_tokens is not None else "guideline",
            "alpha": guideline.alpha,
            "beta": guideline.beta,
            "gamma": guideline.gamma,
            "source": guideline.source,
        },
        warnings=warnings,
    )


def format_plan(plan: Plan) -> str:
    """Human-readable plan, one fact per line."""
    gl = plan.guideline
    lines = [
        f"guideline: log10(d) = {gl['alpha']:g} log10(N) + {gl['beta']:g} / log10(C) "
        f"{gl['gamma']:+g}  ({gl['source']})",
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
        f"total: {plan.total_flops:.4g} FLOPs ({100 * plan.flops_saved:.1f}% below scratch's C)",
    ]
    lines += [f"warning: {w}" for w in plan.warnings]
    return "\n".join(lines)


def _big(x: float) -> str:
    for unit, scale in (("T", 1e12), ("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if abs(x) >= scale:
            return f"{x / scale:.2f}{unit}"
    return f"{x:.0f}"

"""Compute-optimal model size for a FLOPs budget C = 6 N D, for ``growlm plan``'s advice.

Three sources, each named in the plan's output:
- ``chinchilla`` (default): Hoffmann et al. 2022 (arXiv 2203.15556), approach 3, the parametric
  fit L(N, D) = E + A / N^alpha + B / D^beta with E = 1.69, A = 406.4, B = 410.7,
  alpha = 0.34, beta = 0.28. Minimising L at fixed C = 6 N D gives
  N_opt = G (C / 6)^(beta / (alpha + beta)), G = (alpha A / (beta B))^(1 / (alpha + beta)).
  Fitted on runs of ~70M-16B parameters and ~5B-500B tokens (MassiveText, their tokenizer);
  its losses are in their units, so compare them between sizes, not with your own losses.
- ``20tpp``: the rule of thumb D = 20 N, i.e. N_opt = sqrt(C / 120).
- a JSON file: either the parametric form (keys E, A, B, alpha, beta) or a measured ratio
  (key tokens_per_param, e.g. from bench/compute_optimal.py's IsoFLOP sweep), with optional
  params_range, compute_range and source.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from growlm.analysis.errors import AnalysisError


@dataclass(frozen=True)
class ScalingLaw:
    """A compute-optimal rule: parametric L(N, D) or a fixed tokens-per-parameter ratio."""

    name: str
    source: str
    E: float | None = None
    A: float | None = None
    B: float | None = None
    alpha: float | None = None
    beta: float | None = None
    tokens_per_param: float | None = None
    params_range: tuple[float, float] = (0.0, math.inf)
    compute_range: tuple[float, float] = (0.0, math.inf)

    @property
    def parametric(self) -> bool:
        return None not in (self.E, self.A, self.B, self.alpha, self.beta)

    def loss(self, params: float, tokens: float) -> float | None:
        """Predicted loss L(N, D) (None for a ratio rule)."""
        if not self.parametric:
            return None
        assert self.E is not None and self.A is not None and self.B is not None
        assert self.alpha is not None and self.beta is not None
        return self.E + self.A / params**self.alpha + self.B / tokens**self.beta

    def optimal_params(self, compute: float) -> float:
        """N_opt for a budget of ``compute`` FLOPs (C = 6 N D)."""
        if self.parametric:
            assert self.A is not None and self.B is not None
            assert self.alpha is not None and self.beta is not None
            a, b = self.alpha, self.beta
            g = (a * self.A / (b * self.B)) ** (1.0 / (a + b))
            return float(g * (compute / 6.0) ** (b / (a + b)))
        assert self.tokens_per_param is not None
        return math.sqrt(compute / (6.0 * self.tokens_per_param))

    def inside(self, params: float, compute: float) -> bool:
        (n0, n1), (c0, c1) = self.params_range, self.compute_range
        return n0 * 0.99 <= params <= n1 * 1.01 and c0 * 0.99 <= compute <= c1 * 1.01

    def describe(self) -> str:
        if self.parametric:
            return (
                f"L(N,D) = {self.E:g} + {self.A:g}/N^{self.alpha:g} + {self.B:g}/D^{self.beta:g}"
                f" ({self.source})"
            )
        return f"D = {self.tokens_per_param:g} N ({self.source})"


CHINCHILLA = ScalingLaw(
    name="chinchilla",
    source="Hoffmann et al. 2022, approach 3 (arXiv 2203.15556)",
    E=1.69,
    A=406.4,
    B=410.7,
    alpha=0.34,
    beta=0.28,
    params_range=(7e7, 1.6e10),
    compute_range=(6 * 7e7 * 5e9, 6 * 1.6e10 * 5e11),
)
TWENTY = ScalingLaw(
    name="20tpp", source="rule of thumb D = 20 N (Hoffmann et al. 2022)", tokens_per_param=20.0
)
BUILTIN = {"chinchilla": CHINCHILLA, "20tpp": TWENTY}


def load_scaling(spec: str | Path | None) -> ScalingLaw:
    """``chinchilla`` (default), ``20tpp`` or a JSON file (see the module docstring)."""
    if spec is None or str(spec) in BUILTIN:
        return BUILTIN[str(spec or "chinchilla")]
    file = Path(spec)
    try:
        data = json.loads(file.read_text())
    except FileNotFoundError:
        raise AnalysisError(
            f"--scaling {str(file)!r}: no such file (use chinchilla, 20tpp or a JSON fit)"
        ) from None
    except (OSError, json.JSONDecodeError) as exc:
        raise AnalysisError(f"--scaling {str(file)!r} is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise AnalysisError(f"--scaling {str(file)!r}: expected a JSON object")
    keys = ("E", "A", "B", "alpha", "beta")
    numeric = {k: data[k] for k in (*keys, "tokens_per_param") if _is_num(data.get(k))}
    if not (all(k in numeric for k in keys) or "tokens_per_param" in numeric):
        raise AnalysisError(
            f"--scaling {str(file)!r}: needs numeric E, A, B, alpha, beta or tokens_per_param"
        )
    try:
        return ScalingLaw(
            name=file.name,
            source=str(data.get("source") or file),
            params_range=_pair(data.get("params_range")),
            compute_range=_pair(data.get("compute_range")),
            **{k: float(v) for k, v in numeric.items()},
        )
    except (TypeError, ValueError) as exc:
        raise AnalysisError(f"--scaling {str(file)!r}: {exc}") from None


def _is_num(value: Any) -> bool:
    """A positive finite number (JSON's 1e400 reads as inf)."""
    return (
        isinstance(value, int | float)
        and not isinstance(value, bool)
        and math.isfinite(value)
        and value > 0
    )


def _pair(value: Any) -> tuple[float, float]:
    if value is None:
        return (0.0, math.inf)
    lo, hi = value
    return float(lo), float(hi)

"""The growth-timing guideline of Du et al. (2024):
log10(d) = alpha log10(N) + beta / log10(C) + gamma, with d the growth timing in tokens, N the
target's parameter count and C = 6 N D the compute budget in FLOPs; growth factor g = 4.

The paper fitted it on G_stack runs between ~410M and 7B parameters. The compute range is our
inference (the paper does not tabulate it): from a 410M model on tens of billions of tokens
(~1e20 FLOPs) to the 7B model on 750B tokens (6 * 7e9 * 7.5e11 = 3.2e22 FLOPs). Outside that
range the beta / log10(C) term dominates (it grows fast as C shrinks), so ``warnings`` says so.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from growlm.analysis.errors import InvalidGuideline
from growlm.io.atomic import write_text_atomic

PAPER_PARAMS_RANGE = (4.1e8, 7e9)
PAPER_COMPUTE_RANGE = (1e20, 3.2e22)  # inferred, see the module docstring


@dataclass(frozen=True)
class Guideline:
    """Coefficients of the growth-timing equation plus the range they were fitted on."""

    alpha: float = 0.88
    beta: float = 163.27
    gamma: float = -5.74
    growth_factor: int = 4
    params_range: tuple[float, float] = PAPER_PARAMS_RANGE
    compute_range: tuple[float, float] = PAPER_COMPUTE_RANGE
    source: str = "Du et al. 2024 (arXiv 2405.15319)"
    extra: dict[str, Any] = field(default_factory=dict)

    def growth_tokens(self, params: float, compute: float) -> float:
        """Growth timing d in tokens for a target of ``params`` trained with ``compute`` FLOPs."""
        if params <= 0 or compute <= 1:
            raise ValueError("params and compute must be positive")
        log_d = self.alpha * math.log10(params) + self.beta / math.log10(compute) + self.gamma
        return float(10.0**log_d)

    @property
    def problems(self) -> list[str]:
        """What ``growlm fit`` flagged about this guideline (edge optimum, exact fit)."""
        inner = self.extra.get("extra", self.extra)
        found = inner.get("problems") if isinstance(inner, dict) else None
        return [str(p) for p in found] if isinstance(found, list) else []

    @property
    def measured_saving(self) -> dict[str, Any] | None:
        """The equal-loss FLOPs speedup measured where the guideline was fitted (mean, t95,
        seeds, where), if the guideline file carries one."""
        for holder in (self.extra, self.extra.get("extra")):
            if isinstance(holder, dict) and isinstance(holder.get("measured_saving"), dict):
                return dict(holder["measured_saving"])
        return None

    def inside(self, params: float, compute: float) -> bool:
        """Whether (params, compute) lies inside the fitted ranges (1% slack)."""
        (n0, n1), (c0, c1) = self.params_range, self.compute_range
        return n0 * 0.99 <= params <= n1 * 1.01 and c0 * 0.99 <= compute <= c1 * 1.01

    def warnings(self, params: float, compute: float) -> list[str]:
        """Why the equation may not apply at (params, compute): each reason as one sentence."""
        out = [f"the guideline was flagged by growlm fit: {p}" for p in self.problems]
        lo, hi = self.params_range
        if not lo * 0.99 <= params <= hi * 1.01:
            out.append(
                f"N={params:.3g} lies outside the parameter range the guideline was fitted on "
                f"({lo:.3g}-{hi:.3g}, {self.source}): extrapolated d"
            )
        lo, hi = self.compute_range
        if not lo * 0.99 <= compute <= hi * 1.01:
            why = (
                "the beta/log10(C) term grows fast as C shrinks, d is likely meaningless; "
                "fit your own guideline from a sweep (growlm sweep, growlm fit)"
                if compute < lo
                else "extrapolated d"
            )
            out.append(
                f"C={compute:.3g} FLOPs lies outside the compute range the guideline was "
                f"fitted on ({lo:.3g}-{hi:.3g} FLOPs): {why}"
            )
        return out

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["params_range"] = list(self.params_range)
        data["compute_range"] = list(self.compute_range)
        return data


PAPER = Guideline(
    extra={
        "measured_saving": {
            "mean": 0.491,
            "t95": None,
            "seeds": 1,
            "where": "Du et al. 2024: G_stack vs scratch at 1.1B, 8e20 FLOPs (~110 tokens/param),"
            " one run per arm",
        }
    }
)


def load_guideline(path: Path | str) -> Guideline:
    """A guideline JSON written by ``growlm fit`` (keys alpha, beta, gamma; optional
    growth_factor, params_range, compute_range, source)."""
    file = Path(path)
    try:
        data = json.loads(file.read_text())
    except FileNotFoundError:
        raise InvalidGuideline(f"guideline file {str(file)!r} does not exist") from None
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as exc:
        reason = "not UTF-8 text" if isinstance(exc, UnicodeDecodeError) else str(exc)
        raise InvalidGuideline(
            f"guideline file {str(file)!r} is not valid JSON: {reason}"
        ) from None
    if not isinstance(data, dict):
        raise InvalidGuideline(f"guideline file {str(file)!r}: expected a JSON object")
    missing = [k for k in ("alpha", "beta", "gamma") if not isinstance(data.get(k), int | float)]
    if missing:
        raise InvalidGuideline(
            f"guideline file {str(file)!r}: missing numeric key(s) {', '.join(missing)} "
            "(write it with `growlm fit`)"
        )
    try:
        return Guideline(
            alpha=float(data["alpha"]),
            beta=float(data["beta"]),
            gamma=float(data["gamma"]),
            growth_factor=int(data.get("growth_factor") or 4),
            params_range=_pair(data.get("params_range"), (0.0, math.inf)),
            compute_range=_pair(data.get("compute_range"), (0.0, math.inf)),
            source=str(data.get("source") or file),
            extra={k: v for k, v in data.items() if k not in _FIELDS},
        )
    except (TypeError, ValueError) as exc:
        raise InvalidGuideline(f"guideline file {str(file)!r}: {exc}") from None


_FIELDS = {"alpha", "beta", "gamma", "growth_factor", "params_range", "compute_range", "source"}


def _pair(value: Any, default: tuple[float, float]) -> tuple[float, float]:
    if value is None:
        return default
    lo, hi = value
    return float(lo), float(hi)


def save_guideline(guideline: Guideline, path: Path | str) -> None:
    write_text_atomic(path, json.dumps(guideline.to_json(), indent=2) + "\n")

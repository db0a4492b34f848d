"""Operator parameters, declared once: name, type, default, constraint and help.

Each registry entry (``growlm.ops.registry``) lists the ``Param`` objects it takes; parameters
several operators share (``FACTOR``, the width sizes) are declared here once and referenced. From
the declarations come the ``growlm grow`` flags (``growlm.cli``), ``growlm ops``, and the one
check of a growth's parameters (``check_params``), which every path to a plan goes through: the
command line, ``growlm.grow``, ``grow_tensors`` and recipe growth stages alike. What depends on
the source model (``--block`` within its depth, ``--top-k`` within ``--experts``) stays with the
operator that knows it.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from growlm.errors import InvalidGrowth

if TYPE_CHECKING:
    from growlm.ops.registry import Operator


MAX_WIDTH = 1 << 20  # hidden / intermediate size; width index maps are O(width)


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


@dataclass(frozen=True)
class Constraint:
    """What a value must be, in words (``an integer >= 2``) and as a test."""

    text: str
    ok: Callable[[Any], bool]
    choices: tuple[str, ...] = ()


def integer(at_least: int | None = None, text: str | None = None) -> Constraint:
    words = text or ("an integer" if at_least is None else f"an integer >= {at_least}")
    return Constraint(words, lambda v: _is_int(v) and (at_least is None or v >= at_least))


def number(text: str, test: Callable[[float], bool]) -> Constraint:
    return Constraint(text, lambda v: _is_number(v) and not math.isnan(v) and test(v))


def one_of(*words: str) -> Constraint:
    return Constraint(f"one of {', '.join(words)}", lambda v: v in words, words)


@dataclass(frozen=True)
class Param:
    """One operator parameter. ``type`` parses the flag's text (int, float or str);
    ``problem`` replaces the standard refusal ``--flag must be <constraint>, got <value>``
    (formatted with ``value``); ``needs`` explains the value when an operator requires it."""

    name: str
    type: type
    help: str
    constraint: Constraint | None = None
    default: Any = None
    metavar: str | None = None
    problem: str | None = None
    needs: str | None = None

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")

    def refuse(self, value: Any) -> InvalidGrowth:
        if self.problem is not None:
            return InvalidGrowth(self.problem.format(value=value))
        assert self.constraint is not None
        return InvalidGrowth(f"{self.flag} must be {self.constraint.text}, got {value!r}")

    def check(self, value: Any) -> Any:
        """The value when the declaration allows it, else InvalidGrowth (one line)."""
        if self.constraint is not None and not self.constraint.ok(value):
            raise self.refuse(value)
        return value

    def missing(self, op: str) -> InvalidGrowth:
        what = self.needs or (self.constraint.text if self.constraint else self.help)
        return InvalidGrowth(f"{op} needs {self.flag} {self.metavar or 'N'} ({what})")


# -- parameters several operators share ----------------------------------------------------

FACTOR = Param(
    "factor",
    int,
    "growth factor g: the grown depth is g x the source depth",
    integer(2),
    metavar="G",
)
NUM_LAYERS = Param("num_layers", int, "target depth (instead of --factor)", integer(1), metavar="N")
PLACEMENT = Param(
    "placement",
    str,
    "where new blocks go: interleaved with the source's (LLaMA Pro) or on top",
    one_of("interleave", "append"),
    default="interleave",
)
BLOCK = Param("block", int, "layers in the copied block", integer(1), metavar="B")
_SIZE = integer(1, "a positive integer")
HIDDEN_SIZE = Param("hidden_size", int, "grown hidden size", _SIZE)
INTERMEDIATE_SIZE = Param("intermediate_size", int, "grown FFN size", _SIZE)
NUM_HEADS = Param("num_heads", int, "grown number of attention heads", _SIZE)
NUM_KV_HEADS = Param("num_kv_heads", int, "grown number of key/value heads", _SIZE)
WIDTH = (HIDDEN_SIZE, INTERMEDIATE_SIZE, NUM_HEADS, NUM_KV_HEADS)
STEPS = Param(
    "steps",
    int,
    "map-training steps (0 = the initial map: stack / [I; small random])",
    integer(0),
    metavar="K",
    needs="map-training steps; 0 materialises the initial map",
)
LR = Param(
    "lr",
    float,
    "learning rate of the maps",
    number("a number > 0", lambda v: math.isfinite(v) and v > 0),
    default=1e-3,
)
TRAINING = (STEPS, LR)


# -- checking a growth's parameters --------------------------------------------------------


def declared(ops: Sequence[Operator]) -> dict[str, list[Param]]:
    """Parameter name -> its declarations among ``ops`` (two operators may declare one name,
    e.g. --factor for a depth operator and for clone-width)."""
    out: dict[str, list[Param]] = {}
    for op in ops:
        for p in op.params:
            if p not in out.setdefault(p.name, []):
                out[p.name].append(p)
    return out


def check_params(ops: Sequence[Operator], params: Mapping[str, Any]) -> dict[str, Any]:
    """The given (not None) parameters of a growth by ``ops``, each checked against its
    declaration; a parameter no operator declares, or a required one missing, is refused."""
    allowed = declared(ops)
    given = {k: v for k, v in params.items() if v is not None}
    extra = sorted(set(given) - set(allowed))
    if extra:
        names = " + ".join(o.name for o in ops)
        ok = ", ".join("--" + a.replace("_", "-") for a in sorted(allowed)) or "none"
        raise InvalidGrowth(
            f"--{extra[0].replace('_', '-')} does not apply to {names} (its parameters: {ok})"
        )
    for op in ops:
        for p in op.params:
            if p.name in given:
                p.check(given[p.name])
            elif p.name in op.required:
                raise p.missing(op.name)
    return given


def with_defaults(op: Operator, params: Mapping[str, Any]) -> dict[str, Any]:
    """``op``'s parameters from ``params``, its declared defaults where not given."""
    out = {p.name: p.default for p in op.params if p.default is not None}
    out.update({p.name: params[p.name] for p in op.params if params.get(p.name) is not None})
    return out

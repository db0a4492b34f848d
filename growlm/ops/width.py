"""Width growth: the grown sizes an operator asks for and the steps that grow each tensor.

Per tensor and per labelled axis (see ``growlm.arch.spec``):

  direct  every new unit copies an old one (cyclically); readers ("in" axes) are divided by the
          number of copies (Net2Net). Norm statistics are unchanged when every hidden unit is
          copied equally often, so exact for integer hidden factors. A tied head cannot be
          divided without changing the embedding: the division moves into the final norm.
  zero    new units read anything (random) and write nothing: their outgoing weights are zero.
          The residual stream is special: its new dimensions must hold values that leave the
          norms' statistics alone. RMSNorm: new dims hold 0, so mean(x^2) shrinks by H/H'; norm
          weights are scaled by sqrt(H/H') and eps by H/H', which makes the output exact.
          LayerNorm: new dims hold the mean of the old ones (every writer's new rows are the mean
          of its old rows, and sums of means are means), so the mean is unchanged and the
          variance shrinks by H/H' (same correction); new dims leave the norm as beta = 0.
  random  new units random on both sides (not function preserving).
  clone   HyperCloning (Samragh et al. 2024): every width (hidden, ffn, heads, kv heads) times an
          integer factor n, each unit copied n times (head_dim fixed), readers divided by n as
          in direct; then the copies along each read axis get paired noise +eta / -eta, which
          cancels because the copies they read hold equal values. Exact, with cloned rows unequal.
  tokens  TokenFormer parameter tokens (param-tokens): every Pattention layer gets N more
          key/value tokens; new key tokens are 0, so their scores are 0 and GeLU(0) = 0: they
          add nothing; new value tokens are random (a zero value would never get a gradient).
          Not exact: the score normalisation multiplies by sqrt(P), which becomes sqrt(P + N).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch

from growlm.arch import ArchSpec, TensorSpec
from growlm.errors import CorruptCheckpoint, InvalidGrowth
from growlm.ops.axes import AxisMap, Shape
from growlm.ops.growth_plan import Expand, Fill, NormScale, PairNoise, Scale, Step
from growlm.ops.registry import Operator, get_operator


def target_shape(spec: ArchSpec, cfg: dict[str, Any], src: Shape, p: dict[str, Any]) -> Shape:
    """Fill in what the user left out: head_dim stays fixed, heads follow hidden where the family
    derives head_dim from it, kv heads keep the group size."""

    hidden = p.get("hidden_size") or src.hidden
    ffn = p.get("intermediate_size") or src.ffn
    derived_hd = not (spec.keys.head_dim and isinstance(cfg.get(spec.keys.head_dim), int))
    heads = p.get("num_heads")
    if heads is None:
        if derived_hd and hidden != src.hidden:
            if hidden % src.head_dim:
                raise InvalidGrowth(
                    f"--hidden-size {hidden} is not divisible by head_dim {src.head_dim}: "
                    f"use a multiple of {src.head_dim} (head_dim stays fixed)"
                )
            heads = hidden // src.head_dim
        else:
            heads = src.heads
    kv = p.get("num_kv_heads")
    if kv is None:
        group = src.heads // src.kv_heads
        kv = heads // group if heads % group == 0 else src.kv_heads
    new = Shape(hidden=hidden, ffn=ffn, heads=heads, kv_heads=kv, head_dim=src.head_dim)
    for field_name, flag in (
        ("hidden", "hidden-size"),
        ("ffn", "intermediate-size"),
        ("heads", "num-heads"),
        ("kv_heads", "num-kv-heads"),
    ):
        if getattr(new, field_name) < getattr(src, field_name):
            raise InvalidGrowth(
                f"--{flag} {getattr(new, field_name)} is smaller than the source's "
                f"{getattr(src, field_name)}: growth cannot shrink a model"
            )
    if new.heads % new.kv_heads:
        raise InvalidGrowth(
            f"--num-heads {new.heads} is not divisible by --num-kv-heads {new.kv_heads}"
        )
    if derived_hd and new.hidden != new.heads * new.head_dim:
        raise InvalidGrowth(
            f"--hidden-size {new.hidden} is not --num-heads {new.heads} x head_dim "
            f"{new.head_dim}: {spec.name} derives head_dim from hidden/heads, keep them consistent"
        )
    return new


def clone_shape(src: Shape, depth_op: Operator | None, p: dict[str, Any]) -> Shape:
    """HyperCloning: hidden, ffn, heads and kv heads times ``factor`` (head_dim fixed)."""
    if depth_op is not None and any(q.name == "factor" for q in depth_op.params):
        raise InvalidGrowth(
            f"--factor would set both {depth_op.name} and clone-width: grow depth and width in "
            f"two steps (two `growlm grow` runs or two recipe stages)"
        )
    n = p.get("factor")
    if n is None:
        raise get_operator("clone-width").param("factor").missing("clone-width")
    return Shape(
        hidden=src.hidden * n,
        ffn=src.ffn * n,
        heads=src.heads * n,
        kv_heads=src.kv_heads * n,
        head_dim=src.head_dim,
    )


def token_maps(spec: ArchSpec, cfg: dict[str, Any], p: dict[str, Any]) -> dict[str, AxisMap]:
    """param-tokens: every parameter-token axis keeps its P tokens and gets ``new_tokens``."""
    if not spec.keys.param_tokens:
        raise InvalidGrowth(
            f"param-tokens grows Pattention layers and {spec.name} has none: it applies to "
            f"TokenFormer models (model_type tokenformer)"
        )
    n = p["new_tokens"]
    maps = {}
    for kind, key in spec.keys.param_tokens:
        size = cfg.get(key)
        if isinstance(size, bool) or not isinstance(size, int) or size < 1:
            raise CorruptCheckpoint(f"config.json has no valid {key!r} (needed for {spec.name})")
        maps[kind] = AxisMap(
            src_size=size,
            index=torch.cat([torch.arange(size), torch.full((n,), -1)]),
            count=torch.ones(size + n),
        )
    return maps


def _fill(kind: str, ts: TensorSpec, axis_kind: str, direction: str, spec: ArchSpec) -> Fill:
    if axis_kind.startswith("ptok"):  # new key tokens 0 (score 0, GeLU(0) = 0), values random
        return "zero" if direction == "out" else "random"
    if ts.role == "norm":
        return "one"
    if ts.role == "norm_bias":
        return "zero"
    if kind == "random":
        return "zero" if ts.role == "bias" else "random"
    if kind in ("direct", "clone"):
        return "zero"  # never used: copy maps have no new entries
    if axis_kind == "hidden":
        if direction == "out":
            return "mean" if spec.norm == "layer" else "zero"
        return "random"
    if direction == "out":
        return "zero" if ts.role == "bias" or axis_kind in spec.normed_width_axes else "random"
    return "zero"


@dataclass
class WidthGrowth:
    kind: str  # direct | zero | random | clone | tokens
    src: Shape
    new: Shape
    maps: dict[str, AxisMap]
    tied: bool
    snr_db: float = math.inf  # clone: noise of the +eta / -eta pairs

    KINDS = ("direct", "zero", "random", "clone", "tokens")

    def __post_init__(self) -> None:
        # a new width operator's fill must be taught to _fill and preserving, not fall through
        if self.kind not in self.KINDS:
            raise ValueError(f"width fill {self.kind!r} is not one of {', '.join(self.KINDS)}")

    def steps(self, ts: TensorSpec, spec: ArchSpec, final_norm: bool = False) -> list[Step]:
        steps: list[Step] = []
        for dim, ax in enumerate(ts.axes):
            amap = self.maps.get(ax.kind)
            if amap is None or amap.is_identity:
                continue
            fill = _fill(self.kind, ts, ax.kind, ax.direction, spec)
            divide = self.kind in ("direct", "clone") and ax.direction == "in"
            steps.append(Expand(dim, ax.kind, amap, fill, divide))
        if self.kind == "clone" and ts.role == "matrix":
            for dim, ax in enumerate(ts.axes):
                amap = self.maps.get(ax.kind)
                if ax.direction == "in" and amap is not None and not amap.is_identity:
                    steps.append(PairNoise(dim, ax.kind, amap, self.snr_db))
        if ts.role in ("norm", "norm_bias"):
            steps += self._norm_steps(ts, spec, final_norm)
        if ts is spec.embed and spec.embed_scale_sqrt_hidden and self.new.hidden != self.src.hidden:
            steps.append(Scale(math.sqrt(self.src.hidden / self.new.hidden), "sqrt(H/H') embed"))
        return steps

    def _norm_steps(self, ts: TensorSpec, spec: ArchSpec, final_norm: bool) -> list[Step]:
        axis = ts.axes[0].kind
        is_weight = ts.role == "norm"
        out: list[Step] = []
        sizes = {
            "hidden": (self.src.hidden, self.new.hidden),
            "q": (self.src.heads, self.new.heads),
            "kv": (self.src.kv_heads, self.new.kv_heads),
        }
        if self.kind == "zero" and is_weight and axis in sizes and sizes[axis][0] != sizes[axis][1]:
            a, b = sizes[axis]
            out.append(NormScale(math.sqrt(a / b), why="sqrt(old/new) zero-width"))
        if final_norm and self.tied and axis == "hidden":
            amap = self.maps["hidden"]
            if self.kind in ("direct", "clone") and not amap.is_identity:
                out.append(
                    NormScale(1.0 / amap.count, offset_applies=is_weight, why="tied head split")
                )
            if spec.embed_scale_sqrt_hidden and self.new.hidden != self.src.hidden:
                out.append(
                    NormScale(
                        math.sqrt(self.new.hidden / self.src.hidden),
                        offset_applies=is_weight,
                        why="tied embed scale",
                    )
                )
        return out

    def preserving(self, spec: ArchSpec) -> bool:
        if self.kind == "zero":
            # one eps serves every norm: exact only if whole-width q/kv norms grow like hidden
            ratio = self.new.hidden * 1.0 / self.src.hidden
            same = {
                "q": self.new.heads / self.src.heads,
                "kv": self.new.kv_heads / self.src.kv_heads,
            }
            return all(same[a] == ratio for a in spec.normed_width_axes if a in same)
        if self.kind == "random":
            return self.src == self.new
        if self.kind == "clone":
            return True  # every width grows by the same integer factor
        if self.kind == "tokens":
            return False  # the score's sqrt(P) grows (see the module docstring)
        uniform = self.new.hidden % self.src.hidden == 0
        if "q" in spec.normed_width_axes:
            uniform &= self.new.heads % self.src.heads == 0
            uniform &= self.new.kv_heads % self.src.kv_heads == 0
        return uniform


def new_shape(ts: TensorSpec, shape: tuple[int, ...], width: WidthGrowth | None) -> tuple[int, ...]:
    if width is None:
        return shape
    out = list(shape)
    for dim, ax in enumerate(ts.axes):
        amap = width.maps.get(ax.kind)
        if amap is not None:
            assert out[dim] == amap.src_size, (ts.name, shape, ax.kind, amap.src_size)
            out[dim] = amap.new_size
    return tuple(out)

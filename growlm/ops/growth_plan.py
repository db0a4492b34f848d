"""Growth plans: every output tensor with its source tensor and the chain of transforms.

A plan is built from names, shapes and the config alone (no weights), printed by ``--dry-run``,
and executed tensor by tensor, so that the same plan serves streaming from disk, growing a model
in memory, and carrying AdamW moments through growth.

Moments (``mode="exp_avg"`` / ``"exp_avg_sq"``, power p = 1 / 2) follow what the gradient of the
grown model is where the operator preserves the function, so a carried moment is the moment the
large model would have had:
- copied weights (stacked layers, kept units): copied;
- anything new (new units, new blocks, zeroed identity-block writes, fresh tensors): zero;
- a Net2Net split unit (count c copies): its readers were divided by c but their gradient is
  unchanged, so reader moments are copied; the copies' own weights (writers, norm scales,
  biases) each receive 1/c of the gradient: moments divided by c^p;
- a weight rescaled by s to keep the function (norm corrections, Gemma's embedding scale):
  gradient divided by s, moments by s^p;
- HyperCloning (clone-width) moves moments as the Net2Net split (its readers are divided by the
  copy count too). That is exact for the noiseless clone; its +eta / -eta pairs change the grown
  model's gradient by terms of order eta (measured in tests/test_clone_width.py).
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

import torch

from growlm.ops.axes import AxisMap

Mode = Literal["weights", "exp_avg", "exp_avg_sq"]
MOMENT_POWER = {"weights": 0, "exp_avg": 1, "exp_avg_sq": 2}
Fill = Literal["zero", "random", "mean", "one"]


@dataclass
class Context:
    """What a step needs besides its input: the mode, the init std and a per-tensor generator."""

    mode: Mode
    std: float
    norm_offset: float
    generator: torch.Generator


class Step:
    affects_weights = True  # False: the step only changes optimizer moments

    def describe(self) -> str:
        raise NotImplementedError

    def __call__(self, x: torch.Tensor | None, ctx: Context) -> torch.Tensor:
        raise NotImplementedError


@dataclass
class Expand(Step):
    """Grow one dimension along an axis map; new entries get ``fill``; readers of split units are
    divided by the copy count (Net2Net) when ``divide``."""

    dim: int
    axis: str
    amap: AxisMap
    fill: Fill
    divide: bool

    def describe(self) -> str:
        extra = "/count" if self.divide else ""
        new = f", new={self.fill}" if self.amap.has_new else ""
        return (
            f"expand[{self.dim}:{self.axis} {self.amap.src_size}->{self.amap.new_size}{extra}{new}]"
        )

    def __call__(self, x: torch.Tensor | None, ctx: Context) -> torch.Tensor:
        assert x is not None
        idx = self.amap.index.to(x.device)
        count = self.amap.count.to(x.device)
        out = x.index_select(self.dim, idx.clamp(min=0))
        view = [1] * out.dim()
        view[self.dim] = -1
        power = MOMENT_POWER[ctx.mode]
        if self.divide and power == 0:
            out = out / count.to(out.dtype).view(view)
        elif not self.divide and power and bool((self.amap.count > 1).any()):
            out = out / count.pow(power).to(out.dtype).view(view)
        new = (idx < 0).view(view).expand_as(out)
        if not self.amap.has_new:
            return out
        fill = self.fill if ctx.mode == "weights" else "zero"  # new units: no history
        if fill == "zero":
            value = torch.zeros_like(out)
        elif fill == "one":
            value = torch.full_like(out, 1.0 - ctx.norm_offset)
        elif fill == "random":
            value = (
                torch.empty_like(out, dtype=torch.float32)
                .normal_(0.0, ctx.std, generator=ctx.generator)
                .to(out.dtype)
            )
        else:  # mean of the kept entries along this dim (keeps LayerNorm statistics, see width.py)
            kept = x.to(torch.float32).mean(dim=self.dim, keepdim=True).to(out.dtype)
            value = kept.expand_as(out)
        return torch.where(new, value, out)


@dataclass
class PairNoise(Step):
    """HyperCloning's symmetry breaking: along a split "in" axis, the copies of each source unit
    are paired (copy 0 with 1, 2 with 3, ...) and get +eta / -eta; an odd last copy gets none.
    Every copy reads the same input value, so a pair's contributions sum to the unchanged one
    while the cloned rows differ. eta ~ normal(0, sigma) with sigma^2 = mean(x^2) / 10^(snr/10).
    Moments: the step is the identity (they follow the noiseless clone, see the module doc)."""

    dim: int
    axis: str
    amap: AxisMap
    snr_db: float

    def describe(self) -> str:
        return f"noise[{self.dim}:{self.axis} +/-eta pairs, snr {self.snr_db:g} dB]"

    def __call__(self, x: torch.Tensor | None, ctx: Context) -> torch.Tensor:
        assert x is not None
        if ctx.mode != "weights" or math.isinf(self.snr_db) or x.is_meta:
            return x
        partner, sign = _pairs(self.amap)
        xf = x.to(torch.float32)
        sigma = float(xf.pow(2).mean().sqrt()) / 10 ** (self.snr_db / 20)
        z = torch.empty_like(xf).normal_(0.0, sigma, generator=ctx.generator)
        view = [1] * xf.dim()
        view[self.dim] = -1
        eta = z.index_select(self.dim, partner) * sign.view(view)  # exact +eta / -eta pairs
        return (xf + eta).to(x.dtype)


def _pairs(amap: AxisMap) -> tuple[torch.Tensor, torch.Tensor]:
    """For every grown index: the index whose draw it uses and its sign (+1, -1, 0 = no noise).
    Copies of one source unit, in order, pair as (0, 1), (2, 3), ...; an odd last copy is 0."""
    idx = amap.index
    order = torch.sort(idx, stable=True).indices  # copies of a unit adjacent, in grown order
    pos = torch.arange(idx.numel())
    s = idx[order]
    start = torch.ones_like(s, dtype=torch.bool)
    start[1:] = s[1:] != s[:-1]
    group_start = torch.cummax(torch.where(start, pos, torch.zeros_like(pos)), 0).values
    rank = torch.empty_like(idx)
    rank[order] = pos - group_start  # which copy of its source unit each grown index is
    odd = rank % 2 == 1
    partner = pos.clone()
    prev = torch.empty_like(idx)
    prev[order[1:]] = order[:-1]  # the grown index of the previous copy of the same unit
    partner[odd] = prev[odd]
    has_pair = (rank + 1 < amap.count.to(torch.int64)) | odd
    sign = torch.where(odd, -1.0, 1.0) * has_pair * (idx >= 0)
    return partner, sign


@dataclass
class NormScale(Step):
    """Rescale a norm's effective weight ``offset + w`` (Gemma applies 1 + w) by ``mult``."""

    mult: float | torch.Tensor
    offset_applies: bool = True
    why: str = ""

    def describe(self) -> str:
        m = self.mult if isinstance(self.mult, float) else "per-dim"
        return f"norm-scale[{m if isinstance(m, str) else f'{m:.6g}'} {self.why}]".replace(
            " ]", "]"
        )

    def __call__(self, x: torch.Tensor | None, ctx: Context) -> torch.Tensor:
        assert x is not None
        if ctx.mode != "weights":
            return _unscale(x, self.mult, MOMENT_POWER[ctx.mode])
        off = ctx.norm_offset if self.offset_applies else 0.0
        mult = self.mult if isinstance(self.mult, float) else self.mult.to(torch.float32)
        return ((x.to(torch.float32) + off) * mult - off).to(x.dtype)


def _unscale(x: torch.Tensor, mult: float | torch.Tensor, power: int) -> torch.Tensor:
    """A weight scaled by s gets 1/s of the gradient: its moment divided by s^power."""
    m = mult if isinstance(mult, float) else mult.to(torch.float32)
    return (x.to(torch.float32) / m**power).to(x.dtype)


@dataclass
class Scale(Step):
    """Multiply the weights by ``mult`` to keep the function. Moments: divided by mult^p (the
    gradient of a weight scaled by s is 1/s of it), or left as carried when ``keep_moments``
    (Adam's update is invariant to a constant gradient scale: upcycled experts)."""

    mult: float
    why: str = ""
    keep_moments: bool = False

    def describe(self) -> str:
        return f"scale[{self.mult:.6g} {self.why}]".replace(" ]", "]")

    def __call__(self, x: torch.Tensor | None, ctx: Context) -> torch.Tensor:
        assert x is not None
        if ctx.mode != "weights":
            return x if self.keep_moments else _unscale(x, self.mult, MOMENT_POWER[ctx.mode])
        return (x.to(torch.float32) * self.mult).to(x.dtype)


@dataclass
class Zero(Step):
    """Zero the tensor: the block's write to the residual stream vanishes (identity block).
    ``moments_only``: the other tensors of an identity block keep their copied weights but get
    no gradient while its writes are zero, so their carried moments are zero."""

    moments_only: bool = False

    @property
    def affects_weights(self) -> bool:  # type: ignore[override]
        return not self.moments_only

    def describe(self) -> str:
        return "zero"

    def __call__(self, x: torch.Tensor | None, ctx: Context) -> torch.Tensor:
        assert x is not None
        if self.moments_only and ctx.mode == "weights":
            return x
        return torch.zeros_like(x)


@dataclass
class Fresh(Step):
    """A freshly initialised tensor (new block): normal(0, std*std_mult), norms 1, biases 0."""

    shape: tuple[int, ...]
    init: Literal["normal", "zeros", "ones"]
    std_mult: float = 1.0

    def describe(self) -> str:
        return f"init[{self.init}{'' if self.std_mult == 1.0 else f' x{self.std_mult:.3g}'}]"

    def __call__(self, x: torch.Tensor | None, ctx: Context) -> torch.Tensor:
        if ctx.mode != "weights" or self.init == "zeros":
            return torch.zeros(self.shape)
        if self.init == "ones":
            return torch.full(self.shape, 1.0 - ctx.norm_offset)
        out = torch.empty(self.shape)
        return out.normal_(0.0, ctx.std * self.std_mult, generator=ctx.generator)


@dataclass
class TensorPlan:
    """Output tensor ``name`` <- ``source`` (None for fresh) through ``steps``."""

    name: str
    shape: tuple[int, ...]
    source: str | None
    steps: list[Step] = field(default_factory=list)

    def describe(self) -> str:
        chain = " -> ".join(s.describe() for s in self.steps if s.affects_weights) or "copy"
        src = self.source or "(new)"
        return f"{self.name} {list(self.shape)} <- {src}: {chain}"


@dataclass
class GrowthPlan:
    """A whole growth: output tensors in write order, the new config and what to report."""

    op: str
    params: dict[str, Any]
    tensors: list[TensorPlan]
    config: dict[str, Any]
    layer_map: list[dict[str, Any]]
    src_layers: int
    out_layers: int
    function_preserving: bool
    init_std: float
    norm_offset: float
    seed: int = 0
    learned: Any = None  # a learned growth's settings (growlm.ops.ligo_maps): values from its maps

    def execute(
        self,
        get: Callable[[str], torch.Tensor],
        mode: Mode = "weights",
        dtype: torch.dtype | None = None,
        clone: bool = False,
    ):
        """Yield (name, tensor) in plan order, reading each source through ``get``.

        ``clone``: never hand out a source tensor itself (in memory, where sources stay alive);
        streaming from disk reads a fresh tensor per request and needs no extra copy.
        """
        for tp in self.tensors:
            yield tp.name, self.run(tp, get, mode, dtype, clone)

    def run(
        self,
        tp: TensorPlan,
        get: Callable[[str], torch.Tensor],
        mode: Mode = "weights",
        dtype: torch.dtype | None = None,
        clone: bool = False,
    ) -> torch.Tensor:
        """Build one output tensor of the plan."""
        src = get(tp.source) if tp.source is not None else None
        gen = torch.Generator().manual_seed(self.seed ^ zlib.crc32(tp.name.encode()))
        ctx = Context(mode=mode, std=self.init_std, norm_offset=self.norm_offset, generator=gen)
        x = src
        if src is not None and dtype is not None and dtype != src.dtype:
            # another output dtype: compute in the wider of the two, round once at the end
            x = src.to(torch.promote_types(src.dtype, dtype))
        for step in tp.steps:
            x = step(x, ctx)
        assert x is not None, tp.name
        if clone and x is src:
            x = x.clone()
        out_dtype = dtype or (src.dtype if src is not None else torch.float32)
        x = x.to(out_dtype).contiguous()
        assert tuple(x.shape) == tp.shape, (tp.name, tuple(x.shape), tp.shape)
        return x

    def describe(self) -> str:
        return "\n".join(tp.describe() for tp in self.tensors)

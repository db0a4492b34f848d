"""The maps of G_learn (LiGO, Wang et al. 2023, arXiv 2303.00980): the large model's weights as
a learned linear map of the small model's, trained on data with the small model frozen.

Width (``learn-width``): one matrix ``A_a`` [N'_a, N_a] per grown axis kind ``a`` of
``growlm.arch.spec`` (hidden, ffn, q, kv), shared by every layer. Every tensor dimension labelled
with the axis is multiplied by it, whether the tensor writes (out) or reads (in) along it:
``W' = A_out W A_in^T``, biases ``A_out b``, embeddings ``E A_hidden^T``. Fused axes are built
from the same matrices: ffn2 = diag(A_ffn, A_ffn), qkv = diag(A_q, A_kv, A_kv), qkvh = the
per-head interleaving of (A_q, A_kv, A_kv). Norm weights are not width-mapped: old entries are
kept and new ones are 1 (as ``random-width``). ``A_a`` starts as [I; N(0, std)]: the rows of the
units ``random-width`` keeps are one-hot (GQA groups kept as there), the rows of new units are
random (std = initializer_range / sqrt(N_a): a new unit starts about initializer_range times
as large as an old one).

Depth (``learn-depth``): one matrix ``D_k`` [L', L] per per-layer tensor template ``k``
(q_proj.weight, input_layernorm.weight, ...): ``W'_{l,k} = sum_j D_k[l, j] W~_{j,k}`` where
``W~`` is the width-mapped source (width first, then depth). ``D_k`` starts as the stacking
one-hot (layer l <- l mod L). Embeddings, the final norm and the head are not depth-mapped.

At step 0 the materialised learn-depth model is bitwise ``stack``: the one-hot rows are applied
as copies (fp32 arithmetic would be exact too, but a copy does not depend on the backend).

The maps are fitted to data in ``growlm.ops.ligo``; this module holds what they are: the learned
operator and its validated settings, the map matrices and how they compose the large weights.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import torch

from growlm.arch import ArchSpec, TensorSpec, spec_for
from growlm.errors import InvalidGrowth
from growlm.ops.axes import AxisMap, Shape, axis_maps
from growlm.ops.growth_plan import Expand, GrowthPlan, Scale
from growlm.ops.layout import Naming, source_shape
from growlm.ops.params import LR, WIDTH, check_params
from growlm.ops.registry import Operator, get_operator
from growlm.ops.width import target_shape

BASE_AXES = ("hidden", "ffn", "q", "kv")
TRAIN_KEYS = ("steps", "lr")


@dataclass(frozen=True)
class LearnOp:
    """A learned growth: ``learn-depth``, ``learn-width`` or both."""

    depth: Operator | None
    width: Operator | None

    @property
    def name(self) -> str:
        return "+".join(o.name for o in (self.depth, self.width) if o is not None)

    @property
    def skeleton(self) -> str:
        """The plain operator that gives the step-0 shapes, names and layer map."""
        return "+".join(
            op for op, on in (("stack", self.depth), ("random-width", self.width)) if on is not None
        )

    @property
    def operators(self) -> tuple[Operator, ...]:
        return tuple(o for o in (self.depth, self.width) if o is not None)


def parse_learn_op(op: str) -> LearnOp | None:
    """The learned operators of ``op`` (None when it has none); mixing them with plain
    operators is rejected."""
    parts = [get_operator(p) for p in op.split("+")]
    learned = [p for p in parts if p.kind == "trains"]
    if not learned:
        return None
    plain = [p for p in parts if p.kind != "trains"]
    if plain:
        raise InvalidGrowth(
            f"--op {op!r} mixes the learned {learned[0].name} with the plain {plain[0].name}: "
            f"use learn-depth+learn-width, or grow in two steps"
        )
    depth = [p for p in learned if p.layer_map is not None]
    width = [p for p in learned if p.width_fill is not None]
    if len(depth) > 1 or len(width) > 1:
        raise InvalidGrowth(f"--op {op!r} names the same learned operator twice")
    return LearnOp(depth[0] if depth else None, width[0] if width else None)


@dataclass
class Settings:
    op: LearnOp
    skeleton_params: dict[str, Any]
    steps: int
    lr: float


def _merge(key: str, arg: Any, params: dict[str, Any]) -> Any:
    given = params.get(key)
    if arg is not None and given is not None and arg != given:
        raise InvalidGrowth(f"{key} given twice ({arg!r} and params[{key!r}] = {given!r})")
    return arg if arg is not None else given


def settings(op: str, params: dict[str, Any], steps: Any = None, lr: Any = None) -> Settings:
    """Validate a learned growth's operator and parameters (no weights needed)."""
    lop = parse_learn_op(op)
    if lop is None:
        raise InvalidGrowth(f"--op {op!r} has no learned operator (learn-depth, learn-width)")
    merged = {**params, "steps": _merge("steps", steps, params), "lr": _merge("lr", lr, params)}
    given = check_params(lop.operators, merged)
    if lop.width is not None and not any(p.name in given for p in WIDTH):
        raise InvalidGrowth(
            "learn-width needs a larger --hidden-size, --intermediate-size or --num-heads"
        )
    skeleton = {k: v for k, v in given.items() if k not in TRAIN_KEYS}
    return Settings(lop, skeleton, int(given["steps"]), float(given.get("lr", LR.default)))


# -- the maps ------------------------------------------------------------------------------


def _index(
    spec: ArchSpec, names: Iterable[str], layers: int
) -> dict[str, tuple[TensorSpec, int | None]]:
    """Checkpoint name -> (tensor spec, layer or None for global tensors)."""
    naming = Naming.detect(spec, set(names))
    out: dict[str, tuple[TensorSpec, int | None]] = {}
    for ts in spec.global_tensors:
        name = naming.find(ts)
        if name is not None:
            out[name] = (ts, None)
    for i in range(layers):
        for ts in spec.layer_tensors:
            name = naming.find(ts, i)
            if name is not None:
                out[name] = (ts, i)
    return out


def vocab_rows(cfg: dict[str, Any], weights: dict[str, torch.Tensor]) -> int:
    """Rows of the input embedding: every token id must be below this."""
    spec = spec_for(cfg.get("model_type"))
    name = Naming.detect(spec, set(weights)).find(spec.embed)
    if name is None:
        raise InvalidGrowth(f"checkpoint has no {spec.embed.name!r}")
    return int(weights[name].shape[0])


def _init_width(amap: AxisMap, std: float, gen: torch.Generator) -> torch.Tensor:
    """[I; N(0, std)]: kept units one-hot at their place in the grown axis, new units random."""
    a = torch.zeros(amap.new_size, amap.src_size)
    rows = torch.arange(amap.new_size)
    keep = amap.index >= 0
    a[rows[keep], amap.index[keep]] = 1.0
    fresh = int((~keep).sum())
    if fresh:
        a[rows[~keep]] = torch.randn(fresh, amap.src_size, generator=gen) * std
    return a


def _along(x: torch.Tensor, dim: int, a: torch.Tensor) -> torch.Tensor:
    """Multiply dimension ``dim`` of ``x`` by ``a`` [new, old]."""
    return torch.movedim(torch.tensordot(a, x, dims=([1], [dim])), 0, dim)


class Maps:
    """The learned maps of one growth and how they turn frozen small weights into large ones."""

    def __init__(
        self,
        cfg: dict[str, Any],
        weights: dict[str, torch.Tensor],
        s: Settings,
        plan: GrowthPlan,
        seed: int,
        device: torch.device,
    ):
        self.plan = plan
        self.spec = spec = spec_for(cfg.get("model_type"))
        self.device = device
        src_index = _index(spec, weights, plan.src_layers)
        self.out_index = _index(spec, [tp.name for tp in plan.tensors], plan.out_layers)
        self.params: dict[str, torch.Tensor] = {}
        self.compose_flops = 0.0  # FLOPs of one compose() with its backward (set by it)

        # width: one matrix per grown base axis
        self.src_shape: Shape | None = None
        self.new_shape: Shape | None = None
        if s.op.width is not None:
            _, src = source_shape(spec, cfg)
            new = target_shape(spec, cfg, src, s.skeleton_params)
            self.src_shape, self.new_shape = src, new
            amaps = axis_maps(src, new, copy=False)
            for kind in BASE_AXES:
                amap = amaps[kind]
                if amap.is_identity:
                    continue
                gen = torch.Generator().manual_seed((seed ^ zlib.crc32(kind.encode())) & 0xFFFFFFFF)
                std = plan.init_std / math.sqrt(amap.src_size)
                self.params[f"width.{kind}"] = _init_width(amap, std, gen).to(device)

        # per source tensor: width steps (learned) or a fixed value (norms, untouched tensors)
        self.small: dict[str, torch.Tensor] = {}
        self.fixed: dict[str, torch.Tensor] = {}
        self.steps: dict[str, list[Expand | Scale]] = {}
        get = weights.__getitem__
        for tp in plan.tensors:
            src_name = tp.source
            assert src_name is not None, tp.name  # stack / random-width copy every tensor
            if src_name in self.small or src_name in self.fixed:
                continue
            ts, _ = src_index[src_name]
            learned = [st for st in tp.steps if isinstance(st, Expand)]
            if ts.role in ("norm", "norm_bias") or not learned:
                self.fixed[src_name] = plan.run(tp, get).to(device, torch.float32)
                continue
            for ex in learned:
                if ex.axis not in ("hidden", "ffn", "q", "kv", "ffn2", "qkv", "qkvh"):
                    raise InvalidGrowth(
                        f"learn-width cannot map the {ex.axis!r} axis of {tp.name} "
                        f"({spec.name}); grow that family with random-width"
                    )
            steps: list[Expand | Scale] = []
            for step in tp.steps:
                assert isinstance(step, (Expand, Scale)), (tp.name, step.describe())
                steps.append(step)
            self.steps[src_name] = steps
            self.small[src_name] = weights[src_name].to(device, torch.float32)

        # depth: one [L', L] matrix per layer template, starting as the skeleton's layer map
        self.depth = s.op.depth is not None
        self.kind_sources: dict[str, list[str]] = {}
        if self.depth:
            by_kind: dict[str, dict[int, str]] = {}
            for name, (ts, layer) in src_index.items():
                if layer is not None:
                    by_kind.setdefault(ts.name, {})[layer] = name
            kinds = {ts.name for ts, layer in self.out_index.values() if layer is not None}
            for kind in sorted(kinds):
                layers = by_kind[kind]
                self.kind_sources[kind] = [layers[j] for j in range(plan.src_layers)]
                d = torch.zeros(plan.out_layers, plan.src_layers)
                for m in plan.layer_map:
                    d[m["out"], m["src"]] = 1.0
                self.params[f"depth.{kind}"] = d.to(device)
        for p in self.params.values():
            p.requires_grad_(True)

    def _axis(self, kind: str, cache: dict[str, torch.Tensor | None]) -> torch.Tensor | None:
        """The matrix of axis ``kind`` (None = identity), fused axes built from the base ones."""
        if kind in cache:
            return cache[kind]
        p = self.params
        out: torch.Tensor | None
        if kind in BASE_AXES:
            out = p.get(f"width.{kind}")
        else:
            src, new = self.src_shape, self.new_shape
            assert src is not None and new is not None
            d = src.head_dim

            def base(k: str, n_src: int) -> torch.Tensor:
                m = p.get(f"width.{k}")
                return m if m is not None else torch.eye(n_src, device=self.device)

            q = base("q", src.heads * d)
            kv = base("kv", src.kv_heads * d)
            if kind == "ffn2":
                f = base("ffn", src.ffn)
                out = torch.block_diag(f, f)
            elif kind == "qkv":
                out = torch.block_diag(q, kv, kv)
            elif kind == "qkvh":  # per head [q_h; k_h; v_h] (GPT-NeoX: kv heads = heads)
                parts = torch.stack([q, kv, kv]).view(3, new.heads, d, src.heads, d)
                eye = torch.eye(3, device=self.device)
                out = torch.einsum("paibj,pq->apibqj", parts, eye).reshape(
                    3 * new.heads * d, 3 * src.heads * d
                )
            else:  # pragma: no cover - rejected in __init__
                raise AssertionError(kind)
        cache[kind] = out
        return out

    def compose(self, exact: bool = False) -> dict[str, torch.Tensor]:
        """The grown model's weights (float32, plan names) from the current maps.

        ``exact``: one-hot depth rows are applied as copies (materialisation)."""
        cache: dict[str, torch.Tensor | None] = {}
        wide: dict[str, torch.Tensor] = dict(self.fixed)
        flops = 0.0  # 2 per multiply-add: rows(A) x numel(x) per width product
        for name, steps in self.steps.items():
            x = self.small[name]
            for st in steps:
                if isinstance(st, Expand):
                    a = self._axis(st.axis, cache)
                    if a is not None:
                        flops += 2.0 * a.shape[0] * x.numel()
                        x = _along(x, st.dim, a)
                else:
                    x = x * st.mult
            wide[name] = x
        out: dict[str, torch.Tensor] = {}
        mixed: dict[str, list[torch.Tensor]] = {}
        for tp in self.plan.tensors:
            ts, layer = self.out_index[tp.name]
            if not self.depth or layer is None:
                assert tp.source is not None
                out[tp.name] = wide[tp.source]
                continue
            d = self.params[f"depth.{ts.name}"]
            srcs = [wide[n] for n in self.kind_sources[ts.name]]
            flops += 2.0 * d.shape[1] * srcs[0].numel()  # this output layer's row of the mix
            if exact and (j := _one_hot(d[layer])) is not None:
                out[tp.name] = srcs[j]  # a plain copy, bit for bit
                continue
            if ts.name not in mixed:
                mixed[ts.name] = list(torch.tensordot(d, torch.stack(srcs), dims=1).unbind(0))
            out[tp.name] = mixed[ts.name][layer]
        self.compose_flops = 3.0 * flops  # with its backward
        return out

    def describe(self) -> list[str]:
        return [f"learned {k} {list(v.shape)}" for k, v in self.params.items()]


def _one_hot(row: torch.Tensor) -> int | None:
    """The source index when a depth-map row copies exactly one source layer, else None."""
    values = row.tolist()
    nonzero = [j for j, v in enumerate(values) if v != 0.0]
    return nonzero[0] if len(nonzero) == 1 and values[nonzero[0]] == 1.0 else None

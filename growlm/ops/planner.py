"""Turn (architecture spec, config, tensor names and shapes, operators) into a growth ``Plan``.

Width growth, per tensor and per labelled axis (see ``growlm.arch.spec``):

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

from growlm.arch import BUFFERS, ArchSpec, TensorSpec
from growlm.errors import CorruptCheckpoint, InvalidGrowth
from growlm.ops.axes import AxisMap, Shape, axis_maps
from growlm.ops.depth import LayerSource
from growlm.ops.plan import (
    Expand,
    Fill,
    Fresh,
    NormScale,
    PairNoise,
    Plan,
    Scale,
    Step,
    TensorPlan,
    Zero,
)
from growlm.ops.registry import Operator, get_operator, parse_ops


@dataclass
class Naming:
    """Maps a spec's canonical tensor names to the names this checkpoint uses."""

    spec: ArchSpec
    names: set[str]
    prefix_swap: tuple[str, str] | None = None

    @classmethod
    def detect(cls, spec: ArchSpec, names: set[str]) -> Naming:
        probe = spec.layer_name(spec.layer_tensors[0], 0)
        for canon, alt in spec.alt_prefixes:
            if (
                probe.startswith(canon)
                and probe not in names
                and alt + probe[len(canon) :] in names
            ):
                return cls(spec, names, (canon, alt))
        return cls(spec, names)

    def actual(self, canonical: str) -> str:
        if self.prefix_swap and canonical.startswith(self.prefix_swap[0]):
            return self.prefix_swap[1] + canonical[len(self.prefix_swap[0]) :]
        return canonical

    def find(self, ts: TensorSpec, layer: int | None = None) -> str | None:
        candidates = [ts.name, *ts.alts]
        for cand in candidates:
            canon = (
                self.spec.layer_prefix.replace("{i}", str(layer)) + cand
                if layer is not None
                else cand
            )
            name = self.actual(canon)
            if name in self.names:
                return name
        return None


def source_shape(spec: ArchSpec, cfg: dict[str, Any]) -> tuple[int, Shape]:
    k = spec.keys

    def need(key: str) -> int:
        value = cfg.get(key)
        if not isinstance(value, int) or value <= 0:
            raise CorruptCheckpoint(f"config.json has no valid {key!r} (needed for {spec.name})")
        return value

    layers, hidden, heads = need(k.layers), need(k.hidden), need(k.heads)
    kv = cfg.get(k.kv_heads) if k.kv_heads else None
    kv = kv if isinstance(kv, int) and kv > 0 else heads
    hd = cfg.get(k.head_dim) if k.head_dim else None
    hd = hd if isinstance(hd, int) and hd > 0 else hidden // heads
    ffn = cfg.get(k.ffn)
    ffn = ffn if isinstance(ffn, int) and ffn > 0 else 4 * hidden
    return layers, Shape(hidden=hidden, ffn=ffn, heads=heads, kv_heads=kv, head_dim=hd)


def target_shape(spec: ArchSpec, cfg: dict[str, Any], src: Shape, p: dict[str, Any]) -> Shape:
    """Fill in what the user left out: head_dim stays fixed, heads follow hidden where the family
    derives head_dim from it, kv heads keep the group size."""

    def arg(name: str) -> int | None:
        v = p.get(name)
        if v is None:
            return None
        if isinstance(v, bool) or not isinstance(v, int) or v <= 0:
            raise InvalidGrowth(f"--{name.replace('_', '-')} must be a positive integer, got {v!r}")
        return v

    hidden = arg("hidden_size") or src.hidden
    ffn = arg("intermediate_size") or src.ffn
    derived_hd = not (spec.keys.head_dim and isinstance(cfg.get(spec.keys.head_dim), int))
    heads = arg("num_heads")
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
    kv = arg("num_kv_heads")
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
    if depth_op is not None and "factor" in depth_op.params:
        raise InvalidGrowth(
            f"--factor would set both {depth_op.name} and clone-width: grow depth and width in "
            f"two steps (two `growlm grow` runs or two recipe stages)"
        )
    n = p.get("factor")
    if isinstance(n, bool) or not isinstance(n, int) or n < 2:
        raise InvalidGrowth(
            f"clone-width needs --factor N, an integer >= 2 (every width times N), got {n!r}"
        )
    snr = p.get("snr_db")
    if snr is not None and (
        isinstance(snr, bool) or not isinstance(snr, (int, float)) or math.isnan(snr)
    ):
        raise InvalidGrowth(f"--snr-db must be a number in dB (inf: no noise), got {snr!r}")
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
    n = p.get("new_tokens")
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise InvalidGrowth(
            f"param-tokens needs --new-tokens N, an integer >= 1 (tokens added to every "
            f"Pattention layer), got {n!r}"
        )
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


def _fresh(ts: TensorSpec, shape: tuple[int, ...], out_layers: int, spec: ArchSpec) -> Fresh:
    if ts.role in ("bias", "norm_bias"):
        return Fresh(shape, "zeros")
    if ts.role == "norm":
        return Fresh(shape, "ones")
    # GPT-2 style scaled init of residual writes: std / sqrt(2 * layers)
    mult = 1.0 / math.sqrt(2 * out_layers) if spec.norm == "layer" and ts.identity_zero else 1.0
    return Fresh(shape, "normal", mult)


def _new_shape(
    ts: TensorSpec, shape: tuple[int, ...], width: WidthGrowth | None
) -> tuple[int, ...]:
    if width is None:
        return shape
    out = list(shape)
    for dim, ax in enumerate(ts.axes):
        amap = width.maps.get(ax.kind)
        if amap is not None:
            assert out[dim] == amap.src_size, (ts.name, shape, ax.kind, amap.src_size)
            out[dim] = amap.new_size
    return tuple(out)


def build_plan(
    spec: ArchSpec,
    cfg: dict[str, Any],
    derived: dict[str, Any],
    shapes: dict[str, tuple[int, ...]],
    op: str,
    params: dict[str, Any],
    tied: bool,
    seed: int = 0,
    routers: dict[int, Any] | None = None,
) -> Plan:
    """The whole growth of one checkpoint as a plan (no weights read; ``routers``: upcycle's
    routers computed from hidden states, per layer)."""
    if any(get_operator(part).kind == "moe" for part in op.split("+")):
        return _moe_plan(spec, cfg, derived, shapes, op, params, tied, seed, routers)
    depth_op, width_op = parse_ops(op)
    for o in (depth_op, width_op):
        if o is not None and o.kind == "trains":
            raise InvalidGrowth(
                f"{o.name} trains its map on data: grow with growlm.ops.ligo.learn_grow or "
                f"`growlm grow --op {o.name} --steps K --data PATH`, not a plain plan"
            )
    if width_op is not None and width_op.width_fill == "templates":
        from growlm.ops.mixture_growth import CHECKPOINT_REFUSAL

        raise InvalidGrowth(CHECKPOINT_REFUSAL)
    _check_params(depth_op, width_op, params)
    n, src = source_shape(spec, cfg)
    naming = Naming.detect(spec, set(shapes))
    _validate_tensors(spec, naming, shapes, n, tied)

    width = None
    if width_op is not None:
        assert width_op.width_fill is not None
        if width_op.width_fill == "tokens":
            maps = token_maps(spec, cfg, params)
            new = src
        elif width_op.width_fill == "clone":
            new = clone_shape(src, depth_op, params)
        else:
            new = target_shape(spec, cfg, src, params)
        if new == src and width_op.width_fill != "tokens":
            raise InvalidGrowth(
                f"{width_op.name} needs a larger --hidden-size, --intermediate-size or --num-heads"
            )
        if width_op.width_fill != "tokens":
            maps = axis_maps(src, new, copy=width_op.width_fill in ("direct", "clone"))
        snr = params.get("snr_db", width_op.defaults.get("snr_db", math.inf))
        width = WidthGrowth(width_op.width_fill, src, new, maps, tied, float(snr))
    layer_map = _layer_map(depth_op, n, params)
    out_n = len(layer_map)

    tensors: list[TensorPlan] = []

    def add_global(ts: TensorSpec, final_norm: bool = False) -> None:
        name = naming.find(ts)
        if name is None:
            return
        steps = width.steps(ts, spec, final_norm) if width else []
        tensors.append(TensorPlan(name, _new_shape(ts, shapes[name], width), name, steps))

    add_global(spec.embed)
    for ts in spec.extra_globals:
        add_global(ts)
    for j, ls in enumerate(layer_map):
        for ts in spec.layer_tensors:
            src_name = naming.find(ts, ls.src)
            if src_name is None:
                continue
            out_name = naming.actual(spec.layer_name(ts, j))
            shape = _new_shape(ts, shapes[src_name], width)
            if ls.kind == "random":
                tensors.append(TensorPlan(out_name, shape, None, [_fresh(ts, shape, out_n, spec)]))
                continue
            steps = width.steps(ts, spec) if width else []
            if ls.kind == "zero":
                steps = [*steps, Zero(moments_only=not ts.identity_zero)]
            tensors.append(TensorPlan(out_name, shape, src_name, steps))
    for ts in spec.final_norm:
        add_global(ts, final_norm=True)
    if not tied:
        add_global(spec.head)

    preserving = all(ls.kind in ("copy", "zero") for ls in layer_map) and (
        depth_op is None or depth_op.preserving == "yes"
    )
    if width is not None:
        preserving = preserving and width.preserving(spec)
    new_cfg = _new_config(spec, cfg, derived, layer_map, width)
    std = cfg.get(spec.keys.init_std)
    return Plan(
        op=op,
        params=dict(params),
        tensors=tensors,
        config=new_cfg,
        layer_map=[{"out": j, "src": ls.src, "kind": ls.kind} for j, ls in enumerate(layer_map)],
        src_layers=n,
        out_layers=out_n,
        function_preserving=preserving,
        init_std=float(std) if isinstance(std, (int, float)) else 0.02,
        norm_offset=spec.norm_offset,
        seed=seed,
    )


def _moe_plan(
    spec: ArchSpec,
    cfg: dict[str, Any],
    derived: dict[str, Any],
    shapes: dict[str, tuple[int, ...]],
    op: str,
    params: dict[str, Any],
    tied: bool,
    seed: int,
    routers: dict[int, Any] | None,
) -> Plan:
    from growlm.ops import upcycle

    if "+" in op:
        raise InvalidGrowth(
            f"--op {op!r}: upcycle combines with no other operator; grow first, then upcycle"
        )
    _check_params(None, get_operator(op), params)
    return upcycle.build_plan(spec, cfg, derived, shapes, params, tied, seed, routers)


def _check_params(depth_op: Operator | None, width_op: Operator | None, p: dict[str, Any]) -> None:
    allowed = set(depth_op.params if depth_op else ()) | set(width_op.params if width_op else ())
    given = {k for k, v in p.items() if v is not None}
    extra = sorted(given - allowed)
    if extra:
        names = " + ".join(o.name for o in (depth_op, width_op) if o)
        ok = ", ".join("--" + a.replace("_", "-") for a in sorted(allowed)) or "none"
        raise InvalidGrowth(
            f"--{extra[0].replace('_', '-')} does not apply to {names} (its parameters: {ok})"
        )


def _layer_map(depth_op: Operator | None, n: int, p: dict[str, Any]) -> list[LayerSource]:
    if depth_op is None:
        return [LayerSource(i) for i in range(n)]
    assert depth_op.layer_map is not None
    kwargs = {k: p[k] for k in depth_op.params if p.get(k) is not None}
    if depth_op.name in ("direct-depth", "interleave") and "factor" not in kwargs:
        raise InvalidGrowth(f"{depth_op.name} needs --factor G (an integer >= 2)")
    if depth_op.name == "layers" and "layers" not in kwargs:
        raise InvalidGrowth("layers needs --layers LIST, e.g. --layers 0,1,2,1,2,3")
    if depth_op.name == "solar" and "drop" not in kwargs:
        raise InvalidGrowth("solar needs --drop M (layers removed at the seam of each copy)")
    return depth_op.layer_map(n, **kwargs)


def _validate_tensors(
    spec: ArchSpec, naming: Naming, shapes: dict[str, tuple[int, ...]], n: int, tied: bool
) -> None:
    expected: set[str] = set()
    for ts in spec.global_tensors:
        name = naming.find(ts)
        if name is None:
            if ts is spec.head and tied:
                continue
            if not ts.optional:
                raise CorruptCheckpoint(
                    f"checkpoint has no tensor {naming.actual(ts.name)!r} required by the "
                    f"{spec.name} spec: is it a complete {spec.name} checkpoint?"
                )
            continue
        expected.add(name)
    for i in range(n):
        for ts in spec.layer_tensors:
            name = naming.find(ts, i)
            if name is None:
                first = naming.find(ts, 0)
                if ts.optional and first is None:
                    continue
                raise CorruptCheckpoint(
                    f"checkpoint lacks {naming.actual(spec.layer_name(ts, i))!r}: config says "
                    f"{n} layers; the weights and config.json disagree"
                )
            expected.add(name)
    head_name = naming.find(spec.head)
    if tied and head_name is not None:
        expected.add(head_name)  # a saved tied head is ignored: it is the embedding
    unknown = sorted(
        nm for nm in shapes if nm not in expected and not any(nm.endswith(b) for b in BUFFERS)
    )
    if unknown:
        raise CorruptCheckpoint(
            f"tensor {unknown[0]!r} is not described by the {spec.name} spec "
            f"({len(unknown)} such): the checkpoint has more layers than config.json or is a "
            f"variant growlm does not know"
        )


def _new_config(
    spec: ArchSpec,
    cfg: dict[str, Any],
    derived: dict[str, Any],
    layer_map: list[LayerSource],
    width: WidthGrowth | None,
) -> dict[str, Any]:
    k = spec.keys
    out = dict(cfg)
    n = cfg[k.layers]
    out[k.layers] = len(layer_map)
    for key in k.per_layer:
        values = cfg.get(key, derived.get(key))
        if isinstance(values, list) and len(values) == n:
            out[key] = [values[ls.src] for ls in layer_map]
    if isinstance(cfg.get("max_window_layers"), int):
        mwl = cfg["max_window_layers"]
        out["max_window_layers"] = sum(1 for ls in layer_map if ls.src < mwl)
    if width is not None and width.kind == "tokens":
        for kind, key in k.param_tokens:
            out[key] = width.maps[kind].new_size
    elif width is not None:
        out[k.hidden] = width.new.hidden
        out[k.ffn] = width.new.ffn
        out[k.heads] = width.new.heads
        if k.kv_heads:
            out[k.kv_heads] = width.new.kv_heads
        if k.head_dim and isinstance(cfg.get(k.head_dim), int):
            out[k.head_dim] = width.new.head_dim
        if width.kind == "zero" and width.new.hidden != width.src.hidden:
            eps = cfg.get(k.eps, derived.get(k.eps))
            if isinstance(eps, (int, float)):
                out[k.eps] = float(eps) * width.src.hidden / width.new.hidden
    return out

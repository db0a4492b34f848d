"""The plan of a dense growth: at most one depth operator (a layer map) and one width operator
(``growlm.ops.width``) over the family spec, tensor by tensor, with the grown config."""

from __future__ import annotations

import math
from typing import Any

from growlm.arch import ArchSpec, TensorSpec
from growlm.errors import InvalidGrowth
from growlm.ops.axes import axis_maps
from growlm.ops.depth import LayerSource
from growlm.ops.growth_plan import Fresh, GrowthPlan, TensorPlan, Zero
from growlm.ops.layout import Naming, new_plan, source_shape, validate_tensors
from growlm.ops.params import with_defaults
from growlm.ops.registry import Operator
from growlm.ops.width import WidthGrowth, clone_shape, new_shape, target_shape, token_maps


def _fresh(ts: TensorSpec, shape: tuple[int, ...], out_layers: int, spec: ArchSpec) -> Fresh:
    if ts.role in ("bias", "norm_bias"):
        return Fresh(shape, "zeros")
    if ts.role == "norm":
        return Fresh(shape, "ones")
    # GPT-2 style scaled init of residual writes: std / sqrt(2 * layers)
    mult = 1.0 / math.sqrt(2 * out_layers) if spec.norm == "layer" and ts.identity_zero else 1.0
    return Fresh(shape, "normal", mult)


def build_plan(
    spec: ArchSpec,
    cfg: dict[str, Any],
    derived: dict[str, Any],
    shapes: dict[str, tuple[int, ...]],
    op: str,
    params: dict[str, Any],
    depth_op: Operator | None,
    width_op: Operator | None,
    tied: bool,
    seed: int = 0,
) -> GrowthPlan:
    """The whole growth of one checkpoint as a plan (no weights read); ``params`` are checked
    against the operators' declarations already (``growlm.ops.planning``)."""
    n, src = source_shape(spec, cfg)
    naming = Naming.detect(spec, set(shapes))
    validate_tensors(spec, naming, shapes, n, tied)

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
        snr = with_defaults(width_op, params).get("snr_db", math.inf)
        width = WidthGrowth(width_op.width_fill, src, new, maps, tied, float(snr))
    layer_map = _layer_map(depth_op, n, params)
    out_n = len(layer_map)

    tensors: list[TensorPlan] = []

    def add_global(ts: TensorSpec, final_norm: bool = False) -> None:
        name = naming.find(ts)
        if name is None:
            return
        steps = width.steps(ts, spec, final_norm) if width else []
        tensors.append(TensorPlan(name, new_shape(ts, shapes[name], width), name, steps))

    add_global(spec.embed)
    for ts in spec.extra_globals:
        add_global(ts)
    for j, ls in enumerate(layer_map):
        for ts in spec.layer_tensors:
            src_name = naming.find(ts, ls.src)
            if src_name is None:
                continue
            out_name = naming.actual(spec.layer_name(ts, j))
            shape = new_shape(ts, shapes[src_name], width)
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
    return new_plan(spec, cfg, (op, params), tensors, new_cfg, layer_map, preserving, seed)


def _layer_map(depth_op: Operator | None, n: int, p: dict[str, Any]) -> list[LayerSource]:
    if depth_op is None:
        return [LayerSource(i) for i in range(n)]
    assert depth_op.layer_map is not None
    return depth_op.layer_map(n, **with_defaults(depth_op, p))


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

"""The one way to a ``GrowthPlan``: (config, tensor names and shapes, operator, parameters) -> plan.

Every growth meets this planner: ``growlm grow`` (from a checkpoint's header), the trainer and
``grow_tensors`` (from tensors in memory), LiGO (the plain plan its learned maps start from) and
upcycling. The operator's parameters are checked against their declarations here
(``growlm.ops.params``), then the dense planner (``growlm.ops.dense``) or upcycling
(``growlm.ops.upcycle``) plans the tensors.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch

from growlm.arch import ArchSpec, spec_for
from growlm.errors import InvalidGrowth
from growlm.ops import dense, ligo_maps, upcycle
from growlm.ops.growth_plan import GrowthPlan
from growlm.ops.params import check_params
from growlm.ops.registry import get_operator, get_operator_entry, parse_ops

if TYPE_CHECKING:
    from growlm.io.checkpoint import SourceCheckpoint


def derived_config(cfg: dict[str, Any]) -> tuple[dict[str, Any], bool]:
    """The config as transformers completes it (per-layer lists, tie flag), without remote code."""
    from transformers import AutoConfig

    model_type = str(cfg.get("model_type"))
    try:
        conf = AutoConfig.for_model(
            model_type, **{k: v for k, v in cfg.items() if k != "model_type"}
        )
    except Exception as e:  # a config transformers itself rejects
        raise InvalidGrowth(f"config.json is not a valid {model_type} config: {e}") from None
    tied = bool(getattr(conf, "tie_word_embeddings", False))
    return conf.to_dict(), tied


def _completed(spec: ArchSpec, cfg: dict[str, Any]) -> tuple[dict[str, Any], bool]:
    """transformers (slow to import) completes the config only when it lacks something."""
    keys = spec.keys
    if any(k not in cfg for k in (*keys.per_layer, keys.eps)):
        return derived_config(cfg)
    return {}, bool(cfg.get("tie_word_embeddings", spec.tie_default))


def is_upcycle(op: str) -> bool:
    return any(
        (entry := get_operator_entry(part)) is not None and entry.kind == "moe"
        for part in op.split("+")
    )


def plan_tensors(
    cfg: dict[str, Any],
    shapes: dict[str, tuple[int, ...]],
    op: str,
    params: dict[str, Any],
    seed: int = 0,
    routers: dict[int, torch.Tensor] | None = None,
) -> GrowthPlan:
    """The plan of a plain operator for a config dict and tensor shapes (no weights read;
    ``routers``: upcycle's routers computed from hidden states, per layer)."""
    moe = is_upcycle(op)
    if moe:
        upcycle.check_source(cfg)  # an MoE source has no dense spec to look for
    spec = spec_for(cfg.get("model_type"))
    derived, tied = _completed(spec, cfg)
    if moe:
        if "+" in op:
            raise InvalidGrowth(
                f"--op {op!r}: upcycle combines with no other operator; grow first, then upcycle"
            )
        given = check_params([get_operator(op)], params)
        return upcycle.build_plan(spec, cfg, derived, shapes, given, tied, seed, routers)
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
    given = check_params([o for o in (depth_op, width_op) if o is not None], params)
    return dense.build_plan(spec, cfg, derived, shapes, op, given, depth_op, width_op, tied, seed)


def plan_learned(
    cfg: dict[str, Any],
    shapes: dict[str, tuple[int, ...]],
    op: str,
    params: dict[str, Any],
    seed: int = 0,
    steps: Any = None,
    lr: Any = None,
) -> tuple[ligo_maps.Settings, GrowthPlan]:
    """A learned growth's validated settings and the plan of the plain operator its maps start
    from (stack, random-width): output names, shapes, config and layer map of the grown model."""
    s = ligo_maps.settings(op, params, steps, lr)
    plan = plan_tensors(cfg, shapes, s.op.skeleton, s.skeleton_params, seed)
    plan.op = op
    plan.params = dict(params)
    plan.function_preserving = False
    plan.learned = s
    return s, plan


def plan_checkpoint(
    src: SourceCheckpoint,
    op: str,
    params: dict[str, Any],
    seed: int = 0,
    routers: dict[int, torch.Tensor] | None = None,
) -> GrowthPlan:
    """The plan of any operator from a checkpoint's config and header (no weights read); a
    learned operator's plan is the map it starts from with ``learned`` set (its values come from
    the maps ``growlm.ops.ligo`` trains)."""
    shapes = {n: src.shape(n) for n in src.names}
    if ligo_maps.parse_learn_op(op) is not None:
        return plan_learned(src.config, shapes, op, params, seed)[1]
    return plan_tensors(src.config, shapes, op, params, seed, routers)

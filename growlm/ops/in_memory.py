"""Growth of tensors in memory: the trainer's growth stages and a Trainer checkpoint's AdamW
state go through the same plans as ``growlm grow``."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from growlm.io.hf_config import config_object
from growlm.ops import mixture_growth
from growlm.ops.growth_plan import Mode
from growlm.ops.ligo_maps import parse_learn_op, settings
from growlm.ops.planning import plan_tensors


def grow_tensors(
    config: Any,
    tensors: dict[str, torch.Tensor],
    op: str,
    params: dict[str, Any],
    fill: Mode = "weights",
    seed: int = 0,
    batches: Callable[[int], torch.Tensor] | None = None,
    autocast_dtype: torch.dtype | None = None,
) -> tuple[Any, dict[str, torch.Tensor], dict[str, Any]]:
    """Grow in memory: returns (new PretrainedConfig, new tensors, report).

    ``fill="exp_avg"`` / ``"exp_avg_sq"`` apply the same mapping to AdamW moments keyed by
    parameter name (rules in ``growlm.ops.growth_plan``). A learned operator (G_learn / LiGO)
    trains its maps on ``batches`` (step -> [B, T+1] token ids; see ``growlm.ops.ligo``), on
    meta tensors it only plans; its moments follow the map it starts from (stack / new width
    units at zero). A template model (``model.templates``) grows through
    ``growlm.ops.mixture_growth``.
    """
    from transformers import PretrainedConfig

    if mixture_growth.applies(config, op):  # a template model: its own state, not a plan
        return mixture_growth.grow_state(config, tensors, op, params, fill=fill)
    cfg = config.to_dict() if isinstance(config, PretrainedConfig) else dict(config)
    learned = parse_learn_op(op)
    plan_op, plan_params = op, params
    if learned is not None:
        if fill == "weights":
            from growlm.ops.ligo import learn_grow

            return learn_grow(
                config, tensors, op, params, batches, seed=seed, autocast_dtype=autocast_dtype
            )
        plan_op = learned.skeleton
        plan_params = settings(op, {"steps": 0, **params}).skeleton_params
    plan = plan_tensors(
        cfg, {n: tuple(t.shape) for n, t in tensors.items()}, plan_op, plan_params, seed
    )
    new = dict(plan.execute(tensors.__getitem__, mode=fill, clone=True))
    report = {
        "op": op,
        "params": dict(params),
        "layer_map": plan.layer_map,
        "src_layers": plan.src_layers,
        "out_layers": plan.out_layers,
        "function_preserving": plan.function_preserving,
    }
    return config_object(plan.config), new, report

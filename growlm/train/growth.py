"""Growth between stages: apply a registry operator to the model's weights (and, on request,
to AdamW's moments), and dry-run every planned growth on meta tensors before training starts so
a bad operator or a shrinking stage fails in the first second, not after hours of stage one."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any, Literal

import torch
from torch import nn
from transformers import PretrainedConfig

from growlm.arch import spec_for
from growlm.errors import GrowlmError, InvalidRecipe
from growlm.ops.in_memory import grow_tensors
from growlm.train.masks import fade_plan
from growlm.train.model import meta_model, param_count
from growlm.train.moe import module_layout
from growlm.train.recipe import GrowConfig

MOMENT_KEYS: tuple[Literal["exp_avg", "exp_avg_sq"], ...] = ("exp_avg", "exp_avg_sq")


def grow_weights(
    config: PretrainedConfig,
    weights: dict[str, torch.Tensor],
    grow: GrowConfig,
    seed: int = 0,
    batches: Callable[[int], torch.Tensor] | None = None,
    autocast_dtype: torch.dtype | None = None,
) -> tuple[PretrainedConfig, dict[str, torch.Tensor], dict[str, Any]]:
    """(grown config, grown weights, operator report); ``seed`` drives random fills. Learned
    operators (G_learn / LiGO) train their maps on ``batches`` (step -> [B, T+1] token ids);
    on meta weights they only plan. Their report's ``flops`` is the cost of that training.
    A template model (``model.templates``) grows through growlm.ops.mixture_growth."""
    new_config, new_weights, report = grow_tensors(
        config, weights, grow.op, dict(grow.params), "weights", seed, batches, autocast_dtype
    )
    new_config.use_cache = False
    return new_config, module_layout(new_config, new_weights), report


def grow_moments(
    config: PretrainedConfig,
    optim_state: dict[str, dict[str, torch.Tensor]],
    grow: GrowConfig,
    weights: dict[str, torch.Tensor],
    seed: int = 0,
) -> dict[str, dict[str, torch.Tensor]]:
    """AdamW state carried through the operator (rules in ``growlm.ops.growth_plan``: copied with
    copied weights, transformed with split or rescaled ones, zero for new ones; a learned
    operator's moments follow its step-0 map: stack / new width units at zero); parameters
    without state (frozen in an MSLT stage) count as zero moments. A tensor with carried history
    keeps the largest step count (bias correction done); one without any (new block, or only
    frozen sources) restarts at step 0. ``weights`` gives the shapes."""
    if not optim_state:
        return {}
    step = max(entry["step"] for entry in optim_state.values())
    op, params = grow.op, dict(grow.params)  # learned maps: moments follow the step-0 map
    grown: dict[str, dict[str, torch.Tensor]] = {}
    for key in MOMENT_KEYS:
        moments = {
            name: optim_state[name][key] if name in optim_state else torch.zeros_like(w)  # frozen
            for name, w in weights.items()
        }
        new_config, new_moments, _ = grow_tensors(config, moments, op, params, fill=key, seed=seed)
        new_moments = module_layout(new_config, new_moments)  # an MoE's experts fused
        for name, tensor in new_moments.items():
            grown.setdefault(name, {"step": step.clone()})[key] = tensor
    # a tensor with no carried history (a new block, or grown only from parameters frozen
    # before) has exp_avg_sq == 0 everywhere: it restarts AdamW's bias correction at step 0,
    # since zero moments with a large step count would make its first updates several times
    # larger than Adam's
    for entry in grown.values():
        if not bool(entry["exp_avg_sq"].any()):
            entry["step"] = torch.zeros_like(entry["step"])
    return grown


def check_growth(
    config: PretrainedConfig,
    grow: GrowConfig,
    where: str,
    trainable: str = "all",
) -> PretrainedConfig:
    """Plan a growth on meta tensors: the grown config, or InvalidRecipe naming the stage.
    Also checks what the stage asks of the growth: MSLT (``trainable: new``) needs the old layers
    to stay at the bottom in order; masks (``fade_steps``) need a family they are exact for (that
    the ramp ends within its stage is the trainer's check, which knows the stage's steps)."""
    model = meta_model(config)
    before = param_count(model)
    try:
        new_config, _, report = grow_weights(config, dict(model.state_dict()), grow)
    except GrowlmError as exc:
        raise InvalidRecipe(f"{where}: {exc}") from None
    after = param_count(meta_model(new_config))
    if after <= before:
        raise InvalidRecipe(
            f"{where}: grows the model from {before:,} to {after:,} parameters; "
            "a growth stage must make the model larger"
        )
    if trainable == "new":
        new_layers(report, where)
    if grow.fade_steps is not None:
        try:
            fade_plan(config, new_config, report, grow.fade_steps)
        except GrowlmError as exc:
            raise InvalidRecipe(f"{where}: {exc}") from None
    return new_config


def new_layers(report: dict[str, Any], where: str) -> int:
    """MSLT: the index of the first layer a growth added on top (the old layers must keep their
    place at the bottom, in order)."""
    layer_map, n = report["layer_map"], int(report["src_layers"])
    bottom = [(e["src"], e["kind"]) for e in layer_map[:n]]
    if bottom != [(i, "copy") for i in range(n)]:
        raise InvalidRecipe(
            f"{where}: trainable 'new' (MSLT) needs the old layers kept at the bottom with the new "
            f"ones on top; {report['op']!r} places them otherwise (use stack, top, or "
            "zero-depth / random-depth with placement: append)"
        )
    return n


def set_trainable(model: nn.Module, train_from: int | None) -> bool:
    """Freeze everything but layers >= ``train_from``, the final norm and the head (a tied head
    keeps its embedding trainable: they are one tensor) for MSLT, or
    unfreeze everything (``None``). True if any ``requires_grad`` changed."""
    if train_from is not None:  # an MoE (no dense spec) never freezes: MSLT is for depth
        spec = spec_for(str(model.config.model_type))  # type: ignore[union-attr]
        keep = {ts.name for ts in (*spec.final_norm, spec.head)}
        head = model.get_output_embeddings()  # type: ignore[operator]
        head_weight = getattr(head, "weight", None)  # tied: the embedding, under its own name
        prefix = re.compile(re.escape(spec.layer_prefix).replace(r"\{i\}", r"(\d+)"))
    changed = False
    for name, param in model.named_parameters():
        want = True
        if train_from is not None:
            layer = prefix.match(name)
            want = (
                name in keep
                or param is head_weight
                or (layer is not None and int(layer.group(1)) >= train_from)
            )
        if param.requires_grad != want:
            param.requires_grad_(want)
            changed = True
    return changed

"""Growth between stages: apply a registry operator to the model's weights (and, on request,
to AdamW's moments), and dry-run every planned growth on meta tensors before training starts so
a bad operator or a shrinking stage fails in the first second, not after hours of stage one."""

from __future__ import annotations

from typing import Any

import torch
from transformers import PretrainedConfig

from growlm.errors import GrowlmError, InvalidRecipe
from growlm.grow import grow_tensors
from growlm.train.model import build_model, param_count
from growlm.train.recipe import GrowConfig

MOMENT_KEYS = ("exp_avg", "exp_avg_sq")


def grow_weights(
    config: PretrainedConfig, weights: dict[str, torch.Tensor], grow: GrowConfig, seed: int = 0
) -> tuple[PretrainedConfig, dict[str, torch.Tensor], dict[str, Any]]:
    """(grown config, grown weights, operator report); ``seed`` drives random fills."""
    new_config, new_weights, report = grow_tensors(
        config, weights, grow.op, dict(grow.params), fill="weights", seed=seed
    )
    new_config.use_cache = False
    return new_config, new_weights, report


def grow_moments(
    config: PretrainedConfig,
    optim_state: dict[str, dict[str, torch.Tensor]],
    grow: GrowConfig,
    seed: int = 0,
) -> dict[str, dict[str, torch.Tensor]]:
    """AdamW state carried through the operator: moments copied where weights are copied,
    zero for new units; every parameter keeps the largest step count (bias correction done)."""
    if not optim_state:
        return {}
    step = max(entry["step"] for entry in optim_state.values())
    grown: dict[str, dict[str, torch.Tensor]] = {}
    for key in MOMENT_KEYS:
        moments = {name: entry[key] for name, entry in optim_state.items()}
        _, new_moments, _ = grow_tensors(
            config, moments, grow.op, dict(grow.params), fill="moments", seed=seed
        )
        for name, tensor in new_moments.items():
            grown.setdefault(name, {"step": step.clone()})[key] = tensor
    return grown


def check_growth(config: PretrainedConfig, grow: GrowConfig, where: str) -> PretrainedConfig:
    """Plan a growth on meta tensors: the grown config, or InvalidRecipe naming the stage."""
    with torch.device("meta"):
        model = build_model(config)
    before = param_count(model)
    try:
        new_config, _, _ = grow_weights(config, dict(model.state_dict()), grow)
    except GrowlmError as exc:
        raise InvalidRecipe(f"{where}: {exc}") from None
    with torch.device("meta"):
        after = param_count(build_model(new_config))
    if after <= before:
        raise InvalidRecipe(
            f"{where}: grows the model from {before:,} to {after:,} parameters; "
            "a growth stage must make the model larger"
        )
    return new_config

"""Growing a transformers.Trainer checkpoint (``checkpoint-N``) so that the Trainer resumes it.

A Trainer checkpoint holds, beside the weights, ``optimizer.pt`` (AdamW's state_dict: moments
keyed by the parameter's index in the optimizer's groups), ``scheduler.pt``,
``trainer_state.json`` (global step, logs) and RNG states. The Trainer builds two groups from
``model.named_parameters()``: the parameters ``get_decay_parameter_names`` lists, then the rest
(no weight decay). Growing the checkpoint maps indices to names with that rule on the source
model, grows the moments by the weights' plan (``growth.grow_moments``), renumbers them in the
grown model's order, and carries the scheduler, trainer state and RNG files unchanged, so
``Trainer(...).train(resume_from_checkpoint=OUT)`` continues at the same step.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import torch

from growlm.errors import CorruptCheckpoint, InvalidGrowth, one_line

OPTIMIZER = "optimizer.pt"
TRAINER_STATE = "trainer_state.json"
# carried unchanged (never unpickled by growlm): LR schedule position, step/logs, RNG, args
CARRIED = ("scheduler.pt", TRAINER_STATE, "training_args.bin", "scaler.pt")
CARRIED_GLOBS = ("rng_state*.pth",)


def is_trainer_checkpoint(folder: Path) -> bool:
    return (folder / OPTIMIZER).is_file() and (folder / TRAINER_STATE).is_file()


def group_names(config: dict[str, Any]) -> list[list[str]]:
    """Parameter names of the Trainer's optimizer groups for a model of ``config``: decay, then
    no-decay, each in ``named_parameters`` order (tied weights once), as Trainer builds them."""
    from transformers import AutoModelForCausalLM, Trainer

    from growlm.io.hf_config import config_object

    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config_object(config))
    # the Trainer's own rule (an instance method that does not use its instance)
    decay = set(Trainer.get_decay_parameter_names(None, model))  # type: ignore[arg-type]
    named = [n for n, p in model.named_parameters() if p.requires_grad]
    return [[n for n in named if n in decay], [n for n in named if n not in decay]]


def load_optimizer(path: Path) -> dict[str, Any]:
    """The Trainer's AdamW state_dict, read with ``weights_only`` (no arbitrary unpickling)."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for bad or unsafe pickles
        raise CorruptCheckpoint(
            f"cannot load {path} safely (weights_only): {one_line(exc, 200)}"
        ) from None
    if not (isinstance(state, dict) and {"state", "param_groups"} <= set(state)):
        raise CorruptCheckpoint(f"{path} does not hold an optimizer state_dict")
    return state


def named_moments(
    state: dict[str, Any], groups: list[list[str]], shapes: dict[str, tuple[int, ...]], path: Path
) -> dict[str, dict[str, torch.Tensor]]:
    """AdamW state per parameter name (``groups`` from group_names); parameters the optimizer
    never stepped are absent. Anything but the Trainer's default AdamW grouping is refused."""
    saved = state["param_groups"]
    sizes = [len(g.get("params", [])) for g in saved]
    if sizes != [len(g) for g in groups]:
        raise InvalidGrowth(
            f"{path}: parameter groups of sizes {sizes}, but the Trainer's default AdamW groups "
            f"(decay / no decay) of this model have {[len(g) for g in groups]}: growlm grows the "
            "optimizer state of the default Trainer optimizer only; delete optimizer.pt to grow "
            "the weights alone"
        )
    out: dict[str, dict[str, torch.Tensor]] = {}
    for group, names in zip(saved, groups, strict=True):
        for index, name in zip(group["params"], names, strict=True):
            entry = state["state"].get(index)
            if entry is None:
                continue
            if not {"exp_avg", "exp_avg_sq", "step"} <= set(entry):
                raise InvalidGrowth(
                    f"{path}: the state of {name} is not AdamW's (exp_avg, exp_avg_sq, step): "
                    "growlm grows AdamW state only; delete optimizer.pt to grow the weights alone"
                )
            if tuple(entry["exp_avg"].shape) != shapes[name]:
                raise CorruptCheckpoint(
                    f"{path}: moment {index} has shape {tuple(entry['exp_avg'].shape)}, but "
                    f"{name} is {shapes[name]}: the optimizer does not belong to these weights"
                )
            step = entry["step"]
            out[name] = {
                "step": step if isinstance(step, torch.Tensor) else torch.tensor(float(step)),
                "exp_avg": entry["exp_avg"],
                "exp_avg_sq": entry["exp_avg_sq"],
            }
    return out


def grow_trainer_state(
    src: Path,
    src_config: dict[str, Any],
    out_config: dict[str, Any],
    op: str,
    params: dict[str, Any],
    seed: int,
    out: Path,
) -> dict[str, Any]:
    """Write the grown ``optimizer.pt`` and the carried Trainer files into ``out``; returns
    what growth.json records about it."""
    from growlm.io.hf_config import config_object
    from growlm.train.growth import grow_moments
    from growlm.train.recipe import GrowConfig

    path = src / OPTIMIZER
    state = load_optimizer(path)
    src_groups = group_names(src_config)
    with torch.device("meta"):
        from transformers import AutoModelForCausalLM

        meta = AutoModelForCausalLM.from_config(config_object(src_config))
    shapes = {n: tuple(p.shape) for n, p in meta.named_parameters()}
    moments = named_moments(state, src_groups, shapes, path)
    dtype = next((m["exp_avg"].dtype for m in moments.values()), torch.float32)
    # grow_moments fills parameters without state with zeros shaped like these
    like = {n: torch.zeros((), dtype=dtype).expand(s) for n, s in shapes.items()}
    grown = grow_moments(
        config_object(src_config), moments, GrowConfig(op=op, params=dict(params)), like, seed
    )
    out_groups = group_names(out_config)
    new_state: dict[int, dict[str, torch.Tensor]] = {}
    new_groups = []
    index = 0
    for saved, names in zip(state["param_groups"], out_groups, strict=True):
        ids = []
        for name in names:
            if name not in grown:
                raise InvalidGrowth(f"grown model parameter {name} has no grown AdamW state")
            new_state[index] = {k: v.contiguous() for k, v in grown[name].items()}
            ids.append(index)
            index += 1
        new_groups.append({**saved, "params": ids})
    torch.save({"state": new_state, "param_groups": new_groups}, out / OPTIMIZER)
    carried = [f for f in CARRIED if (src / f).is_file()]
    carried += sorted(p.name for pattern in CARRIED_GLOBS for p in src.glob(pattern))
    for name in carried:
        shutil.copyfile(src / name, out / name)
    return {
        "trainer_checkpoint": {
            "optimizer": "AdamW moments grown by the weights' plan",
            "carried": carried,
        }
    }

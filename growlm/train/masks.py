"""MSG growth masks: G_random that is exactly function-preserving at growth (Yao et al. 2023,
Masked Structural Growth, arXiv 2305.02869).

After ``random-depth`` / ``random-width`` with ``fade_steps: K``, the new structure enters the
network multiplied by a mask m that ramps linearly from 0 (at the stage's first step) to 1 (after
K steps):

- a new layer computes ``x + m * (layer(x) - x)``: at m = 0 it is the identity;
- new MLP units and new attention heads are multiplied by m where they are read (the input of
  the MLP down projection and of the attention output projection);
- new hidden dimensions are multiplied by m wherever the residual stream is written (the
  embedding output and every projection that writes the residual stream), and every RMSNorm over
  the hidden state normalises by the effective width ``H + m (H' - H)`` instead of ``H'``
  (computed as ``norm(c x) / c`` with ``c = sqrt(H' / (H + m (H' - H)))``), so at m = 0 the old
  dimensions see exactly the small model's statistics.

The masks live in forward hooks, never in the weights: parameters keep their random
initialisation and receive gradients scaled by m. At m = 1 every hook is the identity and the
hooks are removed, so checkpoints after the ramp are plain Hugging Face models (nothing to fold).
The ramp must end within its stage (checked before training).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from transformers import PretrainedConfig

from growlm.arch import FAMILIES, spec_for
from growlm.errors import InvalidRecipe
from growlm.ops.axes import axis_maps
from growlm.ops.layout import source_shape

FADE_OPS = ("random-depth", "random-width")  # the operators whose new structure can fade in
# width masks need pre-norm blocks whose RMSNorms span the hidden state only (from the specs)
WIDTH_FAMILIES = tuple(spec.name for spec in FAMILIES if spec.pre_norm_only)


@dataclass
class FadePlan:
    """What is new after a growth, as plain data (saved in checkpoints to resume a ramp)."""

    fade_steps: int
    new_layers: list[int] = field(default_factory=list)
    hidden: tuple[int, int] | None = None  # (old, new) hidden size when it grew
    new_units: dict[str, list[int]] = field(default_factory=dict)  # axis kind -> new indices

    def to_json(self) -> dict[str, Any]:
        return {
            "fade_steps": self.fade_steps,
            "new_layers": self.new_layers,
            "hidden": list(self.hidden) if self.hidden else None,
            "new_units": self.new_units,
        }

    @staticmethod
    def from_json(raw: dict[str, Any]) -> FadePlan:
        hidden = raw.get("hidden")
        return FadePlan(
            int(raw["fade_steps"]),
            [int(i) for i in raw.get("new_layers", [])],
            (int(hidden[0]), int(hidden[1])) if hidden else None,
            {k: [int(i) for i in v] for k, v in raw.get("new_units", {}).items()},
        )


def fade_plan(
    old: PretrainedConfig, new: PretrainedConfig, report: dict[str, Any], fade_steps: int
) -> FadePlan:
    """The new layers (from the operator's layer map) and new width units of one growth."""
    plan = FadePlan(fade_steps)
    plan.new_layers = [i for i, e in enumerate(report["layer_map"]) if e.get("kind") == "random"]
    spec = spec_for(new.model_type)
    _, src = source_shape(spec, old.to_dict())
    _, dst = source_shape(spec, new.to_dict())
    if src != dst:
        if spec.name not in WIDTH_FAMILIES:
            raise InvalidRecipe(
                f"fade_steps with width growth supports {', '.join(WIDTH_FAMILIES)}; "
                f"{spec.name} has norms the masks cannot correct exactly: use random-width "
                "without fade_steps, or zero-width"
            )
        maps = axis_maps(src, dst, copy=False)
        for kind in ("hidden", "ffn", "q"):
            new_idx = (maps[kind].index < 0).nonzero().flatten().tolist()
            if new_idx:
                plan.new_units[kind] = new_idx
        if dst.hidden != src.hidden:
            plan.hidden = (src.hidden, dst.hidden)
    return plan


class FadeMasks:
    """Forward hooks implementing a ``FadePlan`` on a model; ``set(step)`` moves the ramp."""

    def __init__(self, model: nn.Module, plan: FadePlan):
        self.plan = plan
        device = next(model.parameters()).device
        self.m = torch.zeros((), device=device)  # a tensor: hooks never sync with the host
        self._handles: list[Any] = []
        self._vectors: dict[str, torch.Tensor] = {}  # axis kind -> bool "is new", on device
        spec = spec_for(str(model.config.model_type))  # type: ignore[union-attr]
        modules = dict(model.named_modules())
        _, shape = source_shape(spec, model.config.to_dict())  # type: ignore[union-attr,operator]
        sizes = {"hidden": shape.hidden, "ffn": shape.ffn, "q": shape.heads * shape.head_dim}
        for kind, idx in plan.new_units.items():
            vec = torch.zeros(sizes[kind], dtype=torch.bool, device=device)
            vec[idx] = True
            self._vectors[kind] = vec
        for layer in plan.new_layers:
            name = spec.layer_prefix.replace("{i}", str(layer)).rstrip(".")
            self._handles.append(
                modules[name].register_forward_hook(self._layer_hook, with_kwargs=True)
            )
        if not plan.new_units:
            return
        layers = int(model.config.num_hidden_layers)  # type: ignore[union-attr,arg-type]
        for ts in (*spec.global_tensors, *spec.layer_tensors):
            names = (
                [spec.layer_name(ts, i) for i in range(layers)]
                if ts in spec.layer_tensors
                else [ts.name]
            )
            for tensor_name in names:
                module = modules.get(tensor_name.rsplit(".", 1)[0])
                if module is None:
                    continue
                self._hook(module, ts, tensor_name)

    def _hook(self, module: nn.Module, ts: Any, name: str) -> None:
        if not name.endswith(".weight"):
            return  # biases belong to the same module as their weight
        axes = {(a.kind, a.direction) for a in ts.axes}
        if ts.role == "norm":
            if ("hidden", "norm") in axes and "hidden" in self._vectors:
                self._handles.append(module.register_forward_pre_hook(self._norm_pre))
                self._handles.append(module.register_forward_hook(self._norm_post))
            return
        for kind in ("ffn", "q"):
            if (kind, "in") in axes and kind in self._vectors:
                hook = functools.partial(self._scale_in, kind=kind)
                self._handles.append(module.register_forward_pre_hook(hook))
        if ("hidden", "out") in axes and "hidden" in self._vectors and ts.role != "norm":
            self._handles.append(module.register_forward_hook(self._scale_out))

    # ---- the ramp ---------------------------------------------------------------------------
    def set(self, stage_step: int) -> float:
        m = min(1.0, stage_step / self.plan.fade_steps)
        self.m.fill_(m)
        return m

    @property
    def done(self) -> bool:
        return float(self.m) >= 1.0

    def remove(self) -> None:
        for h in self._handles:
            h.remove()
        self._handles.clear()

    # ---- hooks ------------------------------------------------------------------------------
    def _mask(self, kind: str, like: torch.Tensor) -> torch.Tensor:
        new = self._vectors[kind]
        one = torch.ones((), dtype=like.dtype, device=like.device)
        return torch.where(new, self.m.to(like.dtype), one)

    def _layer_hook(self, module: nn.Module, args: tuple, kwargs: dict, output: Any) -> Any:
        x = args[0] if args else kwargs["hidden_states"]
        out = output[0] if isinstance(output, tuple) else output
        faded = x + self.m.to(out.dtype) * (out - x)
        return (faded, *output[1:]) if isinstance(output, tuple) else faded

    def _scale_in(self, module: nn.Module, args: tuple, kind: str) -> tuple:
        x = args[0]
        return (x * self._mask(kind, x), *args[1:])

    def _scale_out(self, module: nn.Module, args: tuple, output: torch.Tensor) -> torch.Tensor:
        return output * self._mask("hidden", output)

    def _c(self) -> torch.Tensor:
        assert self.plan.hidden is not None
        old, new = self.plan.hidden
        return torch.sqrt(new / (old + self.m * (new - old)))

    def _norm_pre(self, module: nn.Module, args: tuple) -> tuple:
        return (args[0] * self._c().to(args[0].dtype), *args[1:])

    def _norm_post(self, module: nn.Module, args: tuple, output: torch.Tensor) -> torch.Tensor:
        return output / self._c().to(output.dtype)

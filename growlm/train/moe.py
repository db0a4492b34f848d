"""Mixture-of-Experts models in the trainer: the in-memory layout, router statistics and the
auxiliary losses.

On disk (and in plans) an MoE keeps the hub layout, one tensor per expert; transformers 5 holds
the experts fused, ``gate_up_proj`` [E, 2I, H] and ``down_proj`` [E, H, I]. ``module_layout``
turns the one into the other, for weights and AdamW moments alike (a moment is laid out as its
weight).

Router statistics come from forward hooks on the routers (``RouterTap``): the router logits of
every MoE layer, [tokens, E]. From them, per step:
- load-balancing loss (Switch Transformer, Fedus et al. 2021): E * sum_i f_i P_i, with f_i the
  fraction of top-k assignments that go to expert i and P_i the mean router probability, averaged
  over layers; 1 when perfectly balanced;
- router z-loss (ST-MoE, Zoph et al. 2022): mean over tokens of logsumexp(logits)^2;
- expert load: f_i per layer, logged to the metrics JSONL.
"""

from __future__ import annotations

import re
from typing import Any

import torch
from torch import nn

from growlm.arch.moe import MoeSpec, moe_spec_for_type

_LAYER = "model.layers.{i}."


def moe_spec(config: Any) -> MoeSpec | None:
    return moe_spec_for_type(getattr(config, "model_type", None))


def module_layout(config: Any, tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Hub layout (one tensor per expert) -> transformers' fused in-memory layout."""
    spec = moe_spec(config)
    if spec is None:
        return tensors
    n_exp = int(getattr(config, spec.num_experts_key))
    out: dict[str, torch.Tensor] = {}
    taken: set[str] = set()
    for i in range(int(config.num_hidden_layers)):
        lp = _LAYER.format(i=i)
        names = {
            role: [lp + tmpl.format(e=e) for e in range(n_exp)]
            for role, tmpl in spec.experts.items()
        }
        if names["gate"][0] not in tensors:
            continue
        gate_up = [
            torch.cat([tensors[g], tensors[u]], 0)
            for g, u in zip(names["gate"], names["up"], strict=True)
        ]
        out[lp + spec.module_gate_up] = torch.stack(gate_up)  # [E, 2I, H]
        out[lp + spec.module_down] = torch.stack([tensors[d] for d in names["down"]])  # [E, H, I]
        out[lp + spec.module_router] = tensors[lp + spec.router]
        taken.update(*names.values(), {lp + spec.router})
    for name, t in tensors.items():
        if name not in taken:
            out[name] = t
    return out


class RouterTap:
    """Collects every router's logits during a forward pass (hooks on the router modules)."""

    def __init__(self, model: nn.Module, spec: MoeSpec, top_k: int) -> None:
        self.top_k = top_k
        self.logits: list[torch.Tensor] = []
        router = spec.module_router.removesuffix(".weight")
        pattern = re.compile(r"(.*\.)?layers\.\d+\." + re.escape(router) + "$")
        self.hooks = [
            m.register_forward_hook(self._keep)
            for name, m in model.named_modules()
            if pattern.match(name)
        ]

    def _keep(self, _m: nn.Module, _args: tuple[Any, ...], out: Any) -> None:
        logits = out[0] if isinstance(out, tuple) else out
        self.logits.append(logits.float())  # [tokens, E]

    def clear(self) -> None:
        self.logits = []

    def remove(self) -> None:
        for h in self.hooks:
            h.remove()

    def losses(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(load-balancing loss, z-loss), each averaged over layers."""
        aux, z = [], []
        for logits in self.logits:
            probs = logits.softmax(dim=-1)  # [tokens, E]
            n_exp = probs.shape[-1]
            chosen = probs.topk(self.top_k, dim=-1).indices  # [tokens, k]
            frac = (
                torch.zeros(n_exp, device=probs.device).index_add_(
                    0, chosen.reshape(-1), torch.ones(chosen.numel(), device=probs.device)
                )
                / chosen.numel()
            )
            aux.append(n_exp * (frac * probs.mean(dim=0)).sum())
            z.append(torch.logsumexp(logits, dim=-1).pow(2).mean())
        return torch.stack(aux).mean(), torch.stack(z).mean()

    @torch.no_grad()
    def load(self) -> list[list[float]]:
        """Per layer, the fraction of top-k assignments each expert received."""
        out = []
        for logits in self.logits:
            chosen = logits.topk(self.top_k, dim=-1).indices.reshape(-1)
            counts = torch.bincount(chosen, minlength=logits.shape[-1]).float()
            out.append([round(float(c), 4) for c in counts / chosen.numel()])
        return out


def active_params(model: nn.Module, config: Any) -> int:
    """Parameters a token uses: everything but the routed experts, plus top-k of them."""
    spec = moe_spec(config)
    total = sum(p.numel() for p in model.parameters())
    if spec is None:
        return total
    n_exp = int(getattr(config, spec.num_experts_key))
    k = int(getattr(config, spec.top_k_key))
    routed = sum(
        p.numel()
        for name, p in model.named_parameters()
        if name.endswith((spec.module_gate_up, spec.module_down))
    )
    return total - routed + routed * k // n_exp


def router_tap(model: nn.Module, config: Any) -> RouterTap | None:
    """Hooks on an MoE model's routers, None for a dense model."""
    spec = moe_spec(config)
    if spec is None:
        return None
    return RouterTap(model, spec, int(getattr(config, spec.top_k_key)))


def moe_coefs(config: Any, optim: Any) -> tuple[float, float]:
    """(load-balancing, z-loss) coefficients: the recipe's, else the model config's."""
    spec = moe_spec(config)
    assert spec is not None
    aux = optim.moe_aux_loss_coef
    if aux is None:
        aux = float(getattr(config, spec.aux_coef_key, 0.0) or 0.0)
    return float(aux), float(optim.moe_z_loss_coef)

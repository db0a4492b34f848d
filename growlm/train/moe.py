"""Mixture-of-Experts models in the trainer: the in-memory layout, router statistics and the
auxiliary losses.

Plans and exports keep the hub layout, one tensor per expert (training checkpoints hold the
in-memory one); transformers 5 holds
the experts fused, ``gate_up_proj`` [E, 2I, H] and ``down_proj`` [E, H, I]. ``module_layout``
turns the one into the other, for weights and AdamW moments alike (a moment is laid out as its
weight); ``hub_layout`` turns it back for a stage's export.

Router statistics come from forward hooks on the routers (``RouterTap``): the router logits of
every MoE layer, [tokens, E]. From them, per step:
- load-balancing loss (Switch Transformer, Fedus et al. 2021): E * sum_i f_i P_i, with f_i the
  fraction of top-k assignments that go to expert i and P_i the mean router probability, averaged
  over layers; 1 when perfectly balanced;
- router z-loss (ST-MoE, Zoph et al. 2022): mean over tokens of logsumexp(logits)^2;
- expert load: f_i per layer, logged to the metrics JSONL.

The logged statistics cover the whole optimizer step: every micro-batch of every rank
(``tally`` each micro-batch, ``step_stats`` sums over ranks), so one process with gradient
accumulation and torchrun with the same global batch log the same numbers.
"""

from __future__ import annotations

import re
from typing import Any

import torch
from torch import nn

from growlm.arch.moe import MoeSpec, moe_spec_for_type
from growlm.train import distributed
from growlm.train.distributed import DistContext

_LAYER = "model.layers.{i}."


def moe_spec(config: Any) -> MoeSpec | None:
    return moe_spec_for_type(getattr(config, "model_type", None))


def _expert_names(spec: MoeSpec, lp: str, n_exp: int) -> dict[str, list[str]]:
    """Layer ``lp``'s hub-layout expert tensors by role (gate, up, down), one per expert."""
    return {
        role: [lp + tmpl.format(e=e) for e in range(n_exp)] for role, tmpl in spec.experts.items()
    }


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
        names = _expert_names(spec, lp, n_exp)
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


def hub_layout(config: Any, tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """transformers' fused in-memory layout -> the hub layout (one tensor per expert), the
    inverse of ``module_layout``: what an export writes, so that tools reading published
    checkpoints of the family read it. The expert tensors are views of the fused ones (no copy:
    an export holds no second copy of the experts); a dense model's tensors are returned as is."""
    spec = moe_spec(config)
    if spec is None:
        return tensors
    out: dict[str, torch.Tensor] = {}
    taken: set[str] = set()
    for i in range(int(config.num_hidden_layers)):
        lp = _LAYER.format(i=i)
        fused = [lp + spec.module_gate_up, lp + spec.module_down, lp + spec.module_router]
        if fused[0] not in tensors:
            continue
        gate_up, down, router = (tensors[n] for n in fused)  # [E, 2I, H], [E, H, I], [E, H]
        ffn = gate_up.shape[1] // 2
        parts = {"gate": gate_up[:, :ffn], "up": gate_up[:, ffn:], "down": down}
        for role, names in _expert_names(spec, lp, gate_up.shape[0]).items():
            out.update({name: parts[role][e] for e, name in enumerate(names)})
        out[lp + spec.router] = router
        taken.update(fused)
    for name, t in tensors.items():
        if name not in taken:
            out[name] = t
    return out


class RouterTap:
    """Collects every router's logits during a training forward pass (hooks on the router
    modules; forwards in eval mode, such as the validation loss, are not collected)."""

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
        self._sums: torch.Tensor | None = None  # [2 + layers * E]: aux, z, then counts
        self._micro = 0
        self._experts = 0

    def _keep(self, module: nn.Module, _args: tuple[Any, ...], out: Any) -> None:
        if not module.training:
            return  # an evaluation's forward: not part of the training step's losses
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
    def tally(self, aux: torch.Tensor, z: torch.Tensor) -> None:
        """Add this micro-batch's losses and top-k assignments per expert to the step's."""
        n_exp = self.logits[0].shape[-1]
        chosen = [logits.topk(self.top_k, dim=-1).indices.reshape(-1) for logits in self.logits]
        counts = torch.stack([torch.bincount(c, minlength=n_exp) for c in chosen])  # [layers, E]
        self._experts = n_exp
        row = torch.cat([torch.stack([aux, z]).double(), counts.reshape(-1).double()])
        self._sums = row if self._sums is None else self._sums + row
        self._micro += 1

    @torch.no_grad()
    def step_stats(self, ctx: DistContext) -> dict[str, Any]:
        """The step's statistics over every rank (a collective: every rank calls it), then
        reset: mean aux and z-loss over micro-batches, and per layer the fraction of top-k
        assignments each expert received."""
        assert self._sums is not None, "step_stats before any tally"
        sums = distributed.all_reduce_sum(ctx, self._sums.to(ctx.device)).cpu()
        micro = self._micro * ctx.world_size
        self._sums, self._micro = None, 0
        counts = sums[2:].view(-1, self._experts)  # [layers, E]
        load = counts / counts.sum(dim=-1, keepdim=True)
        return {
            "aux_loss": float(sums[0]) / micro,
            "z_loss": float(sums[1]) / micro,
            "expert_load": [[round(float(f), 4) for f in layer] for layer in load],
        }


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

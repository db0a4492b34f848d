"""What training minimises: next-token cross-entropy, plus an MoE's router losses
(``growlm.train.moe``: Switch load balancing and ST-MoE z-loss), whose per-step statistics
go to the metrics."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from transformers import PretrainedConfig

from growlm.train.distributed import DistContext
from growlm.train.moe import RouterTap, moe_coefs, router_tap
from growlm.train.recipe import OptimConfig

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def token_loss(
    logits: torch.Tensor, targets: torch.Tensor, reduction: str = "mean"
) -> torch.Tensor:
    """Next-token cross-entropy of [B, T, V] logits (any dtype, computed in fp32)."""
    return F.cross_entropy(logits.float().flatten(0, 1), targets.flatten(), reduction=reduction)


class Objective:
    """One stage's training objective: ``loss_fn`` (``token_loss``, maybe compiled) of each
    micro-batch, plus, for an MoE, coef * load-balancing + z_coef * z-loss of its routers (hooks
    on the model's routers until ``close``)."""

    def __init__(
        self, loss_fn: LossFn, tap: RouterTap | None = None, coefs: tuple[float, float] = (0, 0)
    ) -> None:
        self.loss_fn, self.tap, self.coefs = loss_fn, tap, coefs

    @classmethod
    def for_model(
        cls, loss_fn: LossFn, model: nn.Module, config: PretrainedConfig, optim: OptimConfig
    ) -> Objective:
        """The objective of training ``model`` (unwrapped): router losses for an MoE, with the
        recipe's coefficients (else the model config's)."""
        tap = router_tap(model, config)
        return cls(loss_fn) if tap is None else cls(loss_fn, tap, moe_coefs(config, optim))

    def __call__(
        self, logits: torch.Tensor, targets: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(token loss, loss to minimise) of one micro-batch."""
        loss = self.loss_fn(logits, targets)
        if self.tap is None:
            return loss, loss
        return loss, loss + self._router_losses()

    def _router_losses(self) -> torch.Tensor:
        """The routers' losses of this micro-batch; their statistics are tallied for the
        step's metrics."""
        assert self.tap is not None
        aux_coef, z_coef = self.coefs
        aux, z = self.tap.losses()
        self.tap.tally(aux.detach(), z.detach())
        self.tap.clear()
        return aux_coef * aux + z_coef * z

    def metrics(self, ctx: DistContext) -> dict[str, Any]:
        """The step's router statistics over every micro-batch of every rank (aux_loss, z_loss,
        expert_load per layer; a collective: every rank calls it); none for a dense model."""
        return {} if self.tap is None else self.tap.step_stats(ctx)

    def close(self) -> None:
        if self.tap is not None:
            self.tap.remove()

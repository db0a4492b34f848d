"""What a training run carries from step to step and from stage to stage: ``Progress`` (plain
data, saved in every checkpoint) and ``RunState`` (the model, its config and AdamW state beside
it)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from transformers import PretrainedConfig

from growlm.train.flops import TokenFlops

OptimState = dict[str, dict[str, torch.Tensor]]  # parameter name -> AdamW state (full tensors)


@dataclass
class Progress:
    """Where the run is; saved in every checkpoint."""

    stage: int = 0
    stage_step: int = 0
    stage_done: bool = False
    step: int = 0
    tokens: int = 0
    flops: float = 0.0
    attn_flops: float = 0.0
    elapsed: float = 0.0
    sampler: dict[str, int] = field(default_factory=dict)
    lr_scale: float = 1.0  # lowered by skipped non-finite steps (run.on_nonfinite: skip)
    skipped: int = 0
    loss_avg: float | None = None  # recent average loss, for spike events
    fade: dict[str, Any] | None = None  # MSG masks still ramping in this stage (FadePlan)
    train_from: int | None = None  # MSLT: layers below this index are frozen in this stage

    def start_stage(self, index: int) -> None:
        self.stage, self.stage_step, self.stage_done = index, 0, False
        self.fade, self.train_from = None, None

    def advance(self, tokens: int, rate: TokenFlops) -> None:
        """One optimizer step over ``tokens`` tokens at ``rate`` FLOPs per token."""
        self.stage_step += 1
        self.step += 1
        self.tokens += tokens
        self.flops += rate.model * tokens
        self.attn_flops += rate.attention * tokens

    def loss_event(self, loss: float | None, spike_factor: float) -> str | None:
        """The step's event for the metrics: ``skipped_nonfinite`` (``loss`` None), ``loss_spike``
        (above ``spike_factor`` times the recent average), or None. A finite loss joins the
        average (exponential, over ~20 steps)."""
        if loss is None:
            return "skipped_nonfinite"
        avg = self.loss_avg
        spike = bool(spike_factor) and avg is not None and loss > spike_factor * avg
        self.loss_avg = loss if avg is None else 0.95 * avg + 0.05 * loss
        return "loss_spike" if spike else None


@dataclass
class RunState:
    """The run between steps: the model and its config, the model as it trains (``wrapped``:
    on the device, compiled, DDP/FSDP; None until prepared, or when a growth or a change of the
    trainable set needs it prepared again), the AdamW state the next stage starts from, and
    ``progress``."""

    config: PretrainedConfig
    model: nn.Module
    progress: Progress = field(default_factory=Progress)
    wrapped: nn.Module | None = None
    optim: OptimState | None = None  # full AdamW state: from the checkpoint or the last stage
    local_optim: OptimState | None = None  # sharded resume in a stage: this rank's own shards
    mid_stage: int | None = None  # the stage a checkpoint left unfinished (resumes in it)

    @property
    def first_stage(self) -> int:
        """The first stage still to train (a finished stage's checkpoint resumes after it)."""
        return self.progress.stage + (1 if self.progress.stage_done else 0)

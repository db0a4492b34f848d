"""The training loop: stages in order, growth between them, AdamW steps with accumulation,
evaluation, logging, checkpoints, and exact resume. One code path for one process and for
torchrun (see ``distributed``).

What the loop carries lives in ``state`` (``Progress``, saved in checkpoints, and ``RunState``),
what it minimises in ``loss``, what it counts in ``flops``; whether a checkpoint may be resumed
under the current recipe is the recipe's to say (``recipe.check_resumable``)."""

from __future__ import annotations

import dataclasses
import math
import random
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml
from torch import nn
from transformers import PretrainedConfig

from growlm.data.sampler import WindowSampler
from growlm.errors import InvalidData, InvalidRecipe, NumericalFault, OutputExists
from growlm.io.atomic import write_text_atomic
from growlm.io.model_card import train_card
from growlm.models.templates import materialise
from growlm.train import distributed
from growlm.train.checkpoint import (
    CHECKPOINTS,
    Checkpoint,
    export_hf,
    list_checkpoints,
    load_checkpoint,
    require_checkpoint_room,
    rng_restore,
    save_checkpoint,
)
from growlm.train.data import TrainData, open_training_data
from growlm.train.distributed import DistContext
from growlm.train.flops import TokenFlops, token_flops
from growlm.train.growth import (
    check_growth,
    grow_moments,
    grow_weights,
    new_layers,
    set_trainable,
)
from growlm.train.loss import Objective, token_loss
from growlm.train.masks import FadeMasks, FadePlan, fade_plan
from growlm.train.metrics import METRICS_FILE, MetricsLogger
from growlm.train.model import (
    build_config,
    build_model,
    compile_blocks,
    init_folder,
    init_metadata,
    load_config,
    load_init_weights,
)
from growlm.train.moe import module_layout
from growlm.train.optim import lr_at, make_optimizer, set_lr
from growlm.train.precision import autocast_dtype
from growlm.train.recipe import OptimConfig, Recipe, check_resumable, recipe_to_dict
from growlm.train.sharded import (
    install_local_weights,
    read_local_shards,
    write_local_shards,
)
from growlm.train.state import OptimState, Progress, RunState

FINAL = "final"


@dataclass
class RunResult:
    out_dir: Path
    steps: int
    tokens: int
    final_loss: float | None
    final_val_loss: float | None


@dataclass
class StepResult:
    """One optimizer step as the metrics see it."""

    loss: float
    grad_norm: float
    lr: float
    tokens: int
    seconds: float

    @property
    def finite(self) -> bool:
        return math.isfinite(self.loss) and math.isfinite(self.grad_norm)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def train(recipe: Recipe, out_dir: Path, resume: bool = False) -> RunResult:
    """Run (or resume) ``recipe`` writing to ``out_dir``; see docs/train.md."""
    ctx = distributed.init(recipe.run.device, recipe.run.parallel)
    if recipe.run.threads:
        torch.set_num_threads(recipe.run.threads)
    data = open_training_data(recipe.data, ctx)
    if recipe.model.init is not None:
        rows = int(load_config(init_folder(recipe.model.init)).vocab_size)
        if data.vocab_size > rows:
            raise InvalidData(
                f"the data's tokenizer has {data.vocab_size} ids but model.init "
                f"{str(recipe.model.init)!r} has {rows} embedding rows: prepare the data with "
                f"the model's tokenizer (growlm data prepare --tokenizer {recipe.model.init})"
            )
    return Trainer(recipe, Path(out_dir), ctx, data).run(resume)


class Trainer:
    """One run: holds the recipe, data, process context and the current model."""

    def __init__(self, recipe: Recipe, out_dir: Path, ctx: DistContext, data: TrainData):
        self.recipe, self.out, self.ctx, self.data = recipe, out_dir, ctx, data
        self.seq_len = recipe.data.seq_len
        self.steps = [self._stage_steps(i) for i in range(len(recipe.stages))]
        self.sampler = WindowSampler(data.train.count, recipe.seed)
        self.autocast_dtype: torch.dtype | None = None  # set per stage (run.precision)
        self._loss = token_loss
        if recipe.run.compile:
            # cast, log-softmax and NLL fused: the fp32 copy of [tokens, vocab] never exists
            self._loss = torch.compile(token_loss)
        self._session_start = time.perf_counter()
        self._elapsed_before = 0.0

    # ---- planning -----------------------------------------------------------------------
    def _global_batch(self, optim: OptimConfig) -> int:
        return optim.micro_batch_size * optim.grad_accum * self.ctx.world_size

    def _stage_steps(self, index: int) -> int:
        tokens_per_step = self._global_batch(self.recipe.stage_optim(index)) * self.seq_len
        return math.ceil(self.recipe.stages[index].tokens / tokens_per_step)

    def _plan_growth(self, state: RunState) -> PretrainedConfig:
        """Dry-run every growth still to come (fails before any training) and check that every
        fade ramp still to run ends within its stage; returns the config of the run's last
        (largest) model."""
        config = state.config
        for index in range(state.first_stage, len(self.recipe.stages)):
            stage = self.recipe.stages[index]
            fade_steps = None
            if index == state.mid_stage:  # grown before the checkpoint; its ramp may still run
                fade = state.progress.fade
                fade_steps = None if fade is None else FadePlan.from_json(fade).fade_steps
            elif stage.grow is not None:
                where = f"stages.{index}.grow"
                config = check_growth(config, stage.grow, where, stage.trainable)
                fade_steps = stage.grow.fade_steps
            if fade_steps is not None and fade_steps >= self.steps[index]:
                raise InvalidRecipe(
                    f"stages.{index}.grow.fade_steps: {fade_steps} must be < the stage's "
                    f"{self.steps[index]} steps (the masks ramp to 1 and fold away inside the "
                    "stage, before its export)"
                )
        max_pos = getattr(config, "max_position_embeddings", None)
        if max_pos is not None and self.seq_len > int(max_pos):
            raise InvalidRecipe(
                f"data.seq_len {self.seq_len} exceeds model max_position_embeddings {max_pos}"
            )
        return config

    # ---- the run ------------------------------------------------------------------------
    def run(self, resume: bool) -> RunResult:
        ckpt = self._checkpoint_to_resume(resume)
        seed_everything(self.recipe.seed)
        state = self._fresh_state() if ckpt is None else self._restored_state(ckpt)
        largest = self._plan_growth(state)
        if self.ctx.is_main:
            require_checkpoint_room(self.out, largest)
        if ckpt is not None:  # after every model construction, which draws from the RNG
            rng_restore(ckpt.rng, ckpt.state["rng"])
        if self.ctx.is_main:
            self.out.mkdir(parents=True, exist_ok=True)
            recipe = yaml.safe_dump(recipe_to_dict(self.recipe), sort_keys=False)
            write_text_atomic(self.out / "recipe.yaml", recipe)
        if state.progress.stage_done:
            self._export_if_missing(state)
        logger = self._logger(state.progress.step)
        last: dict[str, Any] = {}
        try:
            for index in range(state.first_stage, len(self.recipe.stages)):
                last = self._run_stage(index, state, logger)
            wrapped = state.wrapped
            if wrapped is None:
                wrapped = self._prepare_model(state.model)
            self._export(self.out / FINAL, wrapped, state.config, state.progress)
        finally:
            logger.close()
        distributed.barrier(self.ctx)
        progress = state.progress
        return RunResult(
            self.out, progress.step, progress.tokens, last.get("loss"), last.get("val_loss")
        )

    def _run_stage(self, index: int, state: RunState, logger: MetricsLogger) -> dict[str, Any]:
        """Stage ``index`` from its start (growing first, if it grows) or from where the
        checkpoint left it; then its checkpoint and export. Returns its last metrics record."""
        within = index == state.mid_stage
        optim_init = state.optim if within else self._start_stage(index, state)
        wrapped = self._trainable_model(state)
        fade = state.progress.fade
        masks = None if fade is None else FadeMasks(state.model, FadePlan.from_json(fade))
        optimizer = make_optimizer(
            distributed.unwrap(wrapped), self.recipe.stage_optim(index), fused=not self.ctx.fsdp
        )
        if optim_init:
            distributed.load_optim_state(wrapped, optimizer, optim_init)
        elif state.local_optim is not None:  # resumed in this stage from a sharded checkpoint
            distributed.load_optim_state(wrapped, optimizer, state.local_optim, local=True)
        last = self._train_stage(index, state, optimizer, logger, masks)
        assert state.progress.fade is None, "MSG masks still active at the end of a stage"
        state.optim = distributed.full_optim_state(wrapped, optimizer)
        state.local_optim = None
        self._save_checkpoint(wrapped, optimizer, state.config, state.progress, state.optim)
        self._export(
            self.out / self.recipe.stages[index].name, wrapped, state.config, state.progress
        )
        return last

    def _start_stage(self, index: int, state: RunState) -> OptimState | None:
        """A stage from its first step: its growth, if any; returns the AdamW state it starts
        from (the last stage's, or after a growth the moments carried through it, or None)."""
        state.progress.start_stage(index)
        if self.recipe.stages[index].grow is None:
            return state.optim
        return self._grow(index, state)

    def _trainable_model(self, state: RunState) -> nn.Module:
        """The model as the stage trains it: its trainable set (MSLT) applied, prepared for the
        device and the process group (again, when that set changed)."""
        if set_trainable(state.model, state.progress.train_from) and state.wrapped is not None:
            state.wrapped = None  # requires_grad changed: DDP must see the new set
        if state.wrapped is None:
            state.wrapped = self._prepare_model(state.model)
        return state.wrapped

    def _export_if_missing(self, state: RunState) -> None:
        """Resumed after a finished stage: killed between the stage's checkpoint and its export,
        the export is written now (rank 0 decides, so every rank takes part in the same
        collectives)."""
        finished = self.out / self.recipe.stages[state.progress.stage].name
        if distributed.broadcast_object(self.ctx, not finished.is_dir()):
            self._export(finished, state.model, state.config, state.progress)

    def _logger(self, step: int) -> MetricsLogger:
        run = self.recipe.run
        return MetricsLogger(
            self.out,
            self.ctx.is_main,
            sum(self.steps),
            step,
            run.progress,
            run.tensorboard,
            run.wandb_project,
            self.recipe.name,
            recipe_to_dict(self.recipe),
        )

    def _checkpoint_to_resume(self, resume: bool) -> Checkpoint | None:
        """The checkpoint to resume from (None: start afresh), after checking that ``out``
        holds this run, or nothing, and that the recipe may resume it."""
        found = list_checkpoints(self.out)
        strangers = self.out.is_dir() and any(self.out.iterdir())
        ours = found or any((self.out / f).is_file() for f in ("recipe.yaml", METRICS_FILE))
        if strangers and not ours:
            raise OutputExists(
                f"--out {str(self.out)!r} holds files that are not a growlm run: choose a new "
                "or empty folder"
            )
        if not resume:
            if found or (self.out / METRICS_FILE).exists():
                raise OutputExists(
                    f"{str(self.out)!r} already holds a run; pass --resume to continue it "
                    "or choose another --out"
                )
            return None
        if not found:
            return None
        ckpt = load_checkpoint(found[-1])
        progress = ckpt.state["progress"]
        saved = ckpt.state.get("recipe", {})
        done = bool(progress.get("stage_done"))
        check_resumable(self.recipe, saved, progress["stage"], done, str(self.out))
        return ckpt

    # ---- models -------------------------------------------------------------------------
    def _fresh_state(self) -> RunState:
        config = build_config(self.recipe.model, self.data.vocab_size, self.data.eos_id)
        return RunState(config, self._initial_model(config))

    def _restored_state(self, ckpt: Checkpoint) -> RunState:
        """The run where ``ckpt`` left it: model, AdamW state, progress, data position."""
        progress = Progress(**ckpt.state["progress"])
        self.sampler.load_state_dict(progress.sampler)
        self._elapsed_before = progress.elapsed
        mid_stage = None if progress.stage_done else progress.stage
        if ckpt.state.get("sharded"):
            model, wrapped, optim, local = self._restored_sharded(ckpt, progress)
            return RunState(ckpt.config, model, progress, wrapped, optim, local, mid_stage)
        model = self._restored_model(ckpt)
        return RunState(ckpt.config, model, progress, optim=ckpt.optimizer, mid_stage=mid_stage)

    def _grow(self, index: int, state: RunState) -> OptimState | None:
        """Stage ``index``'s growth of ``state``'s model and config; returns the AdamW state to
        start from: the moments grown by the same operator with ``optimizer_state: carry``, else
        None. Records in the progress what the stage does with the new structure (masks,
        MSLT)."""
        stage = self.recipe.stages[index]
        assert stage.grow is not None
        config, progress = state.config, state.progress
        seed = self.recipe.seed + index
        model = state.wrapped if state.wrapped is not None else state.model
        weights = distributed.full_state(model)
        # G_learn trains its maps on batches of its own stream: the training sampler's
        # position stays what an operator without training would leave
        sampler = WindowSampler(self.data.train.count, self.recipe.seed + 7919 * (index + 1))
        micro = self.recipe.stage_optim(index).micro_batch_size

        def batches(step: int) -> torch.Tensor:
            return self.data.train.batch(sampler.take(micro))

        precision = self.recipe.run.precision
        self.autocast_dtype = autocast_dtype(precision, config, self.ctx.device.type)
        new_config, new_weights, report = grow_weights(
            config, weights, stage.grow, seed, batches, self.autocast_dtype
        )
        progress.flops += float(report.get("flops", 0.0))  # G_learn's map training
        carried = None
        if stage.optimizer_state == "carry" and state.optim:
            carried = grow_moments(config, state.optim, stage.grow, weights, seed)
        if stage.grow.fade_steps is not None:
            fade = fade_plan(config, new_config, report, stage.grow.fade_steps)
            progress.fade = fade.to_json()
        if stage.trainable == "new":
            progress.train_from = new_layers(report, f"stages.{index}.grow")
        state.config = new_config
        state.model = self._model_from_weights(new_config, new_weights)
        state.wrapped = None
        return carried

    def _initial_model(self, config: PretrainedConfig) -> nn.Module:
        model = self._build_model(config)
        if self.recipe.model.init is not None:
            weights = load_init_weights(init_folder(self.recipe.model.init))
            self._load_weights(model, module_layout(config, weights))  # MoE: experts fused
        return model

    def _restored_sharded(
        self, ckpt: Checkpoint, progress: Progress
    ) -> tuple[nn.Module, nn.Module, OptimState | None, OptimState | None]:
        """(model, wrapped model, full AdamW state, local AdamW shards) from a sharded
        checkpoint: the model is sharded first, then each rank copies in its own shards. In a
        stage the optimizer takes the local shards as they are; at a stage end the next stage
        may grow them, which needs them whole (gathered once)."""
        world = int(ckpt.state["sharded"]["world_size"])
        weights, local = read_local_shards(ckpt.path, self.ctx, world)
        model = self._build_model(ckpt.config)
        wrapped = self._prepare_model(model)
        install_local_weights(wrapped, weights)
        if not progress.stage_done:
            return model, wrapped, None, local
        optimizer = make_optimizer(
            distributed.unwrap(wrapped), self.recipe.stage_optim(progress.stage), fused=False
        )
        distributed.load_optim_state(wrapped, optimizer, local, local=True)
        return model, wrapped, distributed.full_optim_state(wrapped, optimizer), None

    def _restored_model(self, ckpt: Checkpoint) -> nn.Module:
        model = self._build_model(ckpt.config)
        self._load_weights(model, ckpt.model)
        return model

    def _model_from_weights(
        self, config: PretrainedConfig, weights: dict[str, torch.Tensor]
    ) -> nn.Module:
        model = self._build_model(config)
        self._load_weights(model, weights)
        return model

    @staticmethod
    def _load_weights(model: nn.Module, weights: dict[str, torch.Tensor]) -> None:
        result = model.load_state_dict(weights, strict=False)
        tied = {"lm_head.weight"} if getattr(model.config, "tie_word_embeddings", False) else set()
        missing = set(result.missing_keys) - tied
        if missing:
            raise InvalidRecipe(
                f"weights are missing {len(missing)} tensors, e.g. {sorted(missing)[0]}"
            )
        model.tie_weights()  # type: ignore[operator]

    def _build_model(self, config: PretrainedConfig) -> nn.Module:
        run = self.recipe.run
        return build_model(
            config,
            self.recipe.model.attn_implementation,
            self.ctx.device,
            run.compile,
            self.seq_len,
        )

    def _prepare_model(self, model: nn.Module) -> nn.Module:
        model.to(self.ctx.device)
        model.train()
        if self.recipe.run.compile:
            compile_blocks(model)
        return distributed.wrap(model, self.ctx)

    # ---- one stage ----------------------------------------------------------------------
    def _train_stage(
        self,
        index: int,
        state: RunState,
        optimizer: torch.optim.Optimizer,
        logger: MetricsLogger,
        masks: FadeMasks | None = None,
    ) -> dict[str, Any]:
        """Stage ``index`` from its current step to its end, one optimizer step of the prepared
        model at a time: its metrics record, evaluation and checkpoints on the run's cadence.
        Returns the last record."""
        model, config, progress = state.wrapped, state.config, state.progress
        assert model is not None
        cfg, total, run = self.recipe.stage_optim(index), self.steps[index], self.recipe.run
        self.autocast_dtype = autocast_dtype(run.precision, config, self.ctx.device.type)
        base = distributed.unwrap(model)
        rate = token_flops(base, config, self.seq_len, frozen=progress.train_from is not None)
        objective = Objective.for_model(self._loss, base, config, cfg)
        record: dict[str, Any] = {}
        while progress.stage_step < total:
            if masks is not None and progress.stage_step >= masks.plan.fade_steps:
                masks.remove()  # m = 1: every hook is the identity; the model is plain again
                masks, progress.fade = None, None
            mask = masks.set(progress.stage_step) if masks is not None else None
            step = self._step(index, cfg, model, optimizer, objective, progress)
            progress.advance(step.tokens, rate)
            progress.elapsed = self._elapsed()
            record = self._record(index, step, progress)
            if mask is not None:
                record["mask"] = mask  # MSG: the weight of the new structure at this step
            record.update(objective.metrics(self.ctx))  # MoE: aux/z-loss, expert load (all ranks)
            self._add_events(record, step, progress, rate)
            stage_end = progress.stage_step == total
            if self.data.val is not None and (
                stage_end or (run.eval_every and progress.step % run.eval_every == 0)
            ):
                record["val_loss"] = self._evaluate(model, cfg.micro_batch_size)
            if stage_end:
                progress.stage_done = True
            logger.log(record)
            if not stage_end and run.checkpoint_every and progress.step % run.checkpoint_every == 0:
                self._save_checkpoint(model, optimizer, config, progress)
        objective.close()
        return record

    def _step(
        self,
        index: int,
        cfg: OptimConfig,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        objective: Objective,
        progress: Progress,
    ) -> StepResult:
        """One timed optimizer step of stage ``index`` (settings ``cfg``) on the next global
        batch, with the run's policy for a non-finite loss or gradient: stop, or skip the batch
        and lower the lr."""
        run = self.recipe.run
        started = time.perf_counter()
        lr = lr_at(progress.stage_step, self.steps[index], cfg) * progress.lr_scale
        set_lr(optimizer, lr)
        batch = self.data.train.batch(self.sampler.take(self._global_batch(cfg)))
        loss, grad_norm = self._update(model, optimizer, batch, cfg, objective)
        if not (math.isfinite(loss) and math.isfinite(grad_norm)):
            if run.on_nonfinite == "stop" or progress.skipped >= run.max_skipped_steps:
                name = self.recipe.stages[index].name
                self._numerical_fault(progress.step + 1, name, loss, grad_norm)
            progress.skipped += 1  # the batch is dropped; lower the lr from here on
            progress.lr_scale *= run.skip_lr_factor
        if self.ctx.device.type == "cuda":
            torch.cuda.synchronize()
        seconds = time.perf_counter() - started
        return StepResult(loss, grad_norm, lr, batch.shape[0] * self.seq_len, seconds)

    def _record(self, index: int, step: StepResult, progress: Progress) -> dict[str, Any]:
        """The metrics record of the step just taken (a non-finite loss is logged as None)."""
        return {
            "step": progress.step,
            "stage": self.recipe.stages[index].name,
            "tokens": progress.tokens,
            "flops": progress.flops,
            "attn_flops": progress.attn_flops,
            "loss": step.loss if step.finite else None,
            "lr": step.lr,
            "grad_norm": step.grad_norm if step.finite else None,
            "tokens_per_s": step.tokens / step.seconds,
            "elapsed": round(progress.elapsed, 3),
        }

    def _add_events(
        self, record: dict[str, Any], step: StepResult, progress: Progress, rate: TokenFlops
    ) -> None:
        """A skipped step or a loss spike, peak CUDA memory and MFU, where they apply."""
        run = self.recipe.run
        event = progress.loss_event(step.loss if step.finite else None, run.spike_factor)
        if event is not None:
            record["event"] = event
        if self.ctx.device.type == "cuda":  # peak since the run started, this process
            peak = torch.cuda.max_memory_allocated(self.ctx.device)
            record["cuda_mem_peak_gib"] = round(peak / 2**30, 3)
        if run.peak_flops:
            achieved = (rate.model + rate.attention) * step.tokens / step.seconds
            record["mfu"] = achieved / (run.peak_flops * self.ctx.world_size)

    def _autocast(self) -> Any:
        return torch.autocast(
            self.ctx.device.type,
            dtype=self.autocast_dtype or torch.float32,
            enabled=self.autocast_dtype is not None,
        )

    def _update(
        self,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        batch: torch.Tensor,
        cfg: OptimConfig,
        objective: Objective,
    ) -> tuple[float, float]:
        """One optimizer update over this rank's share of the global batch [B, T+1] (skipped
        when the loss or the gradient norm is not finite); (mean loss, gradient norm)."""
        accum, micro = cfg.grad_accum, cfg.micro_batch_size
        local = batch.view(self.ctx.world_size, accum, micro, -1)[self.ctx.rank]
        local = _to_device(local, self.ctx.device)  # [accum, micro, T+1]
        total = torch.zeros((), device=self.ctx.device)
        for j in range(accum):
            inputs, targets = local[j, :, :-1], local[j, :, 1:]  # [micro, T]
            with distributed.set_grad_sync(model, self.ctx, j == accum - 1):
                with self._autocast():
                    logits = model(input_ids=inputs).logits  # [micro, T, V]
                loss, minimised = objective(logits, targets)
                (minimised / accum).backward()
            total += loss.detach()
        max_norm = cfg.grad_clip if cfg.grad_clip > 0 else float("inf")
        norm = torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm)
        mean = distributed.all_reduce_sum(self.ctx, total / accum) / self.ctx.world_size
        loss_value, norm_value = float(mean), float(_local(norm))
        # both values are the same on every rank (all-reduced), so every rank decides alike
        if math.isfinite(loss_value) and math.isfinite(norm_value):
            optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return loss_value, norm_value

    @torch.no_grad()
    def _evaluate(self, model: nn.Module, micro: int) -> float:
        """Mean token loss on the first ``run.eval_sequences`` validation windows, split over
        ranks; the same windows at every evaluation and for any number of processes."""
        assert self.data.val is not None
        count = min(self.data.val.count, self.recipe.run.eval_sequences)
        count -= count % self.ctx.world_size  # equal forward passes on every rank (FSDP)
        if count == 0:
            raise InvalidRecipe("run.eval_sequences must be >= the number of processes")
        mine = np.arange(count)[self.ctx.rank :: self.ctx.world_size]
        sums = torch.zeros(2, dtype=torch.float64, device=self.ctx.device)
        model.eval()
        for start in range(0, len(mine), micro):
            batch = _to_device(self.data.val.batch(mine[start : start + micro]), self.ctx.device)
            with self._autocast():
                logits = model(input_ids=batch[:, :-1]).logits
            loss = token_loss(logits, batch[:, 1:], reduction="sum")
            sums += torch.stack(
                [
                    loss.double(),
                    torch.tensor(batch[:, 1:].numel(), dtype=torch.float64, device=self.ctx.device),
                ]
            )
        model.train()
        distributed.reshard(model)
        sums = distributed.all_reduce_sum(self.ctx, sums)
        return float(sums[0] / sums[1])

    def _numerical_fault(self, step: int, stage: str, loss: float, grad_norm: float) -> None:
        """Stop before a non-finite step touches the weights or any checkpoint."""
        found = list_checkpoints(self.out)
        last = str(found[-1]) if found else "none (no checkpoint was written yet)"
        raise NumericalFault(
            f"non-finite {'loss' if not math.isfinite(loss) else 'gradient norm'} at step {step} "
            f"(stage {stage!r}; loss {loss}, grad norm {grad_norm}); the step was not applied and "
            f"the last good checkpoint is {last}: resume with --resume and a lower optim.lr "
            f"(e.g. --set stages.{stage}.optim.lr=...)"
        )

    # ---- persistence --------------------------------------------------------------------
    def _elapsed(self) -> float:
        return self._elapsed_before + time.perf_counter() - self._session_start

    def _save_checkpoint(
        self,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        config: PretrainedConfig,
        progress: Progress,
        optim_state: dict[str, dict[str, torch.Tensor]] | None = None,
    ) -> None:
        """A resumable checkpoint: gathered to rank 0 (full), or each rank's own shards
        (``run.checkpoint_format: sharded``, no gather) assembled by rank 0."""
        staging = None
        weights = None
        if self.recipe.run.checkpoint_format == "sharded":
            staging = self.out / CHECKPOINTS / f".tmp-shards-{progress.step:08d}"
            with distributed.all_or_none(self.ctx, f"checkpoint step {progress.step}"):
                if self.ctx.is_main:
                    shutil.rmtree(staging, ignore_errors=True)
                    staging.mkdir(parents=True)
            with distributed.all_or_none(self.ctx, f"checkpoint step {progress.step}"):
                write_local_shards(staging, model, optimizer, self.ctx)
            optim_state = None
        else:
            weights = distributed.full_state(model)
            if optim_state is None:
                optim_state = distributed.full_optim_state(model, optimizer)
        with distributed.all_or_none(self.ctx, f"checkpoint step {progress.step}"):
            if self.ctx.is_main:
                self._write_checkpoint(config, progress, weights, optim_state, staging)

    def _write_checkpoint(
        self,
        config: PretrainedConfig,
        progress: Progress,
        weights: dict[str, torch.Tensor] | None,
        optim_state: dict[str, dict[str, torch.Tensor]] | None,
        staging: Path | None,
    ) -> None:
        """Rank 0's part of a checkpoint: state, RNG, and the gathered or assembled tensors."""
        progress.sampler = self.sampler.state_dict()
        state: dict[str, Any] = {
            "format": 1,
            "progress": dataclasses.asdict(progress),
            "recipe": recipe_to_dict(self.recipe),
        }
        if staging is not None:
            state["sharded"] = {"world_size": self.ctx.world_size}
        save_checkpoint(
            self.out,
            progress.step,
            config,
            weights,
            optim_state,
            state,
            self.recipe.run.keep_checkpoints,
            shards_from=staging,
        )

    def _export(
        self, folder: Path, model: nn.Module, config: PretrainedConfig, progress: Progress
    ) -> None:
        weights = distributed.full_state(model)
        with distributed.all_or_none(self.ctx, f"export of {folder.name}"):
            if self.ctx.is_main:
                card = self._card(folder.name, progress)
                config, weights = materialise(config, weights)  # a template model: plain llama
                export_hf(folder, config, weights, self.data.tokenizer_dir, card)

    def _card(self, name: str, progress: Progress) -> str:
        """The model card of an export: the recipe's stages up to the one just trained."""
        stage = len(self.recipe.stages) - 1 if name == FINAL else progress.stage
        init = self.recipe.model.init
        source = init_metadata(init) if init else {}
        recipe = recipe_to_dict(self.recipe)
        return train_card(name, recipe, stage, progress.step, progress.tokens, source)


def _to_device(batch: torch.Tensor, device: torch.device) -> torch.Tensor:
    """Token ids onto the training device; to a GPU through pinned memory, so the copy is
    asynchronous (the batch is a fresh tensor each step: nothing writes it while in flight)."""
    if device.type != "cuda":
        return batch.to(device)
    return batch.pin_memory().to(device, non_blocking=True)


def _local(value: torch.Tensor) -> torch.Tensor:
    from torch.distributed.tensor import DTensor

    return value.full_tensor() if isinstance(value, DTensor) else value

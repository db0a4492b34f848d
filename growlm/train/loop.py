"""The training loop: stages in order, growth between them, AdamW steps with accumulation,
evaluation, logging, checkpoints, and exact resume. One code path for one process and for
torchrun (see ``distributed``)."""

from __future__ import annotations

import dataclasses
import math
import random
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
import yaml
from torch import nn
from transformers import PretrainedConfig

from growlm.data.sampler import WindowSampler
from growlm.errors import InvalidData, InvalidRecipe, NumericalFault, OutputExists
from growlm.io.atomic import write_text_atomic
from growlm.io.model_card import train_card
from growlm.models.templates import dense_params, materialise
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
from growlm.train.growth import (
    check_growth,
    grow_moments,
    grow_weights,
    new_layers,
    set_trainable,
)
from growlm.train.masks import FadeMasks, FadePlan, fade_plan
from growlm.train.metrics import METRICS_FILE, MetricsLogger
from growlm.train.model import (
    attention_flops_per_token,
    build_config,
    build_model,
    compile_blocks,
    init_folder,
    init_metadata,
    load_config,
    load_init_weights,
    model_flops_per_token,
    param_count,
)
from growlm.train.moe import RouterTap, active_params, module_layout, moe_coefs, router_tap
from growlm.train.optim import lr_at, make_optimizer, set_lr
from growlm.train.precision import autocast_dtype
from growlm.train.recipe import OptimConfig, Recipe, recipe_to_dict
from growlm.train.sharded import (
    install_local_weights,
    read_local_shards,
    write_local_shards,
)

FINAL = "final"


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


@dataclass
class RunResult:
    out_dir: Path
    steps: int
    tokens: int
    final_loss: float | None
    final_val_loss: float | None


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
        self._moe: tuple[RouterTap, tuple[float, float]] | None = None
        self._moe_stats: dict[str, Any] = {}

    # ---- planning -----------------------------------------------------------------------
    def _global_batch(self, optim: OptimConfig) -> int:
        return optim.micro_batch_size * optim.grad_accum * self.ctx.world_size

    def _stage_steps(self, index: int) -> int:
        tokens_per_step = self._global_batch(self.recipe.stage_optim(index)) * self.seq_len
        return math.ceil(self.recipe.stages[index].tokens / tokens_per_step)

    def _plan_growth(self, config: PretrainedConfig, first: int) -> PretrainedConfig:
        """Dry-run every later growth from ``config`` (fails before any training); returns the
        config of the run's last (largest) model."""
        for index in range(first, len(self.recipe.stages)):
            stage = self.recipe.stages[index]
            if stage.grow is not None:
                config = check_growth(
                    config, stage.grow, f"stages.{index}.grow", stage.trainable, self.steps[index]
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
        progress = Progress()
        prev_optim: dict[str, dict[str, torch.Tensor]] | None = None
        local_optim: dict[str, dict[str, torch.Tensor]] | None = None  # sharded resume
        wrapped: nn.Module | None = None
        if ckpt is not None:
            progress = Progress(**{k: v for k, v in ckpt.state["progress"].items()})
            config = ckpt.config
            self.sampler.load_state_dict(progress.sampler)
            self._elapsed_before = progress.elapsed
            first = progress.stage + (1 if progress.stage_done else 0)
            if ckpt.state.get("sharded"):
                model, wrapped, prev_optim, local_optim = self._restored_sharded(ckpt, progress)
            else:
                model = self._restored_model(ckpt)
                prev_optim = ckpt.optimizer
        else:
            config = build_config(self.recipe.model, self.data.vocab_size, self.data.eos_id)
            model = self._initial_model(config)
            first = 0
        largest = self._plan_growth(
            config, first if ckpt is None or progress.stage_done else first + 1
        )
        if self.ctx.is_main:
            require_checkpoint_room(self.out, largest)
        if ckpt is not None:  # after every model construction, which draws from the RNG
            rng_restore(ckpt.rng, ckpt.state["rng"])
        if self.ctx.is_main:
            self.out.mkdir(parents=True, exist_ok=True)
            write_text_atomic(
                self.out / "recipe.yaml",
                yaml.safe_dump(_plain(recipe_to_dict(self.recipe)), sort_keys=False),
            )
        if ckpt is not None and progress.stage_done:
            finished = self.out / self.recipe.stages[progress.stage].name
            # killed between the stage's checkpoint and its export: export it now (rank 0
            # decides, so every rank takes part in the same collectives)
            if distributed.broadcast_object(self.ctx, not finished.is_dir()):
                self._export(finished, model, config, progress)
        logger = MetricsLogger(
            self.out,
            self.ctx.is_main,
            sum(self.steps),
            progress.step,
            self.recipe.run.progress,
            self.recipe.run.tensorboard,
            self.recipe.run.wandb_project,
            self.recipe.name,
            _plain(recipe_to_dict(self.recipe)),
        )
        last: dict[str, Any] = {}
        try:
            for index in range(first, len(self.recipe.stages)):
                within = ckpt is not None and index == progress.stage and not progress.stage_done
                stage = self.recipe.stages[index]
                optim_init = prev_optim
                if not within:
                    progress.stage, progress.stage_step, progress.stage_done = index, 0, False
                    progress.fade, progress.train_from = None, None
                    if stage.grow is not None:
                        config, model, optim_init = self._grow(
                            index,
                            config,
                            wrapped if wrapped is not None else model,
                            prev_optim,
                            progress,
                        )
                        wrapped = None
                if set_trainable(model, progress.train_from) and wrapped is not None:
                    wrapped = None  # requires_grad changed: DDP must see the new set
                if wrapped is None:
                    wrapped = self._prepare_model(model)
                masks = None
                if progress.fade is not None:
                    fade = FadePlan.from_json(progress.fade)
                    if fade.fade_steps >= self.steps[index]:  # e.g. resumed with a new optim
                        raise InvalidRecipe(
                            f"stages.{index}.grow.fade_steps: {fade.fade_steps} must be < the "
                            f"stage's {self.steps[index]} steps (the masks must be gone before "
                            "the stage's export)"
                        )
                    masks = FadeMasks(model, fade)
                optimizer = make_optimizer(
                    distributed.unwrap(wrapped),
                    self.recipe.stage_optim(index),
                    fused=not self.ctx.fsdp,
                )
                if optim_init:
                    distributed.load_optim_state(wrapped, optimizer, optim_init)
                elif within and local_optim is not None:
                    distributed.load_optim_state(wrapped, optimizer, local_optim, local=True)
                last = self._train_stage(index, wrapped, optimizer, config, progress, logger, masks)
                assert progress.fade is None, "MSG masks still active at the end of a stage"
                prev_optim = distributed.full_optim_state(wrapped, optimizer)
                local_optim = None
                self._save_checkpoint(wrapped, optimizer, config, progress, prev_optim)
                self._export(self.out / stage.name, wrapped, config, progress)
            if wrapped is None:
                wrapped = self._prepare_model(model)
            self._export(self.out / FINAL, wrapped, config, progress)
        finally:
            logger.close()
        distributed.barrier(self.ctx)
        return RunResult(
            self.out, progress.step, progress.tokens, last.get("loss"), last.get("val_loss")
        )

    def _checkpoint_to_resume(self, resume: bool) -> Checkpoint | None:
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
        saved = ckpt.state.get("recipe", {})
        current = _plain(recipe_to_dict(self.recipe))
        for key in ("seed", "data", "model"):
            if saved.get(key) != current.get(key):
                raise InvalidRecipe(
                    f"{key}: differs from the recipe of the run being resumed in {str(self.out)!r}"
                )
        done = ckpt.state["progress"]["stage"]
        finished = bool(ckpt.state["progress"].get("stage_done"))
        before_stages = saved.get("stages", [])
        if len(before_stages) <= done or len(current["stages"]) <= done:
            raise InvalidRecipe("stages: the stages already trained differ from the resumed run's")
        for i in range(done + 1):
            a, b = dict(before_stages[i]), dict(current["stages"][i])
            if i == done and not finished:
                # the stage in progress may change its optimisation (e.g. a lower lr after a
                # numerical fault); everything else about it must stay
                a.pop("optim", None), b.pop("optim", None)
                if a != b:
                    raise InvalidRecipe(
                        f"stages: stage {b.get('name')!r} in progress differs from the resumed "
                        "run's (only its optim may change)"
                    )
                continue
            if a != b:
                raise InvalidRecipe(
                    "stages: the stages already trained differ from the resumed run's"
                )
            if {**saved.get("optim", {}), **a.get("optim", {})} != {
                **current["optim"],
                **b.get("optim", {}),
            }:
                raise InvalidRecipe(
                    f"optim: differs for stage {b.get('name')!r}, already trained in "
                    f"{str(self.out)!r}; change optimisation only for stages not finished"
                )
        return ckpt

    # ---- models -------------------------------------------------------------------------
    def _grow(
        self,
        index: int,
        config: PretrainedConfig,
        model: nn.Module,
        optim_state: dict[str, dict[str, torch.Tensor]] | None,
        progress: Progress,
    ) -> tuple[PretrainedConfig, nn.Module, dict[str, dict[str, torch.Tensor]] | None]:
        """Stage ``index``'s growth: (grown config, grown model, AdamW state to start from:
        the moments grown by the same operator with ``optimizer_state: carry``, else None).
        Records in ``progress`` what the stage does with the new structure (masks, MSLT)."""
        stage = self.recipe.stages[index]
        assert stage.grow is not None
        seed = self.recipe.seed + index
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
        if stage.optimizer_state == "carry" and optim_state:
            carried = grow_moments(config, optim_state, stage.grow, weights, seed)
        if stage.grow.fade_steps is not None:
            fade = fade_plan(config, new_config, report, stage.grow.fade_steps)
            progress.fade = fade.to_json()
        if stage.trainable == "new":
            progress.train_from = new_layers(report, f"stages.{index}.grow")
        return new_config, self._model_from_weights(new_config, new_weights), carried

    def _initial_model(self, config: PretrainedConfig) -> nn.Module:
        model = self._build_model(config)
        if self.recipe.model.init is not None:
            weights = load_init_weights(init_folder(self.recipe.model.init))
            self._load_weights(model, module_layout(config, weights))  # MoE: experts fused
        return model

    def _restored_sharded(
        self, ckpt: Checkpoint, progress: Progress
    ) -> tuple[nn.Module, nn.Module, dict[str, Any] | None, dict[str, Any] | None]:
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
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        config: PretrainedConfig,
        progress: Progress,
        logger: MetricsLogger,
        masks: FadeMasks | None = None,
    ) -> dict[str, Any]:
        stage = self.recipe.stages[index]
        cfg = self.recipe.stage_optim(index)
        total = self.steps[index]
        precision = self.recipe.run.precision
        self.autocast_dtype = autocast_dtype(precision, config, self.ctx.device.type)
        base = distributed.unwrap(model)
        n_params = param_count(base)
        # MoE: top-k experts; templates: the mixed weights the matmuls use
        flops_tok = model_flops_per_token(dense_params(base, active_params(base, config)))
        tap = router_tap(base, config)
        self._moe = None if tap is None else (tap, moe_coefs(config, cfg))
        if progress.train_from is not None:
            # MSLT: no weight gradients for frozen parameters (2 N_trainable), and activation
            # gradients stop at the lowest trainable layer (2 N_trainable) unless a tied head
            # makes the embedding trainable (then 2 N)
            trainable = sum(p.numel() for p in base.parameters() if p.requires_grad)
            tied = bool(getattr(config, "tie_word_embeddings", False))
            flops_tok = 2.0 * n_params + 2.0 * trainable + 2.0 * (n_params if tied else trainable)
        attn_tok = attention_flops_per_token(config, self.seq_len)
        run = self.recipe.run
        record: dict[str, Any] = {}
        while progress.stage_step < total:
            if masks is not None and progress.stage_step >= masks.plan.fade_steps:
                masks.remove()  # m = 1: every hook is the identity; the model is plain again
                masks, progress.fade = None, None
            mask = masks.set(progress.stage_step) if masks is not None else None
            started = time.perf_counter()
            lr = lr_at(progress.stage_step, total, cfg) * progress.lr_scale
            set_lr(optimizer, lr)
            batch = self.data.train.batch(self.sampler.take(self._global_batch(cfg)))
            loss, grad_norm = self._step(model, optimizer, batch, cfg)
            finite = math.isfinite(loss) and math.isfinite(grad_norm)
            if not finite:
                if run.on_nonfinite == "stop" or progress.skipped >= run.max_skipped_steps:
                    self._numerical_fault(progress.step + 1, stage.name, loss, grad_norm)
                progress.skipped += 1  # the batch is dropped; lower the lr from here on
                progress.lr_scale *= run.skip_lr_factor
            if self.ctx.device.type == "cuda":
                torch.cuda.synchronize()
            seconds = time.perf_counter() - started
            tokens = batch.shape[0] * self.seq_len
            progress.stage_step += 1
            progress.step += 1
            progress.tokens += tokens
            progress.flops += flops_tok * tokens
            progress.attn_flops += attn_tok * tokens
            progress.elapsed = self._elapsed()
            record = {
                "step": progress.step,
                "stage": stage.name,
                "tokens": progress.tokens,
                "flops": progress.flops,
                "attn_flops": progress.attn_flops,
                "loss": loss if finite else None,
                "lr": lr,
                "grad_norm": grad_norm if finite else None,
                "tokens_per_s": tokens / seconds,
                "elapsed": round(progress.elapsed, 3),
            }
            if mask is not None:
                record["mask"] = mask  # MSG: the weight of the new structure at this step
            if self._moe is not None:
                record.update(self._moe_stats)  # aux_loss, z_loss, expert_load per layer
            if not finite:
                record["event"] = "skipped_nonfinite"
            elif (
                run.spike_factor
                and progress.loss_avg is not None
                and loss > run.spike_factor * progress.loss_avg
            ):
                record["event"] = "loss_spike"
            if finite:  # exponential average over ~20 steps
                avg = progress.loss_avg
                progress.loss_avg = loss if avg is None else 0.95 * avg + 0.05 * loss
            if self.ctx.device.type == "cuda":  # peak since the run started, this process
                peak = torch.cuda.max_memory_allocated(self.ctx.device)
                record["cuda_mem_peak_gib"] = round(peak / 2**30, 3)
            if run.peak_flops:
                achieved = (flops_tok + attn_tok) * tokens / seconds
                record["mfu"] = achieved / (run.peak_flops * self.ctx.world_size)
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
        if tap is not None:
            tap.remove()
        self._moe = None
        return record

    def _autocast(self) -> Any:
        return torch.autocast(
            self.ctx.device.type,
            dtype=self.autocast_dtype or torch.float32,
            enabled=self.autocast_dtype is not None,
        )

    def _step(
        self,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        batch: torch.Tensor,
        cfg: OptimConfig,
    ) -> tuple[float, float]:
        """One optimizer step over this rank's share of the global batch [B, T+1]."""
        accum, micro = cfg.grad_accum, cfg.micro_batch_size
        local = batch.view(self.ctx.world_size, accum, micro, -1)[self.ctx.rank]
        local = _to_device(local, self.ctx.device)  # [accum, micro, T+1]
        total = torch.zeros((), device=self.ctx.device)
        for j in range(accum):
            inputs, targets = local[j, :, :-1], local[j, :, 1:]  # [micro, T]
            with distributed.set_grad_sync(model, self.ctx, j == accum - 1):
                with self._autocast():
                    logits = model(input_ids=inputs).logits  # [micro, T, V]
                loss = self._loss(logits, targets)
                objective = loss if self._moe is None else loss + self._router_losses(j, accum)
                (objective / accum).backward()
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

    def _router_losses(self, micro: int, accum: int) -> torch.Tensor:
        """MoE: coef * load-balancing + z_coef * z-loss of this micro-batch's routers; the
        statistics of the step's micro-batches are averaged for the metrics."""
        assert self._moe is not None
        tap, (aux_coef, z_coef) = self._moe
        aux, z = tap.losses()
        if micro == 0:
            self._moe_stats = {"aux_loss": 0.0, "z_loss": 0.0}
        self._moe_stats["aux_loss"] += float(aux.detach()) / accum
        self._moe_stats["z_loss"] += float(z.detach()) / accum
        if micro == accum - 1:
            self._moe_stats["expert_load"] = tap.load()
        tap.clear()
        return aux_coef * aux + z_coef * z

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
            "recipe": _plain(recipe_to_dict(self.recipe)),
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
        recipe = _plain(recipe_to_dict(self.recipe))
        return train_card(name, recipe, stage, progress.step, progress.tokens, source)


def token_loss(
    logits: torch.Tensor, targets: torch.Tensor, reduction: str = "mean"
) -> torch.Tensor:
    """Next-token cross-entropy of [B, T, V] logits (any dtype, computed in fp32)."""
    return F.cross_entropy(logits.float().flatten(0, 1), targets.flatten(), reduction=reduction)


def _to_device(batch: torch.Tensor, device: torch.device) -> torch.Tensor:
    """Token ids onto the training device; to a GPU through pinned memory, so the copy is
    asynchronous (the batch is a fresh tensor each step: nothing writes it while in flight)."""
    if device.type != "cuda":
        return batch.to(device)
    return batch.pin_memory().to(device, non_blocking=True)


def _local(value: torch.Tensor) -> torch.Tensor:
    from torch.distributed.tensor import DTensor

    return value.full_tensor() if isinstance(value, DTensor) else value


def _plain(value: Any) -> Any:
    """Tuples to lists, recursively (YAML/JSON friendly, and comparable after a round trip)."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value

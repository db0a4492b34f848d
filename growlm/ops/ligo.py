"""G_learn (LiGO, Wang et al. 2023, arXiv 2303.00980): fitting the learned maps of
``growlm.ops.ligo_maps`` on data, with the small model frozen, and materialising the grown weights.

Training: the large model is built once; each step composes its weights from (maps, frozen small
weights) in float32 and runs it through ``torch.func.functional_call`` (optionally under autocast);
next-token cross-entropy; Adam on the maps only, gradient norm clipped to 1.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable, Iterable
from typing import Any

import torch
import torch.nn.functional as F

from growlm.errors import GrowlmError, InvalidData, InvalidGrowth, NumericalFault
from growlm.ops.growth_plan import GrowthPlan
from growlm.ops.ligo_maps import Maps, Settings
from growlm.ops.planning import plan_learned

Batches = Callable[[int], torch.Tensor] | Iterable[torch.Tensor]
"""Map-training batches: ``step -> LongTensor [B, T+1]`` or an iterable of them."""

MAX_GRAD_NORM = 1.0


def _batch_fn(batches: Batches) -> Callable[[int], torch.Tensor]:
    if callable(batches):
        return batches
    it = iter(batches)

    def take(step: int) -> torch.Tensor:
        try:
            return next(it)
        except StopIteration:
            raise InvalidData(f"the map-training batches ran out after {step} steps") from None

    return take


def _check_batch(batch: Any, step: int, vocab: int) -> torch.Tensor:
    ok = (
        isinstance(batch, torch.Tensor)
        and batch.dim() == 2
        and batch.shape[0] >= 1
        and batch.shape[1] >= 2
        and not batch.is_floating_point()
        and not batch.is_complex()
        and batch.dtype != torch.bool
    )
    if not ok:
        what = (
            f"{batch.dtype} {list(batch.shape)}"
            if isinstance(batch, torch.Tensor)
            else type(batch).__name__
        )
        raise InvalidData(
            f"map-training batch {step} must be an integer tensor [B, T+1] of token ids, got {what}"
        )
    lo, hi = int(batch.min()), int(batch.max())
    if lo < 0 or hi >= vocab:
        raise InvalidData(
            f"map-training batch {step} holds token id {hi if hi >= vocab else lo} outside the "
            f"model's vocabulary 0..{vocab - 1}: tokenize with the model's own tokenizer"
        )
    return batch.long()


def _module(conf: Any, device: torch.device) -> torch.nn.Module:
    """The grown architecture, built once; its own parameters are dropped (functional_call
    supplies every one) so only buffers such as rotary frequencies stay."""
    from transformers import AutoModelForCausalLM

    with torch.device(device):
        model = AutoModelForCausalLM.from_config(conf, dtype=torch.float32)
    for p in model.parameters():
        p.data = torch.empty(0, device=device)
    return model.eval()


def _module_names(maps: Maps, model: torch.nn.Module, names: Iterable[str]) -> dict[str, str]:
    """Plan name -> the model's parameter name (checkpoints may use alternative names)."""
    params = dict(model.named_parameters(remove_duplicate=False))
    out: dict[str, str] = {}
    for name in names:
        if name in params:
            out[name] = name
            continue
        ts, layer = maps.out_index[name]
        canon = ts.name if layer is None else maps.spec.layer_name(ts, layer)
        if canon not in params:
            raise GrowlmError(
                f"grown tensor {name!r} has no parameter in the {maps.spec.name} model"
            )
        out[name] = canon
    covered = set(out.values())
    groups: dict[int, list[str]] = {}
    for pname, p in params.items():
        groups.setdefault(id(p), []).append(pname)
    for group in groups.values():
        if not covered.intersection(group):
            raise GrowlmError(f"learned growth does not produce the model parameter {group[0]!r}")
    return out


def _train(
    maps: Maps,
    conf: Any,
    batches: Batches,
    steps: int,
    lr: float,
    autocast_dtype: torch.dtype | None,
    on_step: Callable[[int, float], None] | None,
) -> tuple[list[float], int]:
    model = _module(conf, maps.device)
    names = _module_names(maps, model, [tp.name for tp in maps.plan.tensors])
    vocab = int(conf.vocab_size)
    opt = torch.optim.Adam(list(maps.params.values()), lr=lr)
    take = _batch_fn(batches)
    losses: list[float] = []
    tokens = 0
    amp = (
        torch.autocast(maps.device.type, dtype=autocast_dtype)
        if autocast_dtype is not None
        else contextlib.nullcontext()
    )
    for step in range(steps):
        batch = _check_batch(take(step), step, vocab).to(maps.device)
        inputs, targets = batch[:, :-1], batch[:, 1:]
        weights = maps.compose()
        params = {names[n]: w for n, w in weights.items()}
        with amp:
            out = torch.func.functional_call(
                model, params, args=(), kwargs={"input_ids": inputs, "use_cache": False}
            )
        logits = out.logits.float()
        loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1))
        if not torch.isfinite(loss):
            raise NumericalFault(
                f"map training produced a non-finite loss at step {step}: lower --lr"
            )
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(list(maps.params.values()), MAX_GRAD_NORM)
        opt.step()
        value = float(loss.detach())
        losses.append(value)
        tokens += int(inputs.numel())
        if on_step is not None:
            on_step(step, value)
        del weights, params, out, logits, loss
    return losses, tokens


def _report(
    plan: GrowthPlan,
    s: Settings,
    out: dict[str, torch.Tensor],
    maps_info: dict[str, list[int]],
    tokens: int,
    losses: list[float],
    seconds: float,
) -> dict[str, Any]:
    n = sum(t.numel() for t in out.values())
    return {
        "op": plan.op,
        "params": dict(plan.params),
        "layer_map": plan.layer_map,
        "src_layers": plan.src_layers,
        "out_layers": plan.out_layers,
        "function_preserving": False,
        "steps": s.steps,
        "lr": s.lr,
        "tokens": tokens,
        "out_params": n,
        "flops": 6.0 * n * tokens,
        "loss_first": losses[0] if losses else None,
        "loss_last": losses[-1] if losses else None,
        "maps": maps_info,
        "map_params": sum(math.prod(v) for v in maps_info.values()),
        "seconds": round(seconds, 3),
    }


def learn_grow(
    config: Any,
    weights: dict[str, torch.Tensor],
    op: str,
    params: dict[str, Any],
    batches: Batches | None = None,
    steps: int | None = None,
    lr: float | None = None,
    seed: int = 0,
    autocast_dtype: torch.dtype | None = None,
    on_step: Callable[[int, float], None] | None = None,
) -> tuple[Any, dict[str, torch.Tensor], dict[str, Any]]:
    """Grow with learned maps (G_learn / LiGO): returns (grown PretrainedConfig, grown weights in
    each source tensor's dtype, report), like ``growlm.ops.in_memory.grow_tensors``.

    ``op``: learn-depth, learn-width or learn-depth+learn-width. ``params``: factor (depth);
    hidden_size / intermediate_size / num_heads / num_kv_heads (width); steps and lr may be
    given here or as arguments (not both with different values; lr defaults to 1e-3).
    ``batches``: ``step -> LongTensor [B, T+1]`` or an iterable of them (inputs ``[:, :-1]``,
    targets ``[:, 1:]``); not needed for ``steps=0``. Deterministic given ``seed`` and batches.
    Weights on the meta device give shapes only (no training).

    The report holds op, params, src_layers, out_layers, layer_map (the initial stack map),
    function_preserving (False), steps, lr, tokens (trained on), out_params, flops
    (6 x out_params x tokens), loss_first / loss_last (map-training loss, None for 0 steps),
    maps (learned matrix shapes), map_params, depth_maps (learned D per layer template) and
    seconds.
    """
    from transformers import PretrainedConfig

    from growlm.io.hf_config import config_object

    cfg = config.to_dict() if isinstance(config, PretrainedConfig) else dict(config)
    t0 = time.perf_counter()
    shapes = {n: tuple(t.shape) for n, t in weights.items()}
    s, plan = plan_learned(cfg, shapes, op, params, seed, steps, lr)
    first = next(iter(weights.values()))
    device = first.device
    if device.type == "meta":  # shapes only (a trainer's dry run): nothing to train
        out = {
            tp.name: torch.empty(tp.shape, dtype=weights[str(tp.source)].dtype, device=device)
            for tp in plan.tensors
        }
        report = _report(plan, s, out, {}, 0, [], time.perf_counter() - t0)
        return config_object(plan.config), out, report
    if s.steps > 0 and batches is None:
        raise InvalidGrowth(
            f"{s.op.name} with {s.steps} steps trains its map on data: pass batches to "
            f"growlm.ops.ligo.learn_grow (command line: --data PATH)"
        )
    maps = Maps(cfg, weights, s, plan, seed, device)
    losses: list[float] = []
    tokens = 0
    if s.steps > 0:
        assert batches is not None
        conf = config_object(plan.config)
        conf.use_cache = False
        losses, tokens = _train(maps, conf, batches, s.steps, s.lr, autocast_dtype, on_step)
    with torch.no_grad():
        out = _materialise(maps, plan, weights)
    report = _report(plan, s, out, {}, tokens, losses, time.perf_counter() - t0)
    report.update(_maps_report(maps, s.steps))
    report["flops"] += report["compose_flops"]
    return config_object(plan.config), out, report


def _materialise(
    maps: Maps, plan: GrowthPlan, weights: dict[str, torch.Tensor]
) -> dict[str, torch.Tensor]:
    """The grown weights from the final maps, each in its source tensor's dtype, never
    sharing memory with an input or another output."""
    composed = maps.compose(exact=True)
    inputs = {t.data_ptr() for t in weights.values()}
    seen: set[int] = set()
    out = {}
    for tp in plan.tensors:
        assert tp.source is not None
        t = composed[tp.name].to(weights[tp.source].dtype)
        if t.data_ptr() in inputs or t.data_ptr() in seen:
            t = t.clone()
        seen.add(t.data_ptr())
        out[tp.name] = t.contiguous()
    return out


def _maps_report(maps: Maps, steps: int) -> dict[str, Any]:
    """The learned matrices' shapes, their parameter count, the composition's FLOPs over
    ``steps`` and the learned depth maps (rounded)."""
    shapes = {k: list(v.shape) for k, v in maps.params.items()}
    rows = {k: v.detach().tolist() for k, v in maps.params.items() if k.startswith("depth.")}
    return {
        "maps": shapes,
        "map_params": sum(math.prod(v) for v in shapes.values()),
        "compose_flops": maps.compose_flops * steps,
        "depth_maps": {
            k.removeprefix("depth."): [[round(float(x), 6) for x in row] for row in m]
            for k, m in rows.items()
        },
    }

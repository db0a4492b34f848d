"""G_learn (LiGO, Wang et al. 2023, arXiv 2303.00980): the large model's weights as a learned
linear map of the small model's, trained on data with the small model frozen.

Width (``learn-width``): one matrix ``A_a`` [N'_a, N_a] per grown axis kind ``a`` of
``growlm.arch.spec`` (hidden, ffn, q, kv), shared by every layer. Every tensor dimension labelled
with the axis is multiplied by it, whether the tensor writes (out) or reads (in) along it:
``W' = A_out W A_in^T``, biases ``A_out b``, embeddings ``E A_hidden^T``. Fused axes are built
from the same matrices: ffn2 = diag(A_ffn, A_ffn), qkv = diag(A_q, A_kv, A_kv), qkvh = the
per-head interleaving of (A_q, A_kv, A_kv). Norm weights are not width-mapped: old entries are
kept and new ones are 1 (as ``random-width``). ``A_a`` starts as [I; N(0, std)]: the rows of the
units ``random-width`` keeps are one-hot (GQA groups kept as there), the rows of new units are
random (std = initializer_range / sqrt(N_a): a new unit starts about initializer_range times
as large as an old one).

Depth (``learn-depth``): one matrix ``D_k`` [L', L] per per-layer tensor template ``k``
(q_proj.weight, input_layernorm.weight, ...): ``W'_{l,k} = sum_j D_k[l, j] W~_{j,k}`` where
``W~`` is the width-mapped source (width first, then depth). ``D_k`` starts as the stacking
one-hot (layer l <- l mod L). Embeddings, the final norm and the head are not depth-mapped.

At step 0 the materialised learn-depth model is bitwise ``stack``: the one-hot rows are applied
as copies (fp32 arithmetic would be exact too, but a copy does not depend on the backend).

Training: the large model is built once; each step composes its weights from (maps, frozen small
weights) in float32 and runs it through ``torch.func.functional_call`` (optionally under autocast);
next-token cross-entropy; Adam on the maps only, gradient norm clipped to 1.
"""

from __future__ import annotations

import contextlib
import math
import time
import zlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from growlm.arch import ArchSpec, TensorSpec, spec_for
from growlm.errors import GrowlmError, InvalidData, InvalidGrowth, NumericalFault
from growlm.ops.axes import AxisMap, Shape, axis_maps
from growlm.ops.plan import Expand, Plan, Scale
from growlm.ops.planner import Naming, source_shape, target_shape
from growlm.ops.registry import Operator, get_operator

Batches = Callable[[int], torch.Tensor] | Iterable[torch.Tensor]
"""Map-training batches: ``step -> LongTensor [B, T+1]`` or an iterable of them."""

DEFAULT_LR = 1e-3
MAX_GRAD_NORM = 1.0
BASE_AXES = ("hidden", "ffn", "q", "kv")
WIDTH_KEYS = ("hidden_size", "intermediate_size", "num_heads", "num_kv_heads")
TRAIN_KEYS = ("steps", "lr")


@dataclass(frozen=True)
class LearnOp:
    """A learned growth: ``learn-depth``, ``learn-width`` or both."""

    depth: Operator | None
    width: Operator | None

    @property
    def name(self) -> str:
        return "+".join(o.name for o in (self.depth, self.width) if o is not None)

    @property
    def skeleton(self) -> str:
        """The plain operator that gives the step-0 shapes, names and layer map."""
        return "+".join(
            op for op, on in (("stack", self.depth), ("random-width", self.width)) if on is not None
        )

    @property
    def params(self) -> tuple[str, ...]:
        out: list[str] = []
        for o in (self.depth, self.width):
            if o is not None:
                out += [p for p in o.params if p not in out]
        return tuple(out)


def parse_learn_op(op: str) -> LearnOp | None:
    """The learned operators of ``op`` (None when it has none); mixing them with plain
    operators is rejected."""
    parts = [get_operator(p) for p in op.split("+")]
    learned = [p for p in parts if p.kind == "trains"]
    if not learned:
        return None
    plain = [p for p in parts if p.kind != "trains"]
    if plain:
        raise InvalidGrowth(
            f"--op {op!r} mixes the learned {learned[0].name} with the plain {plain[0].name}: "
            f"use learn-depth+learn-width, or grow in two steps"
        )
    depth = [p for p in learned if p.layer_map is not None]
    width = [p for p in learned if p.width_fill is not None]
    if len(depth) > 1 or len(width) > 1:
        raise InvalidGrowth(f"--op {op!r} names the same learned operator twice")
    return LearnOp(depth[0] if depth else None, width[0] if width else None)


def is_learned(op: str) -> bool:
    return parse_learn_op(op) is not None


@dataclass
class Settings:
    op: LearnOp
    skeleton_params: dict[str, Any]
    steps: int
    lr: float


def _merge(key: str, arg: Any, params: dict[str, Any]) -> Any:
    given = params.get(key)
    if arg is not None and given is not None and arg != given:
        raise InvalidGrowth(f"{key} given twice ({arg!r} and params[{key!r}] = {given!r})")
    return arg if arg is not None else given


def settings(op: str, params: dict[str, Any], steps: Any = None, lr: Any = None) -> Settings:
    """Validate a learned growth's operator and parameters (no weights needed)."""
    lop = parse_learn_op(op)
    if lop is None:
        raise InvalidGrowth(f"--op {op!r} has no learned operator (learn-depth, learn-width)")
    allowed = set(lop.params)
    given = {k for k, v in params.items() if v is not None}
    extra = sorted(given - allowed)
    if extra:
        ok = ", ".join("--" + a.replace("_", "-") for a in sorted(allowed))
        raise InvalidGrowth(
            f"--{extra[0].replace('_', '-')} does not apply to {lop.name} (its parameters: {ok})"
        )
    n_steps = _merge("steps", steps, params)
    if n_steps is None:
        raise InvalidGrowth(
            f"{lop.name} needs --steps K (map-training steps; 0 materialises the initial map)"
        )
    if isinstance(n_steps, bool) or not isinstance(n_steps, int) or n_steps < 0:
        raise InvalidGrowth(f"--steps must be an integer >= 0, got {n_steps!r}")
    rate = _merge("lr", lr, params)
    rate = DEFAULT_LR if rate is None else rate
    if (
        isinstance(rate, bool)
        or not isinstance(rate, (int, float))
        or not math.isfinite(rate)
        or rate <= 0
    ):
        raise InvalidGrowth(f"--lr must be a number > 0, got {rate!r}")
    if lop.depth is not None and params.get("factor") is None:
        raise InvalidGrowth(
            "learn-depth needs --factor G (an integer >= 2; the map starts as stack)"
        )
    if lop.width is not None and not any(params.get(k) is not None for k in WIDTH_KEYS):
        raise InvalidGrowth(
            "learn-width needs a larger --hidden-size, --intermediate-size or --num-heads"
        )
    skeleton = {k: v for k, v in params.items() if k not in TRAIN_KEYS and v is not None}
    return Settings(lop, skeleton, int(n_steps), float(rate))


def skeleton_plan(
    cfg: dict[str, Any],
    shapes: dict[str, tuple[int, ...]],
    op: str,
    params: dict[str, Any],
    seed: int = 0,
    steps: Any = None,
    lr: Any = None,
) -> tuple[Settings, Plan]:
    """The validated settings and the plan of the plain operator the maps start from (stack,
    random-width): output names, shapes, config and layer map of the grown model."""
    from growlm.grow import plan_tensors

    s = settings(op, params, steps, lr)
    plan = plan_tensors(cfg, shapes, s.op.skeleton, s.skeleton_params, seed)
    plan.op = op
    plan.params = dict(params)
    plan.function_preserving = False
    return s, plan


# -- the maps ------------------------------------------------------------------------------


def _index(
    spec: ArchSpec, names: Iterable[str], layers: int
) -> dict[str, tuple[TensorSpec, int | None]]:
    """Checkpoint name -> (tensor spec, layer or None for global tensors)."""
    naming = Naming.detect(spec, set(names))
    out: dict[str, tuple[TensorSpec, int | None]] = {}
    for ts in spec.global_tensors:
        name = naming.find(ts)
        if name is not None:
            out[name] = (ts, None)
    for i in range(layers):
        for ts in spec.layer_tensors:
            name = naming.find(ts, i)
            if name is not None:
                out[name] = (ts, i)
    return out


def vocab_rows(cfg: dict[str, Any], weights: dict[str, torch.Tensor]) -> int:
    """Rows of the input embedding: every token id must be below this."""
    spec = spec_for(cfg.get("model_type"))
    name = Naming.detect(spec, set(weights)).find(spec.embed)
    if name is None:
        raise InvalidGrowth(f"checkpoint has no {spec.embed.name!r}")
    return int(weights[name].shape[0])


def _init_width(amap: AxisMap, std: float, gen: torch.Generator) -> torch.Tensor:
    """[I; N(0, std)]: kept units one-hot at their place in the grown axis, new units random."""
    a = torch.zeros(amap.new_size, amap.src_size)
    rows = torch.arange(amap.new_size)
    keep = amap.index >= 0
    a[rows[keep], amap.index[keep]] = 1.0
    fresh = int((~keep).sum())
    if fresh:
        a[rows[~keep]] = torch.randn(fresh, amap.src_size, generator=gen) * std
    return a


def _along(x: torch.Tensor, dim: int, a: torch.Tensor) -> torch.Tensor:
    """Multiply dimension ``dim`` of ``x`` by ``a`` [new, old]."""
    return torch.movedim(torch.tensordot(a, x, dims=([1], [dim])), 0, dim)


class Maps:
    """The learned maps of one growth and how they turn frozen small weights into large ones."""

    def __init__(
        self,
        cfg: dict[str, Any],
        weights: dict[str, torch.Tensor],
        s: Settings,
        plan: Plan,
        seed: int,
        device: torch.device,
    ):
        self.plan = plan
        self.spec = spec = spec_for(cfg.get("model_type"))
        self.device = device
        src_index = _index(spec, weights, plan.src_layers)
        self.out_index = _index(spec, [tp.name for tp in plan.tensors], plan.out_layers)
        self.params: dict[str, torch.Tensor] = {}
        self.compose_flops = 0.0  # FLOPs of one compose() with its backward (set by it)

        # width: one matrix per grown base axis
        self.src_shape: Shape | None = None
        self.new_shape: Shape | None = None
        if s.op.width is not None:
            _, src = source_shape(spec, cfg)
            new = target_shape(spec, cfg, src, s.skeleton_params)
            self.src_shape, self.new_shape = src, new
            amaps = axis_maps(src, new, copy=False)
            for kind in BASE_AXES:
                amap = amaps[kind]
                if amap.is_identity:
                    continue
                gen = torch.Generator().manual_seed((seed ^ zlib.crc32(kind.encode())) & 0xFFFFFFFF)
                std = plan.init_std / math.sqrt(amap.src_size)
                self.params[f"width.{kind}"] = _init_width(amap, std, gen).to(device)

        # per source tensor: width steps (learned) or a fixed value (norms, untouched tensors)
        self.small: dict[str, torch.Tensor] = {}
        self.fixed: dict[str, torch.Tensor] = {}
        self.steps: dict[str, list[Expand | Scale]] = {}
        get = weights.__getitem__
        for tp in plan.tensors:
            src_name = tp.source
            assert src_name is not None, tp.name  # stack / random-width copy every tensor
            if src_name in self.small or src_name in self.fixed:
                continue
            ts, _ = src_index[src_name]
            learned = [st for st in tp.steps if isinstance(st, Expand)]
            if ts.role in ("norm", "norm_bias") or not learned:
                self.fixed[src_name] = plan.run(tp, get).to(device, torch.float32)
                continue
            for ex in learned:
                if ex.axis not in ("hidden", "ffn", "q", "kv", "ffn2", "qkv", "qkvh"):
                    raise InvalidGrowth(
                        f"learn-width cannot map the {ex.axis!r} axis of {tp.name} "
                        f"({spec.name}); grow that family with random-width"
                    )
            steps: list[Expand | Scale] = []
            for step in tp.steps:
                assert isinstance(step, (Expand, Scale)), (tp.name, step.describe())
                steps.append(step)
            self.steps[src_name] = steps
            self.small[src_name] = weights[src_name].to(device, torch.float32)

        # depth: one [L', L] matrix per layer template, starting as the skeleton's layer map
        self.depth = s.op.depth is not None
        self.kind_sources: dict[str, list[str]] = {}
        if self.depth:
            by_kind: dict[str, dict[int, str]] = {}
            for name, (ts, layer) in src_index.items():
                if layer is not None:
                    by_kind.setdefault(ts.name, {})[layer] = name
            kinds = {ts.name for ts, layer in self.out_index.values() if layer is not None}
            for kind in sorted(kinds):
                layers = by_kind[kind]
                self.kind_sources[kind] = [layers[j] for j in range(plan.src_layers)]
                d = torch.zeros(plan.out_layers, plan.src_layers)
                for m in plan.layer_map:
                    d[m["out"], m["src"]] = 1.0
                self.params[f"depth.{kind}"] = d.to(device)
        for p in self.params.values():
            p.requires_grad_(True)

    def _axis(self, kind: str, cache: dict[str, torch.Tensor | None]) -> torch.Tensor | None:
        """The matrix of axis ``kind`` (None = identity), fused axes built from the base ones."""
        if kind in cache:
            return cache[kind]
        p = self.params
        out: torch.Tensor | None
        if kind in BASE_AXES:
            out = p.get(f"width.{kind}")
        else:
            src, new = self.src_shape, self.new_shape
            assert src is not None and new is not None
            d = src.head_dim

            def base(k: str, n_src: int) -> torch.Tensor:
                m = p.get(f"width.{k}")
                return m if m is not None else torch.eye(n_src, device=self.device)

            q = base("q", src.heads * d)
            kv = base("kv", src.kv_heads * d)
            if kind == "ffn2":
                f = base("ffn", src.ffn)
                out = torch.block_diag(f, f)
            elif kind == "qkv":
                out = torch.block_diag(q, kv, kv)
            elif kind == "qkvh":  # per head [q_h; k_h; v_h] (GPT-NeoX: kv heads = heads)
                parts = torch.stack([q, kv, kv]).view(3, new.heads, d, src.heads, d)
                eye = torch.eye(3, device=self.device)
                out = torch.einsum("paibj,pq->apibqj", parts, eye).reshape(
                    3 * new.heads * d, 3 * src.heads * d
                )
            else:  # pragma: no cover - rejected in __init__
                raise AssertionError(kind)
        cache[kind] = out
        return out

    def compose(self, exact: bool = False) -> dict[str, torch.Tensor]:
        """The grown model's weights (float32, plan names) from the current maps.

        ``exact``: one-hot depth rows are applied as copies (materialisation)."""
        cache: dict[str, torch.Tensor | None] = {}
        wide: dict[str, torch.Tensor] = dict(self.fixed)
        flops = 0.0  # 2 per multiply-add: rows(A) x numel(x) per width product
        for name, steps in self.steps.items():
            x = self.small[name]
            for st in steps:
                if isinstance(st, Expand):
                    a = self._axis(st.axis, cache)
                    if a is not None:
                        flops += 2.0 * a.shape[0] * x.numel()
                        x = _along(x, st.dim, a)
                else:
                    x = x * st.mult
            wide[name] = x
        out: dict[str, torch.Tensor] = {}
        mixed: dict[str, list[torch.Tensor]] = {}
        for tp in self.plan.tensors:
            ts, layer = self.out_index[tp.name]
            if not self.depth or layer is None:
                assert tp.source is not None
                out[tp.name] = wide[tp.source]
                continue
            d = self.params[f"depth.{ts.name}"]
            srcs = [wide[n] for n in self.kind_sources[ts.name]]
            flops += 2.0 * d.shape[1] * srcs[0].numel()  # this output layer's row of the mix
            if exact and (j := _one_hot(d[layer])) is not None:
                out[tp.name] = srcs[j]  # a plain copy, bit for bit
                continue
            if ts.name not in mixed:
                mixed[ts.name] = list(torch.tensordot(d, torch.stack(srcs), dims=1).unbind(0))
            out[tp.name] = mixed[ts.name][layer]
        self.compose_flops = 3.0 * flops  # with its backward
        return out

    def describe(self) -> list[str]:
        return [f"learned {k} {list(v.shape)}" for k, v in self.params.items()]


def _one_hot(row: torch.Tensor) -> int | None:
    """The source index when a depth-map row copies exactly one source layer, else None."""
    values = row.tolist()
    nonzero = [j for j, v in enumerate(values) if v != 0.0]
    return nonzero[0] if len(nonzero) == 1 and values[nonzero[0]] == 1.0 else None


# -- training ------------------------------------------------------------------------------


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


@dataclass
class Learned:
    plan: Plan
    weights: dict[str, torch.Tensor]
    report: dict[str, Any]


def learn(
    cfg: dict[str, Any],
    weights: dict[str, torch.Tensor],
    op: str,
    params: dict[str, Any],
    batches: Batches | None = None,
    steps: int | None = None,
    lr: float | None = None,
    seed: int = 0,
    autocast_dtype: torch.dtype | None = None,
    on_step: Callable[[int, float], None] | None = None,
) -> Learned:
    """``learn_grow`` on a config dict; also returns the skeleton plan (names, config)."""
    from growlm.io.hf_config import config_object

    t0 = time.perf_counter()
    shapes = {n: tuple(t.shape) for n, t in weights.items()}
    s, plan = skeleton_plan(cfg, shapes, op, params, seed, steps, lr)
    first = next(iter(weights.values()))
    device = first.device
    if device.type == "meta":  # shapes only (a trainer's dry run): nothing to train
        out = {
            tp.name: torch.empty(tp.shape, dtype=weights[str(tp.source)].dtype, device=device)
            for tp in plan.tensors
        }
        return Learned(plan, out, _report(plan, s, out, {}, 0, [], time.perf_counter() - t0))
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
    maps_info = {k: list(v.shape) for k, v in maps.params.items()}
    depth_maps = {
        k.removeprefix("depth."): [[round(float(x), 6) for x in row] for row in v.detach().tolist()]
        for k, v in maps.params.items()
        if k.startswith("depth.")
    }
    report = _report(plan, s, out, maps_info, tokens, losses, time.perf_counter() - t0)
    report["compose_flops"] = maps.compose_flops * s.steps
    report["flops"] += report["compose_flops"]
    report["depth_maps"] = depth_maps
    return Learned(plan, out, report)


def _report(
    plan: Plan,
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
    each source tensor's dtype, report), like ``growlm.grow.grow_tensors``.

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
    result = learn(cfg, weights, op, params, batches, steps, lr, seed, autocast_dtype, on_step)
    return config_object(result.plan.config), result.weights, result.report


# -- data for the command line -------------------------------------------------------------

"""Sparse upcycling: a dense model's FFN becomes the experts of a Mixture of Experts.

Komatsuzaki et al. 2022 (sparse upcycling); Nakamura et al. 2025 (Drop-Upcycling); fine-grained
experts as in Qwen1.5-MoE / DeepSeekMoE. The target family is data (``growlm.arch.moe``).

Why the function is kept (r = 0, granularity 1). Every target computes, per token x,
``y = sum_{i in topk} w_i E_i(x)`` with ``w = softmax(router x)`` restricted to the top k and
renormalised to sum to 1 (Mixtral always; Qwen MoE when ``norm_topk_prob``, which we write True).
If every expert is the dense FFN F, ``y = (sum w_i) F(x) = F(x)`` whatever the router picks.
Without renormalisation the sum is < 1 and depends on the token, so we never write that config.
Qwen2-MoE adds an always-on shared expert S behind ``sigmoid(g . x)``: S = F and g = 0 give
``0.5 F``; each routed expert is F with its down projection halved, giving ``0.5 F``; the sum is F.

Fine-grained experts (granularity G): the FFN's units split into G segments F = F_1 + ... + F_G
(SwiGLU is per unit; the down projection sums over units), each copied E times: E*G experts of
width I/G, top-k K*G, down projections multiplied by G. It is exact iff the router picks every
segment exactly K times with equal weights: a zero router gives equal weights, but which of the
tied experts ``torch.topk`` returns is unspecified (on CPU it is not the lowest indices), so
fine-grained upcycling is reported as not function preserving and ``--check`` measures it.

Drop-Upcycling (ratio r): in each expert a different random r of its FFN units (the same units in
gate, up and down) are re-initialised from normal(mean, std) of the original matrix.

Router init: ``random`` (default: normal(0, initializer_range)); ``zero`` (uniform softmax; ties
broken by torch.topk, see above; in training the experts then stay in identical groups: the
tie-break sends every token to the same k experts, which get identical updates forever);
``hidden`` (k-means centroids of each layer's FFN input on given text, unit length: experts start
specialised to clusters of tokens, as mergekit's hidden mode).

AdamW moments: every expert (and the shared expert) gets the dense FFN's moments as it gets its
weights (segments sliced the same way; output scales leave moments alone: Adam's update is
invariant to a constant gradient scale); re-initialised units, routers and the shared gate
start at zero.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from typing import Any

import torch

from growlm.arch import ArchSpec
from growlm.arch.moe import FFN, MOE_MODEL_TYPES, NO_MOE, MoeSpec, moe_target, targets_line
from growlm.errors import InvalidGrowth
from growlm.ops.depth import LayerSource
from growlm.ops.growth_plan import (
    MOMENT_POWER,
    Context,
    Fresh,
    GrowthPlan,
    Scale,
    Step,
    TensorPlan,
)
from growlm.ops.layout import Naming, new_plan, source_shape, validate_tensors
from growlm.ops.params import with_defaults
from growlm.ops.registry import get_operator


@dataclass(frozen=True)
class Settings:
    experts: int  # copies of the dense FFN (coarse experts)
    top_k: int  # coarse top-k
    granularity: int
    drop_ratio: float
    router_init: str

    @property
    def n_out(self) -> int:
        return self.experts * self.granularity

    @property
    def k_out(self) -> int:
        return self.top_k * self.granularity


def settings(params: dict[str, Any]) -> Settings:
    """upcycle's parameters with their declared defaults (each checked against its declaration
    by the planner); what the declarations cannot say alone: top-k within the experts."""
    p = with_defaults(get_operator("upcycle"), params)
    e, k = p["experts"], p["top_k"]
    if k < 1 or k > e:
        raise InvalidGrowth(f"--top-k {k} must be between 1 and --experts {e}")
    return Settings(e, k, p["granularity"], float(p["drop_ratio"]), str(p["router_init"]))


def check_source(cfg: dict[str, Any]) -> None:
    """Refuse a source that is already MoE before looking for its dense spec."""
    mt = cfg.get("model_type")
    if mt in MOE_MODEL_TYPES or any(
        isinstance(cfg.get(k), int) and cfg[k] > 0 for k in ("num_local_experts", "num_experts")
    ):
        raise InvalidGrowth(
            f"the source ({mt}) is already a Mixture of Experts: upcycle takes a dense model"
        )


def target_for(spec: ArchSpec) -> MoeSpec:
    moe = moe_target(spec.name)
    if moe is None:
        why = NO_MOE.get(spec.name, "no MoE family in transformers has its layers")
        raise InvalidGrowth(
            f"upcycle has no MoE counterpart for {spec.name} ({why}); targets: {targets_line()}"
        )
    return moe


@dataclass
class Segment(Step):
    """Units ``start:start+size`` of the FFN axis (dim): one fine-grained expert's share."""

    dim: int
    start: int
    size: int

    def describe(self) -> str:
        return f"units[{self.start}:{self.start + self.size}]"

    def __call__(self, x: torch.Tensor | None, ctx: Context) -> torch.Tensor:
        assert x is not None
        return x.narrow(self.dim, self.start, self.size)


@dataclass
class DropUnits(Step):
    """Drop-Upcycling: units ``index`` along ``dim`` re-initialised from normal(mean, std) of
    the whole original matrix; their moments start at zero."""

    dim: int
    index: torch.Tensor
    ratio: float

    def describe(self) -> str:
        return f"drop[{self.index.numel()} units (r={self.ratio:g}) <- normal(mean, std)]"

    def __call__(self, x: torch.Tensor | None, ctx: Context) -> torch.Tensor:
        assert x is not None
        if x.is_meta:  # planning a recipe's growth: shapes only
            return x
        out = x.clone()
        shape = list(x.shape)
        shape[self.dim] = int(self.index.numel())
        if MOMENT_POWER[ctx.mode]:
            fill = torch.zeros(shape, dtype=x.dtype)
        else:
            xf = x.detach().to(torch.float32)
            mean, std = float(xf.mean()), float(xf.std())
            fill = torch.empty(shape).normal_(mean, std, generator=ctx.generator).to(x.dtype)
        out.index_copy_(self.dim, self.index, fill)
        return out


@dataclass
class Given(Step):
    """A tensor computed before planning (a router from hidden states); moments zero."""

    value: torch.Tensor
    why: str

    def describe(self) -> str:
        return f"init[{self.why}]"

    def __call__(self, x: torch.Tensor | None, ctx: Context) -> torch.Tensor:
        if MOMENT_POWER[ctx.mode]:
            return torch.zeros_like(self.value)
        return self.value.clone()


def drop_index(seed: int, layer: int, expert: int, units: int, ratio: float) -> torch.Tensor:
    """The units an expert re-initialises: a different seeded subset per (layer, expert)."""
    n = round(ratio * units)
    gen = torch.Generator().manual_seed(seed ^ zlib.crc32(f"drop:{layer}:{expert}".encode()))
    return torch.randperm(units, generator=gen)[:n].sort().values


def build_plan(
    spec: ArchSpec,
    cfg: dict[str, Any],
    derived: dict[str, Any],
    shapes: dict[str, tuple[int, ...]],
    params: dict[str, Any],
    tied: bool,
    seed: int = 0,
    routers: dict[int, torch.Tensor] | None = None,
) -> GrowthPlan:
    """The upcycling of one checkpoint as a plan (no weights read; hidden routers given)."""
    st = settings(params)
    moe = target_for(spec)
    n, src = source_shape(spec, cfg)
    naming = Naming.detect(spec, set(shapes))
    validate_tensors(spec, naming, shapes, n, tied)
    extra = [ts.name for ts in spec.layer_tensors if naming.find(ts, 0) and ts.role == "bias"]
    extra = [nm for nm in extra if nm.startswith("mlp.") or not moe.attention_bias]
    if extra:
        raise InvalidGrowth(
            f"the source has {extra[0]!r} but {moe.name} has no such bias: upcycle needs a "
            f"{spec.name} without {'MLP' if extra[0].startswith('mlp.') else 'attention'} biases"
        )
    ffn = src.ffn
    if ffn % st.granularity:
        raise InvalidGrowth(
            f"--granularity {st.granularity} does not split the FFN's {ffn} units evenly: use a "
            f"divisor of {ffn}"
        )
    if st.router_init == "hidden" and routers is None:
        raise InvalidGrowth("--router-init hidden needs --router-data FILE (text to route)")
    seg = ffn // st.granularity
    alpha = 0.5 if moe.has_shared else 1.0
    down_mult = alpha * st.granularity
    why = " x ".join(
        w for w, on in (("0.5 shared", moe.has_shared), ("G", st.granularity > 1)) if on
    )
    hidden = src.hidden
    prefix = spec.layer_prefix
    tensors: list[TensorPlan] = []

    def add_global(ts: Any) -> None:
        name = naming.find(ts)
        if name is not None:
            tensors.append(TensorPlan(name, shapes[name], name, []))

    add_global(spec.embed)
    for ts in spec.extra_globals:
        add_global(ts)
    ffn_names = set(FFN.values())
    for i in range(n):
        lp = prefix.replace("{i}", str(i))
        for ts in spec.layer_tensors:
            name = naming.find(ts, i)
            if name is None or ts.name in ffn_names or ts.name.startswith("mlp."):
                continue
            tensors.append(TensorPlan(name, shapes[name], name, []))
        router_shape = (st.n_out, hidden)
        router: Step
        if st.router_init == "hidden":
            assert routers is not None
            router = Given(routers[i], "k-means of FFN inputs")
        else:
            router = Fresh(router_shape, "zeros" if st.router_init == "zero" else "normal")
        tensors.append(TensorPlan(lp + moe.router, router_shape, None, [router]))
        for e in range(st.n_out):
            g = e % st.granularity  # expert e holds segment e mod G (copy e // G)
            drop = (
                drop_index(seed, i, e, seg, st.drop_ratio) + g * seg if st.drop_ratio > 0 else None
            )
            for role, tmpl in moe.experts.items():
                dim = 1 if role == "down" else 0
                steps: list[Step] = []
                if drop is not None and drop.numel():
                    steps.append(DropUnits(dim, drop, st.drop_ratio))
                if st.granularity > 1:
                    steps.append(Segment(dim, g * seg, seg))
                if role == "down" and down_mult != 1.0:
                    steps.append(Scale(down_mult, why, keep_moments=True))
                shape = (hidden, seg) if role == "down" else (seg, hidden)
                tensors.append(TensorPlan(lp + tmpl.format(e=e), shape, lp + FFN[role], steps))
        if moe.has_shared:
            assert moe.shared_gate is not None
            for role, nm in moe.shared.items():
                shape = (hidden, ffn) if role == "down" else (ffn, hidden)
                tensors.append(TensorPlan(lp + nm, shape, lp + FFN[role], []))
            tensors.append(
                TensorPlan(lp + moe.shared_gate, (1, hidden), None, [Fresh((1, hidden), "zeros")])
            )
    for ts in spec.final_norm:
        add_global(ts)
    if not tied:
        add_global(spec.head)

    preserving = st.drop_ratio == 0 and st.granularity == 1
    p = {"experts": st.experts, "top_k": st.top_k, "router_init": st.router_init}
    if st.granularity > 1:
        p["granularity"] = st.granularity
    if st.drop_ratio > 0:
        p["drop_ratio"] = st.drop_ratio
    config = moe_config(moe, spec, cfg, derived, st, ffn)
    layers = [LayerSource(j) for j in range(n)]
    return new_plan(spec, cfg, ("upcycle", p), tensors, config, layers, preserving, seed)


def moe_config(
    moe: MoeSpec,
    spec: ArchSpec,
    cfg: dict[str, Any],
    derived: dict[str, Any],
    st: Settings,
    ffn: int,
) -> dict[str, Any]:
    out = {k: v for k, v in cfg.items() if k not in ("architectures", *moe.drop_config)}
    if "tie_word_embeddings" not in out:
        out["tie_word_embeddings"] = bool(derived.get("tie_word_embeddings", spec.tie_default))
    out["model_type"] = moe.model_type
    out["architectures"] = [moe.architecture]
    out[moe.num_experts_key] = st.n_out
    out[moe.top_k_key] = st.k_out
    out[moe.expert_ffn_key] = ffn // st.granularity
    if moe.shared_ffn_key:
        out[moe.shared_ffn_key] = ffn
    if isinstance(moe.renormalises, str):
        out[moe.renormalises] = True
    out.setdefault(moe.aux_coef_key, 0.01)
    out["output_router_logits"] = False
    out.update(moe.set_config)
    return out


def active_fraction(st: Settings) -> float:
    """Share of the routed experts' parameters a token uses (top-k over experts)."""
    return st.k_out / st.n_out


def hidden_routers(
    model: Any, spec: ArchSpec, ids: torch.Tensor, n_experts: int, seed: int = 0, iters: int = 20
) -> dict[int, torch.Tensor]:
    """Per layer: ``n_experts`` k-means centroids (unit length) of the FFN inputs on ``ids``."""
    n = len(_ffn_modules(model, spec))
    inputs: dict[int, torch.Tensor] = {}
    hooks = []
    for i, mod in enumerate(_ffn_modules(model, spec)):

        def pre(_m: Any, args: tuple[Any, ...], i: int = i) -> None:
            inputs[i] = args[0].detach().reshape(-1, args[0].shape[-1]).float()

        hooks.append(mod.register_forward_pre_hook(pre))
    try:
        with torch.no_grad():
            model(input_ids=ids)
    finally:
        for h in hooks:
            h.remove()
    out = {}
    for i in range(n):
        x = inputs[i]  # [tokens, hidden]
        if x.shape[0] < n_experts:
            raise InvalidGrowth(
                f"--router-data gave {x.shape[0]} tokens, fewer than the {n_experts} experts: "
                f"give more text"
            )
        out[i] = _kmeans(x, n_experts, seed + i, iters)
    return out


def _ffn_modules(model: Any, spec: ArchSpec) -> list[Any]:
    modules = dict(model.named_modules())
    mlp = FFN["gate"].rsplit(".", 2)[0]  # "mlp"
    found = []
    i = 0
    while (name := spec.layer_prefix.replace("{i}", str(i)) + mlp) in modules:
        found.append(modules[name])
        i += 1
    return found


def _kmeans(x: torch.Tensor, k: int, seed: int, iters: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    c = x[torch.randperm(x.shape[0], generator=gen)[:k]].clone()  # [k, hidden]
    for _ in range(iters):
        assign = torch.cdist(x, c).argmin(dim=1)  # [tokens]
        for j in range(k):
            members = x[assign == j]
            if members.shape[0]:
                c[j] = members.mean(dim=0)
    return c / c.norm(dim=1, keepdim=True).clamp(min=1e-6)

"""The one registry of growth operators: name, aliases, one line, paper, and how it is built."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from growlm.arch.moe import targets_line as moe_targets_line
from growlm.errors import InvalidGrowth, UnknownOperator
from growlm.ops import depth
from growlm.ops.depth import LayerSource


@dataclass(frozen=True)
class Operator:
    name: str
    kind: str  # depth | width | trains | moe
    description: str
    paper: str
    preserving: str  # "yes", "no", or a condition
    params: tuple[str, ...] = ()
    aliases: tuple[str, ...] = ()
    layer_map: Callable[..., list[LayerSource]] | None = None
    width_fill: str | None = None  # direct | zero | random | clone | tokens | templates
    defaults: dict[str, Any] = field(default_factory=dict)


_DEPTH_NEW = ("factor", "num_layers", "placement")

OPERATORS: tuple[Operator, ...] = (
    Operator(
        "direct-depth",
        "depth",
        "G_stack: the whole model repeated g times",
        "Du et al. 2024, Stacking Your Transformers (arXiv 2405.15319)",
        "no",
        ("factor",),
        ("stack", "g_stack", "g_direct", "direct"),
        depth.stack,
    ),
    Operator(
        "interleave",
        "depth",
        "each layer repeated g times in place (0,0,1,1,...)",
        "Du et al. 2024 (ablation); Gong et al. 2019, progressive stacking",
        "no",
        ("factor",),
        ("interleaved",),
        depth.interleave,
    ),
    Operator(
        "layers",
        "depth",
        "partial stacking from an explicit source layer list",
        "Du et al. 2024 (partial stacking)",
        "no",
        ("layers",),
        ("partial",),
        depth.explicit,
    ),
    Operator(
        "top",
        "depth",
        "gradual stacking: the top block of layers copied onto the top",
        "Reddi et al. 2023, efficient training via gradual stacking; Yang et al. 2020, MSLT",
        "no",
        ("block", "copies"),
        ("gradual", "stack-top"),
        depth.top,
    ),
    Operator(
        "midas",
        "depth",
        "MIDAS: a middle block of layers duplicated in the middle",
        "Saunshi et al. 2024, inductive bias of stacking towards reasoning (arXiv 2409.19044)",
        "no",
        ("block",),
        ("middle",),
        depth.midas,
    ),
    Operator(
        "solar",
        "depth",
        "SOLAR depth up-scaling: two copies minus m layers at the seam",
        "Kim et al. 2023, SOLAR 10.7B (arXiv 2312.15166)",
        "no",
        ("drop",),
        ("dus", "depth-upscaling"),
        depth.solar,
    ),
    Operator(
        "zero-depth",
        "depth",
        "G_zero: new identity blocks (copies with zeroed outputs)",
        "Wu et al. 2024, LLaMA Pro (arXiv 2401.02415); Du et al. 2024",
        "yes",
        _DEPTH_NEW,
        ("g_zero", "llama-pro", "identity"),
        lambda n, **kw: depth.with_new_blocks(n, "zero", **kw),
    ),
    Operator(
        "random-depth",
        "depth",
        "G_random: new freshly initialised blocks",
        "Du et al. 2024 (G_random, without the MSG masks)",
        "no",
        _DEPTH_NEW,
        ("g_random",),
        lambda n, **kw: depth.with_new_blocks(n, "random", **kw),
    ),
    Operator(
        "direct-width",
        "width",
        "Net2Net / bert2BERT split: new units copy old ones",
        "Chen et al. 2016, Net2Net; Chen et al. 2022, bert2BERT",
        "yes (integer hidden factor)",
        ("hidden_size", "intermediate_size", "num_heads", "num_kv_heads"),
        ("split", "net2net", "bert2bert", "g_direct-width"),
        width_fill="direct",
    ),
    Operator(
        "zero-width",
        "width",
        "new units with zero outgoing weights, norms corrected",
        "Du et al. 2024 (G_zero width); Shen et al. 2022, staged training",
        "yes",
        ("hidden_size", "intermediate_size", "num_heads", "num_kv_heads"),
        ("g_zero-width",),
        width_fill="zero",
    ),
    Operator(
        "random-width",
        "width",
        "new units randomly initialised",
        "Du et al. 2024 (G_random width, without the MSG masks)",
        "no",
        ("hidden_size", "intermediate_size", "num_heads", "num_kv_heads"),
        ("g_random-width",),
        width_fill="random",
    ),
    # HyperCloning: one self-contained entry (planner.clone_shape + plan.PairNoise)
    Operator(
        "clone-width",
        "width",
        "HyperCloning: every width x N (units cloned, readers /N), +eta/-eta noise pairs",
        "Samragh et al. 2024, Scaling Smart / HyperCloning (arXiv 2409.12903)",
        "yes",
        ("factor", "snr_db"),
        ("hypercloning", "hyperclone"),
        width_fill="clone",
        defaults={"snr_db": 10.0},
    ),
    # TokenFormer: one self-contained entry (planner.token_maps)
    Operator(
        "param-tokens",
        "width",
        "TokenFormer: N new key/value parameter tokens in every Pattention (new keys zero)",
        "Wang et al. 2024, TokenFormer (arXiv 2410.23168)",
        "no (near: new tokens add nothing, the sqrt(P) score scale grows; see --check)",
        ("new_tokens",),
        ("tokenformer", "pattention-tokens"),
        width_fill="tokens",
    ),
    # MixtureGrowth: one self-contained entry (growlm.ops.mixture_growth; template models only)
    Operator(
        "mixture-growth",
        "width",
        "MixtureGrowth: width x N of a template model (growlm train, model.templates); new "
        "blocks are new (orthogonal) combinations of its trained templates",
        "Pham et al. 2024, MixtureGrowth (WACV 2024, arXiv 2311.04251)",
        "no (yes with coef_scale 0 and an untied head, but the copies then stay identical)",
        ("factor", "coef_scale"),
        ("mixturegrowth", "template-mixing"),
        width_fill="templates",
        defaults={"coef_scale": 1.0},
    ),
    # learned operators (growlm.ops.ligo): layer_map / width_fill give the map they start from
    Operator(
        "learn-depth",
        "trains",
        "G_learn (LiGO) depth map learned from data, starting as stack",
        "Wang et al. 2023, LiGO (arXiv 2303.00980)",
        "no",
        ("factor", "steps", "lr"),
        ("g_learn", "ligo", "ligo-depth"),
        depth.stack,
    ),
    Operator(
        "learn-width",
        "trains",
        "G_learn (LiGO) width map learned from data, starting as [I; small random]",
        "Wang et al. 2023, LiGO (arXiv 2303.00980)",
        "no",
        ("hidden_size", "intermediate_size", "num_heads", "num_kv_heads", "steps", "lr"),
        ("ligo-width", "g_learn-width"),
        width_fill="random",
    ),
)


# dense -> MoE (growlm.ops.upcycle plans it; targets are data in growlm.arch.moe)
OPERATORS += (
    Operator(
        "upcycle",
        "moe",
        f"sparse upcycling: every expert copies the dense FFN ({moe_targets_line()})",
        "Komatsuzaki et al. 2022, sparse upcycling; Nakamura et al. 2025, Drop-Upcycling",
        "yes (--drop-ratio 0, --granularity 1)",
        ("experts", "top_k", "router_init", "drop_ratio", "granularity"),
        ("sparse-upcycling", "moe", "drop-upcycling"),
    ),
)


def _norm(name: str) -> str:
    return name.strip().lower().replace("_", "-")


_INDEX: dict[str, Operator] = {_norm(n): op for op in OPERATORS for n in (op.name, *op.aliases)}


def get_operator(name: str) -> Operator:
    op = _INDEX.get(_norm(name))
    if op is None:
        names = ", ".join(o.name + (f" ({o.aliases[0]})" if o.aliases else "") for o in OPERATORS)
        raise UnknownOperator(f"unknown operator {name!r}: choose one of {names}")
    return op


def get_operator_entry(name: str) -> Operator | None:
    """The registry entry of ``name`` (or an alias), None when unknown."""
    return _INDEX.get(_norm(name))


def parse_op_names(text: str) -> list[str]:
    """Canonical names of ``a+b`` without building anything; unknown names are kept as given
    (planning reports them)."""
    return [_INDEX[_norm(p)].name if _norm(p) in _INDEX else p for p in text.split("+")]


def parse_ops(text: str) -> tuple[Operator | None, Operator | None]:
    """``stack`` or ``stack+direct-width``: at most one depth and one width operator."""
    depth_op: Operator | None = None
    width_op: Operator | None = None
    for part in text.split("+"):
        op = get_operator(part)
        if op.kind == "depth":
            if depth_op is not None:
                raise InvalidGrowth(f"--op {text!r} names two depth operators; give at most one")
            depth_op = op
        else:
            if width_op is not None:
                raise InvalidGrowth(f"--op {text!r} names two width operators; give at most one")
            width_op = op
    return depth_op, width_op

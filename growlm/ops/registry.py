"""The one registry of growth operators: name, aliases, one line, paper, its parameters (declared
once, ``growlm.ops.params``) and how it is built. Adding an operator: docs/architecture.md."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

from growlm.arch.moe import targets_line as moe_targets_line
from growlm.errors import InvalidGrowth, UnknownOperator
from growlm.ops import depth
from growlm.ops.depth import COPIES, DROP, LAYERS, LayerSource
from growlm.ops.params import (
    BLOCK,
    FACTOR,
    NUM_LAYERS,
    PLACEMENT,
    TRAINING,
    WIDTH,
    Param,
    integer,
    number,
    one_of,
)


@dataclass(frozen=True)
class Operator:
    name: str
    kind: str  # depth | width | trains | moe
    description: str
    paper: str
    preserving: str  # "yes", "no", or a condition
    params: tuple[Param, ...] = ()
    aliases: tuple[str, ...] = ()
    layer_map: Callable[..., list[LayerSource]] | None = None
    width_fill: str | None = None  # direct | zero | random | clone | tokens | templates
    required: tuple[str, ...] = ()  # parameters it cannot do without
    recipe_only: bool = False  # grows models that exist only in training: no `growlm grow` flags

    def param(self, name: str) -> Param:
        return next(p for p in self.params if p.name == name)


_DEPTH_NEW = (FACTOR, NUM_LAYERS, PLACEMENT)
SNR_DB = Param(
    "snr_db",
    float,
    "signal-to-noise of the +eta/-eta pairs in dB (inf: none)",
    number("a number in dB (inf: no noise)", lambda v: True),
    default=10.0,
)
CLONE_FACTOR = Param(
    "factor",
    int,
    "HyperCloning: every width times N",
    integer(2),
    metavar="N",
    problem="clone-width needs --factor N, an integer >= 2 (every width times N), got {value!r}",
    needs="an integer >= 2: every width times N",
)
NEW_TOKENS = Param(
    "new_tokens",
    int,
    "key/value parameter tokens added to every Pattention (TokenFormer)",
    integer(1),
)
# MixtureGrowth: template models grow in the trainer only (growlm.ops.mixture_growth checks
# these declarations there); the planner refuses the operator on a checkpoint first
MIXTURE_FACTOR = Param(
    "factor", int, "MixtureGrowth: every width x N (template models)", integer(2), metavar="N"
)
COEF_SCALE = Param(
    "coef_scale",
    float,
    "scale of the new template combinations (0: exact, copies stay identical)",
    number("a finite number >= 0", lambda v: math.isfinite(v) and v >= 0),
    default=1.0,
)
EXPERTS = Param(
    "experts",
    int,
    "experts (copies of the FFN)",
    integer(2),
    problem="--experts {value!r}: an MoE needs at least 2 experts",
)
TOP_K = Param("top_k", int, "experts per token (1..--experts)", integer(), metavar="K")
ROUTER_INIT = Param(
    "router_init",
    str,
    "router weights: small random, zero, or k-means of the FFN inputs on --router-data",
    one_of("zero", "random", "hidden"),
    default="random",
)
DROP_RATIO = Param(
    "drop_ratio",
    float,
    "Drop-Upcycling: re-initialise this fraction of each expert's FFN units",
    number("a number in [0, 1]", lambda v: 0.0 <= v <= 1.0),
    default=0.0,
)
GRANULARITY = Param(
    "granularity",
    int,
    "split the FFN into G fine-grained experts per copy (top-k x G)",
    integer(1),
    default=1,
    metavar="G",
)


def _width(
    name: str, fill: str, description: str, paper: str, preserving: str, *aliases: str
) -> Operator:
    return Operator(name, "width", description, paper, preserving, WIDTH, aliases, width_fill=fill)


OPERATORS: tuple[Operator, ...] = (
    Operator(
        "direct-depth",
        "depth",
        "G_stack: the whole model repeated g times",
        "Du et al. 2024, Stacking Your Transformers (arXiv 2405.15319)",
        "no",
        (FACTOR,),
        ("stack", "g_stack", "g_direct", "direct"),
        depth.stack,
        required=("factor",),
    ),
    Operator(
        "interleave",
        "depth",
        "each layer repeated g times in place (0,0,1,1,...)",
        "Du et al. 2024 (ablation); Gong et al. 2019, progressive stacking",
        "no",
        (FACTOR,),
        ("interleaved",),
        depth.interleave,
        required=("factor",),
    ),
    Operator(
        "layers",
        "depth",
        "partial stacking from an explicit source layer list",
        "Du et al. 2024 (partial stacking)",
        "no",
        (LAYERS,),
        ("partial",),
        depth.explicit,
        required=("layers",),
    ),
    Operator(
        "top",
        "depth",
        "gradual stacking: the top block of layers copied onto the top",
        "Reddi et al. 2023, efficient training via gradual stacking; Yang et al. 2020, MSLT",
        "no",
        (BLOCK, COPIES),
        ("gradual", "stack-top"),
        depth.top,
    ),
    Operator(
        "midas",
        "depth",
        "MIDAS: a middle block of layers duplicated in the middle",
        "Saunshi et al. 2024, inductive bias of stacking towards reasoning (arXiv 2409.19044)",
        "no",
        (BLOCK,),
        ("middle",),
        depth.midas,
    ),
    Operator(
        "solar",
        "depth",
        "SOLAR depth up-scaling: two copies minus m layers at the seam",
        "Kim et al. 2023, SOLAR 10.7B (arXiv 2312.15166)",
        "no",
        (DROP,),
        ("dus", "depth-upscaling"),
        depth.solar,
        required=("drop",),
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
    _width(
        "direct-width",
        "direct",
        "Net2Net / bert2BERT split: new units copy old ones",
        "Chen et al. 2016, Net2Net; Chen et al. 2022, bert2BERT",
        "yes (integer hidden factor)",
        *("split", "net2net", "bert2bert", "g_direct-width"),
    ),
    _width(
        "zero-width",
        "zero",
        "new units with zero outgoing weights, norms corrected",
        "Du et al. 2024 (G_zero width); Shen et al. 2022, staged training",
        "yes",
        "g_zero-width",
    ),
    _width(
        "random-width",
        "random",
        "new units randomly initialised",
        "Du et al. 2024 (G_random width, without the MSG masks)",
        "no",
        "g_random-width",
    ),
    # HyperCloning: one self-contained entry (width.clone_shape + growth_plan.PairNoise)
    Operator(
        "clone-width",
        "width",
        "HyperCloning: every width x N (units cloned, readers /N), +eta/-eta noise pairs",
        "Samragh et al. 2024, Scaling Smart / HyperCloning (arXiv 2409.12903)",
        "yes",
        (CLONE_FACTOR, SNR_DB),
        ("hypercloning", "hyperclone"),
        width_fill="clone",
        required=("factor",),
    ),
    # TokenFormer: one self-contained entry (width.token_maps)
    Operator(
        "param-tokens",
        "width",
        "TokenFormer: N new key/value parameter tokens in every Pattention (new keys zero)",
        "Wang et al. 2024, TokenFormer (arXiv 2410.23168)",
        "no (near: new tokens add nothing, the sqrt(P) score scale grows; see --check)",
        (NEW_TOKENS,),
        ("tokenformer", "pattention-tokens"),
        width_fill="tokens",
        required=("new_tokens",),
    ),
    # MixtureGrowth: one self-contained entry (growlm.ops.mixture_growth; template models only)
    Operator(
        "mixture-growth",
        "width",
        "MixtureGrowth: width x N of a template model (growlm train, model.templates); new "
        "blocks are new (orthogonal) combinations of its trained templates",
        "Pham et al. 2024, MixtureGrowth (WACV 2024, arXiv 2311.04251)",
        "no (yes with coef_scale 0 and an untied head, but the copies then stay identical)",
        (MIXTURE_FACTOR, COEF_SCALE),
        ("mixturegrowth", "template-mixing"),
        width_fill="templates",
        required=("factor",),
        recipe_only=True,
    ),
    # learned operators (growlm.ops.ligo): layer_map / width_fill give the map they start from
    Operator(
        "learn-depth",
        "trains",
        "G_learn (LiGO) depth map learned from data, starting as stack",
        "Wang et al. 2023, LiGO (arXiv 2303.00980)",
        "no",
        (FACTOR, *TRAINING),
        ("g_learn", "ligo", "ligo-depth"),
        depth.stack,
        required=("factor", "steps"),
    ),
    Operator(
        "learn-width",
        "trains",
        "G_learn (LiGO) width map learned from data, starting as [I; small random]",
        "Wang et al. 2023, LiGO (arXiv 2303.00980)",
        "no",
        (*WIDTH, *TRAINING),
        ("ligo-width", "g_learn-width"),
        width_fill="random",
        required=("steps",),
    ),
    # dense -> MoE (growlm.ops.upcycle plans it; targets are data in growlm.arch.moe)
    Operator(
        "upcycle",
        "moe",
        f"sparse upcycling: every expert copies the dense FFN ({moe_targets_line()})",
        "Komatsuzaki et al. 2022, sparse upcycling; Nakamura et al. 2025, Drop-Upcycling",
        "yes (--drop-ratio 0, --granularity 1)",
        (EXPERTS, TOP_K, ROUTER_INIT, DROP_RATIO, GRANULARITY),
        ("sparse-upcycling", "moe", "drop-upcycling"),
        required=("experts", "top_k"),
    ),
)


# the operators ``growlm grow`` runs on checkpoints (a recipe-only one's parameters are recipe
# keys, not flags)
GROW_OPERATORS: tuple[Operator, ...] = tuple(op for op in OPERATORS if not op.recipe_only)


def all_params() -> dict[str, list[Param]]:
    """Every parameter of GROW_OPERATORS by name, in registry order (``growlm grow``'s flags)."""
    from growlm.ops.params import declared

    return declared(GROW_OPERATORS)


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

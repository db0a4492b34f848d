"""Checks a growth makes before it reads a weight or writes a byte.

From shapes and configs alone: the source's config agrees with its weights, its tokenizer fits
its vocabulary, the requested size is sane and fits the disk, and the grown config builds a
model whose shapes are the planned tensors' (so the output loads with transformers).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from growlm.arch import BUFFERS, spec_for
from growlm.errors import CorruptCheckpoint, InvalidData, InvalidGrowth
from growlm.io.checkpoint import SourceCheckpoint
from growlm.io.diskspace import human_bytes, require_free
from growlm.io.hf_config import check_shapes
from growlm.ops.growth_plan import GrowthPlan
from growlm.ops.params import MAX_WIDTH

MAX_LAYERS = 4096  # deeper than any trained transformer by far; the plan is O(layers)
MAX_EXPERTS = 4096  # upcycle: the plan holds a tensor per expert and layer
WIDTH_KEYS = {
    "hidden_size": "hidden",
    "intermediate_size": "ffn",
    "num_heads": "heads",
    "num_kv_heads": "kv_heads",
}


def check_source(source: SourceCheckpoint, op: str = "") -> None:
    """config.json agrees with the weights' shapes; the tokenizer's ids fit the vocabulary."""
    from growlm.ops.layout import source_shape
    from growlm.ops.planning import is_upcycle

    if is_upcycle(op):  # by any of its registry names
        from growlm.ops import upcycle

        upcycle.check_source(source.config)  # an MoE source has no dense spec to check against

    source_shape(spec_for(source.config.get("model_type")), source.config)  # sizes are numbers
    shapes = {n: source.shape(n) for n in source.names if not n.endswith(BUFFERS)}
    check_shapes(
        source.config,
        shapes,
        what=f"{source.path / 'config.json'}",
        weights="the weights",
        fix="the folder's config.json does not describe its weights: restore the original",
        error=CorruptCheckpoint,
    )
    check_tokenizer_fits(source.path, embedding_rows(source), f"the model in {source.path}")


def embedding_rows(source: SourceCheckpoint) -> int | None:
    """Rows of the input embedding (the ids the model accepts), from the weights' header."""
    spec = spec_for(source.config.get("model_type"))
    from growlm.ops.layout import Naming

    name = Naming.detect(spec, set(source.names)).find(spec.embed)
    return source.shape(name)[0] if name is not None else None


def tokenizer_size(folder: Path) -> int | None:
    """Ids a folder's tokenizer.json can produce (added tokens included); None without one."""
    path = Path(folder) / "tokenizer.json"
    if not path.is_file():
        return None
    from tokenizers import Tokenizer

    try:
        return int(Tokenizer.from_file(str(path)).get_vocab_size(with_added_tokens=True))
    except Exception:  # an unreadable tokenizer is reported by the checkpoint reader
        return None


def check_tokenizer_fits(folder: Path, rows: int | None, model: str) -> None:
    """Refuse a tokenizer whose ids index past the embedding: every batch would fail."""
    size = tokenizer_size(folder)
    if size is None or rows is None or size <= rows:
        return
    raise InvalidData(
        f"the tokenizer in {folder} has {size} ids but {model} has {rows} embedding rows: "
        f"use the model's own tokenizer (or grow the vocabulary first)"
    )


def check_bounds(
    source: SourceCheckpoint,
    params: dict[str, Any],
    out: Path | None,
    out_dtype: torch.dtype | None,
    op: str = "",
) -> None:
    """Sizes the user asked for, from the parameters alone: sane, and within the free disk."""
    spec = spec_for(source.config.get("model_type"))
    n = source.config.get(spec.keys.layers)
    if not isinstance(n, int) or n < 1:
        raise CorruptCheckpoint(f"config.json has no valid {spec.keys.layers}: {n!r}")
    widens = _widens_by_factor(op)  # its --factor multiplies the width, not the depth
    depth = _target_layers(
        n, {k: v for k, v in params.items() if k != "factor"} if widens else params
    )
    if depth > MAX_LAYERS:
        raise InvalidGrowth(
            f"the grown model would have {depth} layers; growlm grows to at most {MAX_LAYERS}: "
            "lower --factor / --num-layers"
        )
    ratio = 1.0
    if widens and isinstance(params.get("factor"), int):
        if params["factor"] * int(source.config.get(spec.keys.hidden) or 1) > MAX_WIDTH:
            raise InvalidGrowth(
                f"clone-width --factor {params['factor']}: the hidden size would pass "
                f"{MAX_WIDTH}, beyond any model growlm can write"
            )
        ratio = float(params["factor"])
    tokens = params.get("new_tokens")
    if isinstance(tokens, int) and tokens > MAX_WIDTH:
        raise InvalidGrowth(f"--new-tokens {tokens} is beyond any model growlm can write")
    for key, attr in WIDTH_KEYS.items():
        value = params.get(key)
        if value is None:
            continue
        if value > MAX_WIDTH:
            raise InvalidGrowth(
                f"--{key.replace('_', '-')} {value} is beyond any model growlm can write "
                f"(at most {MAX_WIDTH})"
            )
        config_key = getattr(spec.keys, attr)
        old = source.config.get(config_key) if config_key else None
        if isinstance(old, int) and old > 0 and attr in ("hidden", "ffn"):
            ratio = max(ratio, value / old)
    experts = params.get("experts")
    if isinstance(experts, int) and experts > MAX_EXPERTS:
        raise InvalidGrowth(f"--experts {experts}: growlm writes at most {MAX_EXPERTS} experts")
    if out is None:
        return
    scale = 1.0 if out_dtype is None else out_dtype.itemsize / _main_itemsize(source)
    if isinstance(experts, int):
        scale *= experts  # an upper bound: every tensor as if it were an FFN
    estimate = int(_weight_bytes(source) * depth / n * ratio * ratio * scale)
    require_free(
        out,
        estimate,
        "the grown model",
        f"{human_bytes(estimate)} estimated from the source and the requested size: free space, "
        "choose another OUT or grow less",
    )


def _widens_by_factor(op: str) -> bool:
    """Whether ``op`` (any registry name) has a width operator whose --factor multiplies the
    width (clone-width)."""
    from growlm.ops.registry import get_operator_entry

    return any(
        (entry := get_operator_entry(part)) is not None and entry.width_fill == "clone"
        for part in op.split("+")
    )


def _target_layers(n: int, params: dict[str, Any]) -> int:
    """An upper bound of the grown depth for any operator's parameters."""
    depth = n
    if isinstance(params.get("factor"), int):
        depth = max(depth, n * params["factor"])
    if isinstance(params.get("num_layers"), int):
        depth = max(depth, params["num_layers"])
    layers = params.get("layers")
    if isinstance(layers, str):
        depth = max(depth, layers.count(",") + 1)
    elif isinstance(layers, list):
        depth = max(depth, len(layers))
    if isinstance(params.get("block"), int):
        depth = max(depth, n + params["block"] * int(params.get("copies") or 1))
    return depth


def _weight_bytes(source: SourceCheckpoint) -> int:
    total = 0
    for name in source.names:
        count = 1
        for s in source.shape(name):
            count *= s
        total += count * source.dtype(name).itemsize
    return total


def _main_itemsize(source: SourceCheckpoint) -> int:
    sizes = [source.dtype(n).itemsize for n in source.names]
    return max(set(sizes), key=sizes.count)


def check_grown_config(plan: GrowthPlan) -> None:
    """The grown config builds a model of exactly the planned shapes (else it cannot load)."""
    check_shapes(
        plan.config,
        {tp.name: tp.shape for tp in plan.tensors},
        what="the grown config",
        weights="the planned tensors",
        fix="choose sizes the family allows (e.g. a hidden size that is heads x head_dim)",
        error=InvalidGrowth,
    )

"""Depthwise operators as layer maps: output layer -> (source layer, how it is made).

Each map checks its parameters against their declarations (``growlm.ops.params``, the ones only
depth operators take are declared here) and against the source depth ``n``.

kind "copy": a real copy of the source layer; "zero": a copy whose residual writes are zeroed
(an identity block, LLaMA Pro / G_zero); "random": a freshly initialised block (G_random).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from growlm.errors import InvalidGrowth
from growlm.ops.params import FACTOR, NUM_LAYERS, PLACEMENT, Param, integer

LAYERS = Param(
    "layers",
    str,
    "source layer list for the grown model, e.g. 0,1,2,1,2,3",
    metavar="LIST",
    needs="comma-separated source layers, e.g. 0,1,2,1,2,3",
)
DROP = Param(
    "drop",
    int,
    "SOLAR: layers dropped at the seam of each copy",
    integer(0),
    metavar="M",
    needs="an integer >= 0: layers removed at the seam of each copy",
)
COPIES = Param("copies", int, "copies of the top block", integer(1), default=1)


@dataclass(frozen=True)
class LayerSource:
    src: int
    kind: str = "copy"  # copy | zero | random


def stack(n: int, factor: object) -> list[LayerSource]:
    """G_stack: the whole model repeated g times (0..L-1, 0..L-1, ...)."""
    return [LayerSource(i) for _ in range(FACTOR.check(factor)) for i in range(n)]


def interleave(n: int, factor: object) -> list[LayerSource]:
    """Each layer repeated g times in place (0,0,1,1,...)."""
    return [LayerSource(i) for i in range(n) for _ in range(FACTOR.check(factor))]


def explicit(n: int, layers: object) -> list[LayerSource]:
    """Partial stacking: any list of source layers, e.g. 0,1,2,1,2,3."""
    if isinstance(layers, str):
        try:
            layers = [int(x) for x in layers.replace(" ", "").split(",") if x != ""]
        except ValueError:
            raise InvalidGrowth(
                f"--layers must be comma-separated integers like 0,1,2,1,2,3, got {layers!r}"
            ) from None
    if not isinstance(layers, (list, tuple)) or not layers:
        raise InvalidGrowth("--layers needs a non-empty list of source layer indices")
    bad = [i for i in layers if not isinstance(i, int) or isinstance(i, bool) or not 0 <= i < n]
    if bad:
        raise InvalidGrowth(
            f"layer index {bad[0]!r} out of range: the source has layers 0..{n - 1}"
        )
    if len(layers) < n:
        raise InvalidGrowth(
            f"--layers lists {len(layers)} layers but the source has {n}: growth needs at least {n}"
        )
    return [LayerSource(int(i)) for i in layers]


def solar(n: int, drop: Any) -> list[LayerSource]:
    """SOLAR depth up-scaling: two copies; the last m of the first and first m of the second go."""
    drop = DROP.check(drop)
    if 2 * (n - drop) <= n:
        raise InvalidGrowth(
            f"--drop {drop} leaves {2 * (n - drop)} layers from {n}: use --drop < {(n + 1) // 2}"
        )
    return [LayerSource(i) for i in range(n - drop)] + [LayerSource(i) for i in range(drop, n)]


def _block(n: int, block: object) -> int:
    if isinstance(block, bool) or not isinstance(block, int) or not 1 <= block <= n:
        raise InvalidGrowth(f"--block must be an integer in 1..{n} (the source depth): {block!r}")
    return block


def top(n: int, block: object = None, copies: Any = 1) -> list[LayerSource]:
    """Gradual stacking: the top ``block`` layers copied ``copies`` times onto the top
    (0..n-1, n-b..n-1, n-b..n-1, ...); the whole model when ``block`` is not given."""
    b = n if block is None else _block(n, block)
    copies = COPIES.check(copies)
    return [LayerSource(i) for i in range(n)] + [
        LayerSource(i) for _ in range(copies) for i in range(n - b, n)
    ]


def midas(n: int, block: object = None) -> list[LayerSource]:
    """MIDAS: the middle ``block`` layers (default: half the model, at least 1) duplicated in
    place, so the copy sits in the middle of the grown model: 0..e-1, s..e-1, e..n-1 for the
    block s..e-1."""
    b = max(1, n // 2) if block is None else _block(n, block)
    s = (n - b) // 2
    e = s + b
    return [LayerSource(i) for i in range(e)] + [LayerSource(i) for i in range(s, n)]


def with_new_blocks(
    n: int,
    kind: str,
    factor: object = None,
    num_layers: object = None,
    placement: str = "interleave",
) -> list[LayerSource]:
    """Insert new blocks (identity or random) until the model has the target depth.

    interleave (LLaMA Pro): the source is cut into as many groups as there are new blocks and one
    new block follows each group, built from the group's last layer; append: new blocks on top.
    """
    if num_layers is None:
        if factor is None:
            raise InvalidGrowth(f"{kind} blocks need --factor G or --num-layers N")
        target = n * FACTOR.check(factor)
    else:
        if NUM_LAYERS.check(num_layers) <= n:
            raise InvalidGrowth(f"--num-layers must be an integer > {n} (the source depth)")
        target = num_layers
    new = target - n
    PLACEMENT.check(placement)
    if placement == "append":
        return [LayerSource(i) for i in range(n)] + [LayerSource(n - 1, kind) for _ in range(new)]
    out: list[LayerSource] = []
    # new block k follows source layer ends[k]: groups as even as possible (LLaMA Pro)
    ends = {((k + 1) * n) // new - 1 for k in range(new)} if new <= n else set()
    per_layer = [0] * n
    if new <= n:
        for e in ends:
            per_layer[max(e, 0)] += 1
        short = new - sum(per_layer)
        for i in range(short):
            per_layer[n - 1 - i] += 1
    else:
        for k in range(new):
            per_layer[k % n] += 1
    for i in range(n):
        out.append(LayerSource(i))
        out += [LayerSource(i, kind) for _ in range(per_layer[i])]
    return out

"""Index maps from a grown axis back to the source axis.

Width growth is described per axis kind (see ``growlm.arch.spec``) by an ``AxisMap``: for every
index of the grown axis, the source index it copies (-1 for a brand-new unit) and how many grown
indices copy that same source index (Net2Net divides readers by that count).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from growlm.errors import InvalidGrowth


@dataclass(frozen=True)
class Shape:
    """The widths a growth operator reads and writes."""

    hidden: int
    ffn: int
    heads: int
    kv_heads: int
    head_dim: int


@dataclass(frozen=True)
class AxisMap:
    src_size: int
    index: torch.Tensor  # [new] int64, -1 = new unit
    count: torch.Tensor  # [new] float32, copies of the same source index (1 for new units)

    @property
    def new_size(self) -> int:
        return int(self.index.numel())

    @property
    def has_new(self) -> bool:
        return bool((self.index < 0).any())

    @property
    def is_identity(self) -> bool:
        return self.new_size == self.src_size and bool(
            (self.index == torch.arange(self.src_size)).all()
        )


def _from_index(src_size: int, index: list[int]) -> AxisMap:
    idx = torch.tensor(index, dtype=torch.int64)
    counts = torch.bincount(idx[idx >= 0], minlength=src_size).to(torch.float32)
    count = torch.where(
        idx >= 0, counts[idx.clamp(min=0)], torch.ones_like(idx, dtype=torch.float32)
    )
    return AxisMap(src_size=src_size, index=idx, count=count)


def unit_map(src: int, new: int, copy: bool) -> list[int]:
    """Units 0..src-1 keep their place; extra units copy cyclically (``copy``) or are new (-1)."""
    return [j if j < src else (j % src if copy else -1) for j in range(new)]


def head_maps(src: Shape, new: Shape, copy: bool) -> tuple[list[int], list[int]]:
    """Query-head and kv-head maps that keep every query head in a group whose kv head is (a copy
    of) its own kv head. Groups: query head h uses kv head h // (heads / kv_heads)."""
    g_src = src.heads // src.kv_heads
    g_new = new.heads // new.kv_heads
    kv = unit_map(src.kv_heads, new.kv_heads, copy)
    q: list[int] = []
    seen: set[int] = set()
    for c, k in enumerate(kv):
        rank = sum(1 for c2 in range(c) if kv[c2] == k)  # which copy of kv head k this group is
        for s in range(g_new):
            if k < 0:
                q.append(-1)
                continue
            slot = rank * g_new + s
            if slot < g_src:
                q.append(k * g_src + slot)
            elif copy:
                q.append(k * g_src + slot % g_src)
            else:
                q.append(-1)
            if q[-1] >= 0:
                seen.add(q[-1])
    if len(seen) != src.heads:
        raise InvalidGrowth(
            f"cannot place {src.heads} query heads in {new.kv_heads} kv groups of {g_new}: "
            f"keep heads/kv_heads >= {g_src} (query heads per kv head may not shrink)"
        )
    return q, kv


def _expand_heads(units: list[int], head_dim: int, block: int = 1) -> list[int]:
    """Per-head map -> per-dimension map (each head spans ``block * head_dim`` entries)."""
    width = block * head_dim
    return [u * width + r if u >= 0 else -1 for u in units for r in range(width)]


def _concat(*parts: tuple[list[int], int]) -> list[int]:
    """Concatenate part maps; each part's source indices are offset by the sizes before it."""
    out: list[int] = []
    offset = 0
    for index, src_size in parts:
        out += [i + offset if i >= 0 else -1 for i in index]
        offset += src_size
    return out


def axis_maps(src: Shape, new: Shape, copy: bool) -> dict[str, AxisMap]:
    """Every axis kind's map for one width growth. ``copy`` = Net2Net split; else new units."""
    hidden = unit_map(src.hidden, new.hidden, copy)
    ffn = unit_map(src.ffn, new.ffn, copy)
    qh, kvh = head_maps(src, new, copy)
    d = src.head_dim
    q = _expand_heads(qh, d)
    kv = _expand_heads(kvh, d)
    qd, kvd = src.heads * d, src.kv_heads * d
    maps = {
        "hidden": (src.hidden, hidden),
        "ffn": (src.ffn, ffn),
        "ffn2": (2 * src.ffn, _concat((ffn, src.ffn), (ffn, src.ffn))),
        "q": (qd, q),
        "kv": (kvd, kv),
        "qkv": (qd + 2 * kvd, _concat((q, qd), (kv, kvd), (kv, kvd))),
        "qkvh": (3 * qd, _expand_heads(qh, d, block=3)),
    }
    return {k: _from_index(size, idx) for k, (size, idx) in maps.items()}

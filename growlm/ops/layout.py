"""Where a checkpoint's tensors are: the spec's canonical names as this checkpoint spells them,
the source sizes its config gives, and the check that the weights are the ones the spec expects."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from growlm.arch import BUFFERS, ArchSpec, TensorSpec
from growlm.errors import CorruptCheckpoint
from growlm.ops.axes import Shape
from growlm.ops.depth import LayerSource
from growlm.ops.growth_plan import GrowthPlan, TensorPlan


@dataclass
class Naming:
    """Maps a spec's canonical tensor names to the names this checkpoint uses."""

    spec: ArchSpec
    names: set[str]
    prefix_swap: tuple[str, str] | None = None

    @classmethod
    def detect(cls, spec: ArchSpec, names: set[str]) -> Naming:
        probe = spec.layer_name(spec.layer_tensors[0], 0)
        for canon, alt in spec.alt_prefixes:
            if (
                probe.startswith(canon)
                and probe not in names
                and alt + probe[len(canon) :] in names
            ):
                return cls(spec, names, (canon, alt))
        return cls(spec, names)

    def actual(self, canonical: str) -> str:
        if self.prefix_swap and canonical.startswith(self.prefix_swap[0]):
            return self.prefix_swap[1] + canonical[len(self.prefix_swap[0]) :]
        return canonical

    def find(self, ts: TensorSpec, layer: int | None = None) -> str | None:
        candidates = [ts.name, *ts.alts]
        for cand in candidates:
            canon = (
                self.spec.layer_prefix.replace("{i}", str(layer)) + cand
                if layer is not None
                else cand
            )
            name = self.actual(canon)
            if name in self.names:
                return name
        return None


def source_shape(spec: ArchSpec, cfg: dict[str, Any]) -> tuple[int, Shape]:
    k = spec.keys

    def need(key: str) -> int:
        value = cfg.get(key)
        if not isinstance(value, int) or value <= 0:
            raise CorruptCheckpoint(f"config.json has no valid {key!r} (needed for {spec.name})")
        return value

    layers, hidden, heads = need(k.layers), need(k.hidden), need(k.heads)
    kv = cfg.get(k.kv_heads) if k.kv_heads else None
    kv = kv if isinstance(kv, int) and kv > 0 else heads
    hd = cfg.get(k.head_dim) if k.head_dim else None
    hd = hd if isinstance(hd, int) and hd > 0 else hidden // heads
    ffn = cfg.get(k.ffn)
    ffn = ffn if isinstance(ffn, int) and ffn > 0 else 4 * hidden
    return layers, Shape(hidden=hidden, ffn=ffn, heads=heads, kv_heads=kv, head_dim=hd)


def validate_tensors(
    spec: ArchSpec, naming: Naming, shapes: dict[str, tuple[int, ...]], n: int, tied: bool
) -> None:
    expected: set[str] = set()
    for ts in spec.global_tensors:
        name = naming.find(ts)
        if name is None:
            if ts is spec.head and tied:
                continue
            if not ts.optional:
                raise CorruptCheckpoint(
                    f"checkpoint has no tensor {naming.actual(ts.name)!r} required by the "
                    f"{spec.name} spec: is it a complete {spec.name} checkpoint?"
                )
            continue
        expected.add(name)
    for i in range(n):
        for ts in spec.layer_tensors:
            name = naming.find(ts, i)
            if name is None:
                first = naming.find(ts, 0)
                if ts.optional and first is None:
                    continue
                raise CorruptCheckpoint(
                    f"checkpoint lacks {naming.actual(spec.layer_name(ts, i))!r}: config says "
                    f"{n} layers; the weights and config.json disagree"
                )
            expected.add(name)
    head_name = naming.find(spec.head)
    if tied and head_name is not None:
        expected.add(head_name)  # a saved tied head is ignored: it is the embedding
    unknown = sorted(
        nm for nm in shapes if nm not in expected and not any(nm.endswith(b) for b in BUFFERS)
    )
    if unknown:
        raise CorruptCheckpoint(
            f"tensor {unknown[0]!r} is not described by the {spec.name} spec "
            f"({len(unknown)} such): the checkpoint has more layers than config.json or is a "
            f"variant growlm does not know"
        )


def init_std(spec: ArchSpec, cfg: dict[str, Any]) -> float:
    """The std of fresh weights: the config's initializer range, 0.02 without one."""
    std = cfg.get(spec.keys.init_std)
    return float(std) if isinstance(std, (int, float)) else 0.02


def new_plan(
    spec: ArchSpec,
    cfg: dict[str, Any],
    growth: tuple[str, dict[str, Any]],
    tensors: list[TensorPlan],
    config: dict[str, Any],
    layers: list[LayerSource],
    preserving: bool,
    seed: int,
) -> GrowthPlan:
    """A plan over ``spec``: ``growth`` is (op, params), ``layers`` the grown layers' sources;
    fresh weights' std and the norm offset come from the config and the spec."""
    op, params = growth
    return GrowthPlan(
        op=op,
        params=dict(params),
        tensors=tensors,
        config=config,
        layer_map=[{"out": j, "src": ls.src, "kind": ls.kind} for j, ls in enumerate(layers)],
        src_layers=int(cfg[spec.keys.layers]),
        out_layers=len(layers),
        function_preserving=preserving,
        init_std=init_std(spec, cfg),
        norm_offset=spec.norm_offset,
        seed=seed,
    )

"""``growlm grow``: resolve a checkpoint, plan its growth, execute the plan into a new folder,
record what was done.

The planning is the ops layer's (``growlm.ops.planning``; in memory: ``growlm.ops.in_memory``).
The output is written to a temporary sibling folder and renamed at the end, so OUT is either
absent or complete.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import torch

from growlm import __version__
from growlm.arch import BUFFERS, spec_for
from growlm.dtypes import SPELLINGS, long_name
from growlm.errors import (
    InvalidData,
    InvalidGrowth,
    is_disk_full,
    os_error,
)
from growlm.io.checkpoint import SIDE_FILES, SourceCheckpoint
from growlm.io.diskspace import require_free
from growlm.io.faults import fault_point
from growlm.io.model_card import add_check, grow_facts, write_grow_card
from growlm.io.output import OutputSpec
from growlm.io.resolve import resolve_model
from growlm.io.safetensors_stream import nbytes, write_sharded
from growlm.ops.growth_plan import GrowthPlan
from growlm.ops.ligo_maps import parse_learn_op, vocab_rows
from growlm.ops.mixture_growth import CHECKPOINT_REFUSAL
from growlm.ops.params import check_params
from growlm.ops.planning import plan_checkpoint
from growlm.ops.registry import parse_ops
from growlm.preflight import check_bounds, check_grown_config, check_source

LEARN_SEQ_LEN = 128
LEARN_BATCH_SIZE = 8
LEARN_POOL_TOKENS = 1 << 17  # learn-*: --data text tokenized up to max(this, 4x what steps read)
DTYPE_NAMES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
RECORD = "growth.json"  # the growth record: also what lets --force replace a grown folder
# everything a grown folder holds; with --force, anything else in OUT is the user's
MEMBERS = (
    RECORD,
    "config.json",
    "README.md",
    "model.safetensors",
    "model-*.safetensors",
    "model.safetensors.index.json",
    *SIDE_FILES,
    # a grown transformers.Trainer checkpoint-N (growlm/train/hf_trainer.py)
    "optimizer.pt",
    "scheduler.pt",
    "scaler.pt",
    "trainer_state.json",
    "training_args.bin",
    "rng_state*.pth",
)


def parse_shard_size(text: str | int) -> int:
    """``2GB``, ``500MB``, ``4KB`` or a byte count; a size below one byte is refused (0 would
    put every tensor in its own shard)."""
    size = text if isinstance(text, int) else _size_bytes(text)
    if size < 1:
        raise InvalidGrowth(f"--shard-size must be positive (e.g. 2GB or 500MB), got {text!r}")
    return size


def _size_bytes(text: str) -> int:
    t = text.strip().upper()
    for suffix, mult in (("GB", 1 << 30), ("MB", 1 << 20), ("KB", 1 << 10), ("B", 1)):
        if t.endswith(suffix):
            try:
                return int(float(t[: -len(suffix)]) * mult)
            except (ValueError, OverflowError):  # not a number, or inf / 1e400
                break
    try:
        return int(t)
    except ValueError:
        raise InvalidGrowth(f"--shard-size must look like 2GB or 500MB, got {text!r}") from None


@dataclass(frozen=True)
class GrowOptions:
    """How ``grow`` runs, apart from the operator and its parameters.

    ``data``, ``seq_len``, ``batch_size``: learned operators (learn-depth, learn-width) train
    their maps on ``data`` (text file, folder of text files, or a ``growlm data prepare`` folder)
    in windows of ``seq_len`` tokens, ``batch_size`` windows a step; ``progress(step, loss)`` is
    called after every map-training step. ``router_data``: text for upcycle's
    ``router_init: hidden`` (k-means of FFN inputs)."""

    dtype: str | None = None
    dry_run: bool = False
    check: bool = False
    force: bool = False
    seed: int = 0
    shard_size: str | int = "2GB"
    data: str | Path | None = None
    seq_len: int | None = None
    batch_size: int | None = None
    router_data: str | Path | None = None
    progress: Callable[[int, float], None] | None = None


@dataclass
class GrowResult:
    """What ``grow`` did (the README's report); ``to_json()`` is ``growlm grow --json``."""

    op: str
    params: dict[str, Any]
    src: str
    src_layers: int
    out_layers: int
    src_params: int
    out_params: int
    out_bytes: int
    function_preserving: bool
    layer_map: list[Any]
    steps: int | None = None  # learned operators: map-training steps and rate
    lr: float | None = None
    plan: list[str] | None = None  # --dry-run: one line per output tensor
    training: dict[str, Any] = field(default_factory=dict)  # learned: the map training's record
    seconds: float | None = None
    check: dict[str, Any] = field(default_factory=dict)  # --check: logits and losses compared

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name in ("training", "check"):
                out.update({k: v for k, v in value.items() if k not in out})
            elif value is not None or f.default is not None:
                out[f.name] = value
        return out


def grow(
    src: str | Path,
    out: str | Path | None,
    op: str,
    params: Mapping[str, Any] | None = None,
    options: GrowOptions | None = None,
) -> GrowResult:
    """Grow the checkpoint folder ``src`` into ``out`` with operator ``op`` and its
    ``params`` (declared in ``growlm.ops.registry``, e.g. ``{"factor": 2}``): resolve the
    source, plan, execute (stream, or train a learned operator's maps), record."""
    opts = options or GrowOptions()
    t0 = time.perf_counter()
    params = {k: v for k, v in (params or {}).items() if v is not None}
    out_dtype = _out_dtype(opts.dtype)
    parse_shard_size(opts.shard_size)  # a bad --shard-size is refused before any work
    resolved = resolve_model(src)  # a folder, hub id or .gguf file
    source = SourceCheckpoint(resolved.path)
    out_path: Path | None = None
    output: OutputSpec | None = None
    if not opts.dry_run:
        if out is None:
            raise InvalidGrowth("give an output folder OUT (or --dry-run)")
        output = OutputSpec(
            path=Path(out),
            force=opts.force,
            records=(RECORD,),
            members=MEMBERS,
            sources=[source.path],
        )
        out_path = output.check()
    check_source(source, op)
    learned = parse_learn_op(op)  # the combinations refused first (two depth operators, ...)
    operators = learned.operators if learned else [o for o in parse_ops(op) if o is not None]
    if any(o.width_fill == "templates" for o in operators):
        raise InvalidGrowth(CHECKPOINT_REFUSAL)  # MixtureGrowth grows template models only
    check_params(operators, params)  # every parameter as declared before anything reads it
    check_bounds(source, params, out_path, out_dtype, op)
    if parse_learn_op(op) is None:
        for flag, value in (
            ("data", opts.data),
            ("seq-len", opts.seq_len),
            ("batch-size", opts.batch_size),
        ):
            if value is not None:
                raise InvalidGrowth(f"--{flag} applies to learn-depth / learn-width only")
    routers = _routers(source, op, params, opts.router_data, opts.seed)
    plan = plan_checkpoint(source, op, params, opts.seed, routers)
    learn_data = None
    if plan.learned is not None:
        learn_data = _learn_data(source, plan.learned, opts.data, opts.seq_len, opts.batch_size)
    check_grown_config(plan)
    result = _result(source, plan, out_dtype)
    if opts.dry_run:
        result.plan = [tp.describe() for tp in plan.tensors]
        if plan.learned is not None:
            result.plan.append(
                f"learned ({plan.learned.op.name}): names, shapes and sources as above; values "
                f"come from the learned maps (initially stack, width [I; small random]), trained "
                f"{plan.learned.steps} steps"
            )
        return result
    assert output is not None and out_path is not None
    require_free(out_path, result.out_bytes, "the grown model", "free space or choose another OUT")
    tensors: dict[str, torch.Tensor] | None = None
    record: dict[str, Any] = {}
    if learn_data is not None:
        tensors, record = _learn_weights(source, op, params, opts.seed, learn_data, opts.progress)
        result.training = {k: v for k, v in record.items() if k != "depth_maps"}
    growth = (op, params)
    _write_folder(source, resolved, plan, growth, output, opts, tensors, record, result)
    result.seconds = round(time.perf_counter() - t0, 3)
    if opts.check:
        from growlm.check import compare_logits

        checked = compare_logits(source.path, out_path, out_dtype or _main_dtype(source))
        checked["function_preserving"] = bool(
            plan.function_preserving and checked["check_within_tolerance"]
        )
        result.function_preserving = checked["function_preserving"]
        result.check = {k: v for k, v in checked.items() if k != "function_preserving"}
        add_check(out_path, checked)  # into growth.json and the model card
    return result


def _out_dtype(dtype: str | None) -> torch.dtype | None:
    if dtype is None:
        return None
    if long_name(dtype) not in DTYPE_NAMES:
        raise InvalidGrowth(f"--dtype must be one of {', '.join(SPELLINGS)}, got {dtype!r}")
    return DTYPE_NAMES[long_name(dtype)]


def _write_folder(
    source: SourceCheckpoint,
    resolved: Any,
    plan: GrowthPlan,
    growth: tuple[str, dict[str, Any]],
    output: OutputSpec,
    opts: GrowOptions,
    tensors: dict[str, torch.Tensor] | None,
    record: dict[str, Any],
    result: GrowResult,
) -> None:
    """Stage the grown folder beside OUT and swap it in (OUT is absent or complete)."""
    out_dtype = _out_dtype(opts.dtype)
    out_path = output.path
    try:
        with output.staged() as tmp:
            facts = grow_facts(source.path, source.config, result.to_json(), resolved.hub_id)
            extra = {**resolved.record(), **facts, **record}
            from growlm.train import hf_trainer

            if hf_trainer.is_trainer_checkpoint(source.path):  # a checkpoint-N: AdamW grows too
                cfgs = (source.config, plan.config)
                extra.update(
                    hf_trainer.grow_trainer_state(source.path, *cfgs, *growth, opts.seed, tmp)
                )
            max_shard = parse_shard_size(opts.shard_size)
            _write(source, plan, tmp, out_dtype, max_shard, tensors, extra, out_path.name)
            fault_point("grow.written")
    except OSError as e:
        if is_disk_full(e):
            raise os_error(e, str(out_path), "nothing was left behind") from None
        raise


def _routers(
    source: SourceCheckpoint,
    op: str,
    params: dict[str, Any],
    router_data: str | Path | None,
    seed: int,
) -> dict[int, torch.Tensor] | None:
    """upcycle --router-init hidden: routers from the source's FFN inputs on given text."""
    if params.get("router_init") != "hidden" or router_data is None:
        if router_data is not None:
            raise InvalidGrowth("--router-data applies to upcycle --router-init hidden only")
        return None
    from growlm.check import load_fp32
    from growlm.data.batches import path_batches
    from growlm.ops import upcycle

    plan_checkpoint(source, op, {**params, "router_init": "zero"}, seed)  # validate first
    st = upcycle.settings(params)
    model = load_fp32(source.path)
    vocab = int(model.config.vocab_size)
    batch = path_batches(router_data, source.path, vocab, 128, 8, seed)(0)[:, :-1]
    spec = spec_for(source.config.get("model_type"))
    return upcycle.hidden_routers(model, spec, batch, st.n_out, seed)


def _out_items(source: SourceCheckpoint, plan: GrowthPlan, out_dtype: torch.dtype | None):
    items = []
    for tp in plan.tensors:
        dt = out_dtype or (source.dtype(tp.source) if tp.source else _main_dtype(source))
        items.append((tp.name, tp.shape, dt))
    return items


def _main_dtype(source: SourceCheckpoint) -> torch.dtype:
    counts: dict[torch.dtype, int] = {}
    for n in source.names:
        counts[source.dtype(n)] = counts.get(source.dtype(n), 0) + 1
    return max(counts, key=lambda d: counts[d])


def _result(
    source: SourceCheckpoint, plan: GrowthPlan, out_dtype: torch.dtype | None
) -> GrowResult:
    src_params = sum(_numel(source.shape(n)) for n in source.names if not n.endswith(BUFFERS))
    items = _out_items(source, plan, out_dtype)
    out_params = sum(_numel(s) for _, s, _ in items)
    learned = plan.learned
    return GrowResult(
        op=plan.op,
        params=plan.params,
        src=str(source.path),
        src_layers=plan.src_layers,
        out_layers=plan.out_layers,
        src_params=src_params,
        out_params=out_params,
        out_bytes=sum(nbytes(s, d) for _, s, d in items),
        function_preserving=plan.function_preserving,
        layer_map=[
            m["src"] if m["kind"] == "copy" else f"{m['src']}:{m['kind']}" for m in plan.layer_map
        ],
        steps=learned.steps if learned is not None else None,
        lr=learned.lr if learned is not None else None,
    )


def _numel(shape: tuple[int, ...]) -> int:
    n = 1
    for s in shape:
        n *= s
    return n


@dataclass
class _LearnData:
    steps: int
    data: Path | None
    seq_len: int
    batch_size: int


def _learn_data(
    source: SourceCheckpoint,
    settings: Any,
    data: str | Path | None,
    seq_len: int | None,
    batch_size: int | None,
) -> _LearnData:
    """Check a learned growth's data options before any weight is read."""
    for flag, value in (("seq-len", seq_len), ("batch-size", batch_size)):
        if value is not None and (
            isinstance(value, bool) or not isinstance(value, int) or value < 1
        ):
            raise InvalidGrowth(f"--{flag} must be an integer >= 1, got {value!r}")
    value = source.config.get("max_position_embeddings", source.config.get("n_positions"))
    positions = value if isinstance(value, int) and not isinstance(value, bool) else None
    # the default fits a short-context model: min(128, its positions)
    seq = seq_len or min(LEARN_SEQ_LEN, positions or LEARN_SEQ_LEN)
    if positions is not None and seq > positions:
        raise InvalidGrowth(f"--seq-len {seq} exceeds the model's {positions} positions")
    name = settings.op.name
    if settings.steps > 0 and data is None:
        raise InvalidGrowth(
            f"{name} with --steps {settings.steps} trains its map on data: give --data PATH "
            f"(a text file, a folder of .txt files, or a `growlm data prepare` folder)"
        )
    path = None if data is None else Path(data).expanduser()
    if path is not None and not path.exists():
        raise InvalidData(f"--data {str(data)!r} does not exist")
    return _LearnData(settings.steps, path, seq, batch_size or LEARN_BATCH_SIZE)


def _learn_weights(
    source: SourceCheckpoint,
    op: str,
    params: dict[str, Any],
    seed: int,
    opts: _LearnData,
    progress: Callable[[int, float], None] | None,
) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Read the source, train the maps (if steps > 0), return the grown weights and record."""
    from growlm.data.batches import path_batches
    from growlm.ops.ligo import learn_grow

    weights = {n: source.get(n) for n in source.names if not n.endswith(BUFFERS)}
    batches = None
    if opts.steps > 0:
        assert opts.data is not None
        vocab = vocab_rows(source.config, weights)
        # text is tokenized only as far as a generous pool for the steps' windows needs
        pool = max(LEARN_POOL_TOKENS, 4 * opts.steps * opts.batch_size * (opts.seq_len + 1))
        batches = path_batches(
            opts.data, source.path, vocab, opts.seq_len, opts.batch_size, seed, max_tokens=pool
        )
    _, grown, report = learn_grow(
        source.config, weights, op, params, batches, seed=seed, on_step=progress
    )
    keep = (
        "steps",
        "lr",
        "tokens",
        "flops",
        "compose_flops",
        "loss_first",
        "loss_last",
        "maps",
        "map_params",
    )
    record = {k: report[k] for k in keep}
    record["depth_maps"] = report.get("depth_maps", {})
    if opts.steps > 0:
        record.update(data=str(opts.data), seq_len=opts.seq_len, batch_size=opts.batch_size)
    return grown, record


def _write(
    source: SourceCheckpoint,
    plan: GrowthPlan,
    tmp: Path,
    out_dtype: torch.dtype | None,
    max_shard: int,
    tensors: dict[str, torch.Tensor] | None = None,
    extra_record: dict[str, Any] | None = None,
    card_name: str | None = None,
) -> None:
    """Write the plan's output into ``tmp``: streamed from the source, or ``tensors`` computed
    in memory (learned growth), with config.json, side files, growth.json (+ extra_record) and
    the model card (README.md; ``card_name`` is the folder name it shows)."""
    items = _out_items(source, plan, out_dtype)
    dtypes = {name: dt for name, _, dt in items}

    def stream():
        for tp in plan.tensors:
            if tensors is not None:
                yield tp.name, tensors[tp.name].to(dtypes[tp.name])
                continue
            src_name = tp.source
            changed = any(st.affects_weights for st in tp.steps)
            raw = source.raw(src_name) if src_name is not None and not changed else None
            if raw is not None and src_name and source.dtype(src_name) == dtypes[tp.name]:
                yield tp.name, raw  # an unchanged copy: bytes go file to file
            else:
                yield tp.name, plan.run(tp, source.get, dtype=dtypes[tp.name])

    write_sharded(tmp, items, stream(), max_shard)
    cfg = dict(plan.config)
    cfg.pop("_name_or_path", None)  # the source's name, not this model's
    if out_dtype is not None:
        name = str(out_dtype).removeprefix("torch.")
        for key in ("torch_dtype", "dtype"):
            if key in cfg or key == "dtype":
                cfg[key] = name
    (tmp / "config.json").write_text(json.dumps(cfg, indent=2, sort_keys=True) + "\n")
    copied = source.copy_side_files(tmp)
    record = {
        "growlm_version": __version__,
        "source": str(source.path.resolve()),
        "operator": plan.op,
        "params": plan.params,
        "seed": plan.seed,
        "src_layers": plan.src_layers,
        "out_layers": plan.out_layers,
        "layer_map": plan.layer_map,
        "function_preserving": plan.function_preserving,
        "copied_files": copied,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        **(extra_record or {}),
    }
    (tmp / RECORD).write_text(json.dumps(record, indent=2) + "\n")
    write_grow_card(tmp, record, card_name)

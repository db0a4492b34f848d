"""``growlm grow``: plan, then stream a checkpoint through a growth operator into a new folder.

The output is written to a temporary sibling folder and renamed at the end, so OUT is either
absent or complete. ``grow_tensors`` applies the same plans to tensors in memory (the trainer).
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from growlm import __version__
from growlm.arch import BUFFERS, spec_for
from growlm.errors import (
    DiskFull,
    GrowlmError,
    InvalidData,
    InvalidGrowth,
    OutputExists,
    OutputNotWritable,
)
from growlm.io.atomic import clear_dead_tmp, replace_dir
from growlm.io.checkpoint import SourceCheckpoint
from growlm.io.faults import fault_point
from growlm.io.model_card import add_check, grow_facts, write_grow_card
from growlm.io.resolve import resolve_model
from growlm.io.safetensors_stream import nbytes, write_sharded
from growlm.ops.plan import Mode, Plan
from growlm.ops.planner import build_plan

LEARN_SEQ_LEN = 128
LEARN_BATCH_SIZE = 8
LEARN_POOL_TOKENS = 1 << 17  # learn-*: --data text tokenized up to max(this, 4x what steps read)
DTYPE_NAMES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
_TMP_MARKER = ".growlm-tmp-"  # OUT is written as .<OUT name>.growlm-tmp-<pid>, then renamed


def parse_size(text: str | int) -> int:
    if isinstance(text, int):
        return text
    t = text.strip().upper()
    for suffix, mult in (("GB", 1 << 30), ("MB", 1 << 20), ("KB", 1 << 10), ("B", 1)):
        if t.endswith(suffix):
            try:
                return int(float(t[: -len(suffix)]) * mult)
            except ValueError:
                break
    try:
        return int(t)
    except ValueError:
        raise InvalidGrowth(f"--shard-size must look like 2GB or 500MB, got {text!r}") from None


def _derived_config(cfg: dict[str, Any]) -> tuple[dict[str, Any], bool]:
    """The config as transformers completes it (per-layer lists, tie flag), without remote code."""
    from transformers import AutoConfig

    model_type = str(cfg.get("model_type"))
    try:
        conf = AutoConfig.for_model(
            model_type, **{k: v for k, v in cfg.items() if k != "model_type"}
        )
    except Exception as e:  # a config transformers itself rejects
        raise InvalidGrowth(f"config.json is not a valid {model_type} config: {e}") from None
    tied = bool(getattr(conf, "tie_word_embeddings", False))
    return conf.to_dict(), tied


def _plan(
    cfg: dict[str, Any],
    shapes: dict[str, tuple[int, ...]],
    op: str,
    params: dict[str, Any],
    seed: int,
) -> Plan:
    """The plan for a config and its tensor shapes (disk and in-memory growth alike)."""
    spec = spec_for(cfg.get("model_type"))
    keys = spec.keys
    # transformers (slow to import) completes the config only when it lacks something
    if any(k not in cfg for k in (*keys.per_layer, keys.eps)):
        derived, tied = _derived_config(cfg)
    else:
        derived, tied = {}, bool(cfg.get("tie_word_embeddings", spec.tie_default))
    return build_plan(spec, cfg, derived, shapes, op, params, tied, seed)


def plan_checkpoint(src: SourceCheckpoint, op: str, params: dict[str, Any], seed: int = 0) -> Plan:
    return _plan(src.config, {n: src.shape(n) for n in src.names}, op, params, seed)


def plan_tensors(
    cfg: dict[str, Any],
    shapes: dict[str, tuple[int, ...]],
    op: str,
    params: dict[str, Any],
    seed: int = 0,
) -> Plan:
    """The plan of a plain operator for a config dict and tensor shapes (no weights)."""
    return _plan(cfg, shapes, op, params, seed)


def config_object(cfg: dict[str, Any]) -> Any:
    """A plan's config dict as the family's PretrainedConfig."""
    from transformers import AutoConfig

    new_cfg = dict(cfg)
    model_type = new_cfg.pop("model_type")
    try:
        return AutoConfig.for_model(model_type, **new_cfg)
    except Exception as e:
        raise GrowlmError(f"grown config is invalid: {e}") from None


def _params(**kw: Any) -> dict[str, Any]:
    return {k: v for k, v in kw.items() if v is not None}


def grow(
    src: str | Path,
    out: str | Path | None,
    op: str,
    *,
    factor: int | None = None,
    layers: str | list[int] | None = None,
    drop: int | None = None,
    num_layers: int | None = None,
    placement: str | None = None,
    block: int | None = None,
    copies: int | None = None,
    hidden_size: int | None = None,
    intermediate_size: int | None = None,
    num_heads: int | None = None,
    num_kv_heads: int | None = None,
    dtype: str | None = None,
    dry_run: bool = False,
    check: bool = False,
    force: bool = False,
    seed: int = 0,
    shard_size: str | int = "2GB",
    steps: int | None = None,
    lr: float | None = None,
    data: str | Path | None = None,
    seq_len: int | None = None,
    batch_size: int | None = None,
    progress: Callable[[int, float], None] | None = None,
) -> dict[str, Any]:
    """Grow the checkpoint folder ``src`` into ``out``; returns the report (see README).

    Learned operators (learn-depth, learn-width) train their maps for ``steps`` steps on
    ``data`` (text file, folder of text files, or a ``growlm data prepare`` folder) in windows of
    ``seq_len`` tokens, ``batch_size`` windows a step; ``progress(step, loss)`` is called after
    every map-training step."""
    from growlm.ops import ligo

    t0 = time.perf_counter()
    params = _params(
        factor=factor,
        layers=layers,
        drop=drop,
        num_layers=num_layers,
        placement=placement,
        block=block,
        copies=copies,
        hidden_size=hidden_size,
        intermediate_size=intermediate_size,
        num_heads=num_heads,
        num_kv_heads=num_kv_heads,
        steps=steps,
        lr=lr,
    )
    if dtype is not None and dtype not in DTYPE_NAMES:
        raise InvalidGrowth(f"--dtype must be one of {', '.join(DTYPE_NAMES)}, got {dtype!r}")
    max_shard = parse_size(shard_size)
    resolved = resolve_model(src)  # a folder, hub id or .gguf file
    source = SourceCheckpoint(resolved.path)
    learned = ligo.parse_learn_op(op)
    learn_data: _LearnData | None = None
    if learned is None:
        for flag, value in (("data", data), ("seq-len", seq_len), ("batch-size", batch_size)):
            if value is not None:
                raise InvalidGrowth(f"--{flag} applies to learn-depth / learn-width only")
        plan = plan_checkpoint(source, op, params, seed)
    else:
        shapes = {n: source.shape(n) for n in source.names}
        settings, plan = ligo.skeleton_plan(source.config, shapes, op, params, seed)
        learn_data = _learn_data(source, settings, data, seq_len, batch_size)
    out_dtype = DTYPE_NAMES[dtype] if dtype else None
    report = _report(source, plan, out_dtype)
    if learned is not None:
        report.update(steps=settings.steps, lr=settings.lr)
    if dry_run:
        report["plan"] = [tp.describe() for tp in plan.tensors]
        if learned is not None:
            report["plan"].append(
                f"learned ({learned.name}): names, shapes and sources as above; values come "
                f"from the learned maps (initially stack, width [I; small random]), trained "
                f"{settings.steps} steps"
            )
        return report
    if out is None:
        raise InvalidGrowth("give an output folder OUT (or --dry-run)")
    out_path = Path(out)
    if out_path.exists() and not force:
        raise OutputExists(f"output {out_path} already exists: choose another path or pass --force")
    if out_path.exists() and not out_path.is_dir():
        raise OutputNotWritable(f"output {out_path} is a file, not a folder: choose another OUT")
    out_path.parent.mkdir(parents=True, exist_ok=True)
    need = report["out_bytes"]
    free = shutil.disk_usage(out_path.parent).free
    if need > free:
        raise DiskFull(
            f"not enough disk for {out_path}: needs {need / 2**30:.2f} GiB, "
            f"{free / 2**30:.2f} GiB free; free space or choose another OUT"
        )
    tensors: dict[str, torch.Tensor] | None = None
    record: dict[str, Any] = {}
    if learn_data is not None:
        tensors, record = _learn_weights(source, op, params, seed, learn_data, progress)
        report.update({k: v for k, v in record.items() if k != "depth_maps"})
    clear_dead_tmp(out_path, _TMP_MARKER)  # left by a grow that was killed
    tmp = out_path.parent / f".{out_path.name}{_TMP_MARKER}{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    try:
        facts = grow_facts(source.path, source.config, report, resolved.hub_id)
        extra = {**resolved.record(), **facts, **record}
        from growlm.train import hf_trainer

        if hf_trainer.is_trainer_checkpoint(source.path):  # a checkpoint-N: AdamW grows too
            cfgs = (source.config, plan.config)
            extra.update(hf_trainer.grow_trainer_state(source.path, *cfgs, op, params, seed, tmp))
        _write(source, plan, tmp, out_dtype, max_shard, tensors, extra, out_path.name)
        fault_point("grow.written")
        replace_dir(tmp, out_path)  # OUT: absent, the old folder or the new one, never half
    except OSError as e:
        shutil.rmtree(tmp, ignore_errors=True)
        if e.errno in (errno.ENOSPC, errno.EDQUOT):
            raise DiskFull(
                f"disk full while writing {out_path}; nothing was left behind: free space and retry"
            ) from None
        raise
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    report["seconds"] = round(time.perf_counter() - t0, 3)
    if check:
        from growlm.check import check_growth

        checked = check_growth(source.path, out_path)
        report.update(checked)
        add_check(out_path, checked)  # into growth.json and the model card
    return report


def _out_items(source: SourceCheckpoint, plan: Plan, out_dtype: torch.dtype | None):
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


def _report(source: SourceCheckpoint, plan: Plan, out_dtype: torch.dtype | None) -> dict[str, Any]:
    src_params = sum(_numel(source.shape(n)) for n in source.names if not n.endswith(BUFFERS))
    items = _out_items(source, plan, out_dtype)
    out_params = sum(_numel(s) for _, s, _ in items)
    return {
        "op": plan.op,
        "params": plan.params,
        "src": str(source.path),
        "src_layers": plan.src_layers,
        "out_layers": plan.out_layers,
        "src_params": src_params,
        "out_params": out_params,
        "out_bytes": sum(nbytes(s, d) for _, s, d in items),
        "function_preserving": plan.function_preserving,
        "layer_map": [
            m["src"] if m["kind"] == "copy" else f"{m['src']}:{m['kind']}" for m in plan.layer_map
        ],
    }


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
    seq = seq_len or LEARN_SEQ_LEN
    positions = source.config.get("max_position_embeddings", source.config.get("n_positions"))
    if isinstance(positions, int) and seq > positions:
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
    from growlm.ops import ligo

    weights = {n: source.get(n) for n in source.names if not n.endswith(BUFFERS)}
    batches = None
    if opts.steps > 0:
        assert opts.data is not None
        vocab = ligo.vocab_rows(source.config, weights)
        # text is tokenized only as far as a generous pool for the steps' windows needs
        pool = max(LEARN_POOL_TOKENS, 4 * opts.steps * opts.batch_size * (opts.seq_len + 1))
        batches = path_batches(
            opts.data, source.path, vocab, opts.seq_len, opts.batch_size, seed, max_tokens=pool
        )
    result = ligo.learn(source.config, weights, op, params, batches, seed=seed, on_step=progress)
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
    record = {k: result.report[k] for k in keep}
    record["depth_maps"] = result.report.get("depth_maps", {})
    if opts.steps > 0:
        record.update(data=str(opts.data), seq_len=opts.seq_len, batch_size=opts.batch_size)
    return result.weights, record


def _write(
    source: SourceCheckpoint,
    plan: Plan,
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
                yield tp.name, plan.run(tp, source.get).to(dtypes[tp.name])

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
    (tmp / "growth.json").write_text(json.dumps(record, indent=2) + "\n")
    write_grow_card(tmp, record, card_name)


def grow_tensors(
    config: Any,
    tensors: dict[str, torch.Tensor],
    op: str,
    params: dict[str, Any],
    fill: Mode = "weights",
    seed: int = 0,
):
    """Grow in memory: returns (new PretrainedConfig, new tensors, report).

    ``fill="exp_avg"`` / ``"exp_avg_sq"`` apply the same mapping to AdamW moments keyed by
    parameter name (rules in ``growlm.ops.plan``).
    """
    from transformers import PretrainedConfig

    from growlm.ops import ligo

    cfg = config.to_dict() if isinstance(config, PretrainedConfig) else dict(config)
    learned = ligo.parse_learn_op(op)
    plan_op, plan_params = op, params
    if learned is not None:
        if fill == "weights":
            # no data here: only 0 steps (or shapes on the meta device); training is learn_grow's
            on_meta = any(t.is_meta for t in tensors.values())
            learn_params = {**params, "steps": 0} if on_meta else params
            return ligo.learn_grow(config, tensors, op, learn_params, seed=seed)
        # moments follow the map the learned growth starts from (stack / random-width)
        plan_op = learned.skeleton
        plan_params = ligo.settings(op, {"steps": 0, **params}).skeleton_params
    plan = _plan(cfg, {n: tuple(t.shape) for n, t in tensors.items()}, plan_op, plan_params, seed)
    new = dict(plan.execute(tensors.__getitem__, mode=fill, clone=True))
    conf = config_object(plan.config)
    report = {
        "op": op,
        "params": dict(params),
        "layer_map": plan.layer_map,
        "src_layers": plan.src_layers,
        "out_layers": plan.out_layers,
        "function_preserving": plan.function_preserving,
    }
    return conf, new, report

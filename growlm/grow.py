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
from pathlib import Path
from typing import Any

import torch

from growlm import __version__
from growlm.arch import BUFFERS, spec_for
from growlm.errors import DiskFull, GrowlmError, InvalidGrowth, OutputExists
from growlm.io.checkpoint import SourceCheckpoint
from growlm.io.safetensors_stream import nbytes, write_sharded
from growlm.ops.plan import Mode, Plan
from growlm.ops.planner import build_plan

DTYPE_NAMES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


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
) -> dict[str, Any]:
    """Grow the checkpoint folder ``src`` into ``out``; returns the report (see README)."""
    t0 = time.perf_counter()
    params = _params(
        factor=factor,
        layers=layers,
        drop=drop,
        num_layers=num_layers,
        placement=placement,
        hidden_size=hidden_size,
        intermediate_size=intermediate_size,
        num_heads=num_heads,
        num_kv_heads=num_kv_heads,
    )
    if dtype is not None and dtype not in DTYPE_NAMES:
        raise InvalidGrowth(f"--dtype must be one of {', '.join(DTYPE_NAMES)}, got {dtype!r}")
    max_shard = parse_size(shard_size)
    source = SourceCheckpoint(src)
    plan = plan_checkpoint(source, op, params, seed)
    out_dtype = DTYPE_NAMES[dtype] if dtype else None
    report = _report(source, plan, out_dtype)
    if dry_run:
        report["plan"] = [tp.describe() for tp in plan.tensors]
        return report
    if out is None:
        raise InvalidGrowth("give an output folder OUT (or --dry-run)")
    out_path = Path(out)
    if out_path.exists() and not force:
        raise OutputExists(f"output {out_path} already exists: choose another path or pass --force")
    out_path.parent.mkdir(parents=True, exist_ok=True)
    need = report["out_bytes"]
    free = shutil.disk_usage(out_path.parent).free
    if need > free:
        raise DiskFull(
            f"not enough disk for {out_path}: needs {need / 2**30:.2f} GiB, "
            f"{free / 2**30:.2f} GiB free; free space or choose another OUT"
        )
    tmp = out_path.parent / f".{out_path.name}.growlm-tmp-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    try:
        _write(source, plan, tmp, out_dtype, max_shard)
        if out_path.exists():
            shutil.rmtree(out_path)
        os.replace(tmp, out_path)
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

        report.update(check_growth(source.path, out_path))
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


def _write(
    source: SourceCheckpoint, plan: Plan, tmp: Path, out_dtype: torch.dtype | None, max_shard: int
) -> None:
    items = _out_items(source, plan, out_dtype)
    dtypes = {name: dt for name, _, dt in items}

    def stream():
        for tp in plan.tensors:
            src_name = tp.source
            raw = source.raw(src_name) if src_name is not None and not tp.steps else None
            if raw is not None and src_name and source.dtype(src_name) == dtypes[tp.name]:
                yield tp.name, raw  # an unchanged copy: bytes go file to file
            else:
                yield tp.name, plan.run(tp, source.get).to(dtypes[tp.name])

    write_sharded(tmp, items, stream(), max_shard)
    cfg = dict(plan.config)
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
    }
    (tmp / "growth.json").write_text(json.dumps(record, indent=2) + "\n")


def grow_tensors(
    config: Any,
    tensors: dict[str, torch.Tensor],
    op: str,
    params: dict[str, Any],
    fill: Mode = "weights",
    seed: int = 0,
):
    """Grow in memory: returns (new PretrainedConfig, new tensors, report).

    ``fill="moments"`` applies the same mapping to optimizer moments keyed by parameter name:
    copied where weights are copied, zero for new units and blocks, never rescaled.
    """
    from transformers import AutoConfig, PretrainedConfig

    cfg = config.to_dict() if isinstance(config, PretrainedConfig) else dict(config)
    plan = _plan(cfg, {n: tuple(t.shape) for n, t in tensors.items()}, op, params, seed)
    new = dict(plan.execute(tensors.__getitem__, mode=fill, clone=True))
    new_cfg = dict(plan.config)
    model_type = new_cfg.pop("model_type")
    try:
        conf = AutoConfig.for_model(model_type, **new_cfg)
    except Exception as e:
        raise GrowlmError(f"grown config is invalid: {e}") from None
    report = {
        "op": op,
        "params": dict(params),
        "layer_map": plan.layer_map,
        "src_layers": plan.src_layers,
        "out_layers": plan.out_layers,
        "function_preserving": plan.function_preserving,
    }
    return conf, new, report

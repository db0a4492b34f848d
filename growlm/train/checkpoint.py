"""Resumable training checkpoints and stage-end Hugging Face exports.

A training checkpoint is a folder ``OUT/checkpoints/step-NNNNNNNN/`` holding::

    model.safetensors      fp32 weights (full, unsharded)
    config.json            the HF config of the model at that step (it changes at growth)
    optimizer.safetensors  AdamW state as "<param name>::<key>" tensors
    rng.safetensors        torch CPU (and CUDA) generator states
    state.json             stage, step, token/FLOP counters, sampler position, Python and
                           NumPy RNG states, the recipe

It is written to a hidden temporary folder, flushed to disk and renamed into place
(``growlm.io.atomic.atomic_dir``, as every growlm output folder), and old
checkpoints are renamed aside before they are deleted, so a run killed at any moment never leaves
a half-written or half-deleted ``step-*`` folder (tests/test_crash_resume.py kills it inside every
one of these steps). A write that fails (disk full) removes its temporary folder and names the
previous checkpoint, which stays resumable. Only safetensors and JSON are read back: no pickle.
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from transformers import GenerationConfig, PretrainedConfig

from growlm.data.tokenizer import copy_tokenizer_files
from growlm.errors import CorruptCheckpoint, InvalidRecipe, one_line, os_error
from growlm.io.atomic import atomic_dir, remove_dir
from growlm.io.diskspace import checkpoint_bytes, require_free
from growlm.io.faults import fault_point
from growlm.train.model import load_config, meta_model, param_count
from growlm.train.moe import hub_layout

CHECKPOINTS = "checkpoints"
_STEP_DIR = re.compile(r"^step-(\d{8})$")
_SEP = "::"


def flatten_optim(state: dict[str, dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """AdamW state per parameter name as one flat safetensors dict (``name::exp_avg``)."""
    return {
        f"{name}{_SEP}{key}": value for name, entry in state.items() for key, value in entry.items()
    }


def unflatten_optim(flat: dict[str, torch.Tensor]) -> dict[str, dict[str, torch.Tensor]]:
    """The inverse of ``flatten_optim``."""
    state: dict[str, dict[str, torch.Tensor]] = {}
    for key, value in flat.items():
        name, _, field = key.rpartition(_SEP)
        state.setdefault(name, {})[field] = value
    return state


@dataclass
class Checkpoint:
    path: Path
    config: PretrainedConfig
    model: dict[str, torch.Tensor]
    optimizer: dict[str, dict[str, torch.Tensor]]
    state: dict[str, Any]
    rng: dict[str, torch.Tensor]


def rng_snapshot() -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Every generator a training step may draw from: tensors for torch, JSON for the rest."""
    tensors = {"torch_cpu": torch.get_rng_state()}
    if torch.cuda.is_available():
        for index, state in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"torch_cuda_{index}"] = state
    kind, keys, pos, has_gauss, gauss = np.random.get_state()  # type: ignore[misc]
    py_version, py_state, py_gauss = random.getstate()
    plain = {
        "python": [py_version, list(py_state), py_gauss],
        "numpy": [kind, np.asarray(keys).tolist(), pos, has_gauss, gauss],
    }
    return tensors, plain


def rng_restore(tensors: dict[str, torch.Tensor], plain: dict[str, Any]) -> None:
    torch.set_rng_state(tensors["torch_cpu"])
    if torch.cuda.is_available():
        # a checkpoint is portable: written on CPU (no CUDA states), resumed on another number
        # of GPUs, or on CPU (CUDA states ignored); restore the states of the GPUs present
        for index in range(torch.cuda.device_count()):
            state = tensors.get(f"torch_cuda_{index}")
            if state is not None:
                torch.cuda.set_rng_state(state, index)
    version, state, gauss = plain["python"]
    random.setstate((version, tuple(state), gauss))
    kind, keys, pos, has_gauss, cached = plain["numpy"]
    np.random.set_state((kind, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))


def save_checkpoint(
    out_dir: Path,
    step: int,
    config: PretrainedConfig,
    model_state: dict[str, torch.Tensor] | None,
    optim_state: dict[str, dict[str, torch.Tensor]] | None,
    run_state: dict[str, Any],
    keep: int,
    shards_from: Path | None = None,
) -> Path:
    """Write checkpoint ``step`` atomically and delete all but the newest ``keep``.

    Sharded (``growlm.train.sharded``): ``model_state`` and ``optim_state`` are None and every
    rank has already written its shard files into ``shards_from``; they are moved into the
    checkpoint before it is renamed into place."""
    root = out_dir / CHECKPOINTS
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"step-{step:08d}"
    previous = list_checkpoints(out_dir)
    stale_globs = (".tmp-step-*", ".tmp-shards-*", ".step-*.old-*")
    for stale in [p for pattern in stale_globs for p in root.glob(pattern)]:
        if shards_from is not None and stale == shards_from:
            continue
        shutil.rmtree(stale, ignore_errors=True)  # left by a run killed while writing
    try:
        with atomic_dir(final, root / f".tmp-step-{step:08d}", durable=True) as tmp:
            fault_point("checkpoint.begin")
            if model_state is not None:
                save_file(_contiguous(model_state), str(tmp / "model.safetensors"))
            fault_point("checkpoint.model")
            config.to_json_file(str(tmp / "config.json"))
            if optim_state is not None:
                optim = _contiguous(flatten_optim(optim_state))
                save_file(optim, str(tmp / "optimizer.safetensors"))
            if shards_from is not None:
                for shard in sorted(shards_from.iterdir()):
                    os.replace(shard, tmp / shard.name)
                shards_from.rmdir()
            fault_point("checkpoint.optimizer")
            rng_tensors, rng_plain = rng_snapshot()
            save_file(_contiguous(rng_tensors), str(tmp / "rng.safetensors"))
            state = {**run_state, "rng": rng_plain}
            (tmp / "state.json").write_text(json.dumps(state, indent=1) + "\n")
            fault_point("checkpoint.state")
    except (OSError, SafetensorError) as exc:
        if shards_from is not None:
            shutil.rmtree(shards_from, ignore_errors=True)
        last = (
            f"the previous checkpoint {previous[-1]} is intact"
            if previous
            else "no earlier checkpoint exists"
        )
        raise os_error(exc, f"checkpoint {final.name} in {str(root)!r}", last, AGAIN) from None
    fault_point("checkpoint.renamed")
    for old in list_checkpoints(out_dir)[:-keep]:
        remove_dir(old)
        fault_point("checkpoint.pruned")
    return final


# how to retry a failed checkpoint or export once the disk or location is fixed
AGAIN = "run the same command again (growlm train: with --resume)"


def require_checkpoint_room(out_dir: Path, config: PretrainedConfig) -> None:
    """DiskFull before training when OUT's disk cannot hold one checkpoint of ``config``'s model
    (fp32 weights and two AdamW moments)."""
    n_params = param_count(meta_model(config))
    require_free(
        out_dir,
        checkpoint_bytes(n_params),
        f"a training checkpoint of the {n_params:,}-parameter model",
        "free space or choose another --out",
    )


def list_checkpoints(out_dir: Path) -> list[Path]:
    """Complete checkpoints, oldest first (temporary folders are ignored)."""
    root = out_dir / CHECKPOINTS
    if not root.is_dir():
        return []
    found = [p for p in root.iterdir() if p.is_dir() and _STEP_DIR.match(p.name)]
    return sorted(found, key=lambda p: p.name)


def load_checkpoint(path: Path) -> Checkpoint:
    """Read a checkpoint folder written by ``save_checkpoint``."""
    try:
        config = load_config(path, "checkpoint")
        state = json.loads((path / "state.json").read_text())
        sharded = isinstance(state, dict) and state.get("sharded") is not None
        # sharded: each rank reads its own shards later (growlm.train.sharded)
        model = {} if sharded else load_file(str(path / "model.safetensors"))
        flat = {} if sharded else load_file(str(path / "optimizer.safetensors"))
        rng = load_file(str(path / "rng.safetensors"))
    except (OSError, ValueError, SafetensorError, InvalidRecipe) as exc:
        raise CorruptCheckpoint(
            f"checkpoint {str(path)!r} cannot be read ({one_line(exc)}); move it out of "
            f"{CHECKPOINTS}/ to resume from the one before"
        ) from None
    return Checkpoint(path, config, model, unflatten_optim(flat), state, rng)


def export_hf(
    folder: Path,
    config: PretrainedConfig,
    model_state: dict[str, torch.Tensor],
    tokenizer_dir: Path,
    card: str | None = None,
) -> Path:
    """Write a loadable HF checkpoint (safetensors, config, generation config, tokenizer and
    the model card ``card``) atomically; an MoE's experts in the hub layout (one tensor per
    expert, as ``grow --op upcycle`` writes them)."""
    try:
        with atomic_dir(folder, folder.parent / f".tmp-{folder.name}", durable=True) as tmp:
            state = hub_layout(config, dict(model_state))
            if getattr(config, "tie_word_embeddings", False):
                state.pop("lm_head.weight", None)
            save_file(_contiguous(state), str(tmp / "model.safetensors"), metadata={"format": "pt"})
            fault_point("export.model")
            config.to_json_file(str(tmp / "config.json"))
            GenerationConfig.from_model_config(config).save_pretrained(str(tmp))
            copy_tokenizer_files(tokenizer_dir, tmp)
            if card is not None:
                (tmp / "README.md").write_text(card, encoding="utf-8")
            fault_point("export.files")
    except (OSError, SafetensorError) as exc:
        kept = "the training checkpoints are intact"
        raise os_error(exc, f"model folder {str(folder)!r}", kept, AGAIN) from None
    fault_point("export.renamed")
    return folder


def _contiguous(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v.detach().contiguous() for k, v in tensors.items()}

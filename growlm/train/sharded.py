"""Sharded training checkpoints (``run.checkpoint_format: sharded``, FSDP2).

Every rank writes its own shards of the weights and of AdamW's moments, with no gather:

    step-NNNNNNNN/
        config.json, state.json, rng.safetensors      (rank 0, as in a full checkpoint)
        model-rank00000-of-00004.safetensors          (each rank: its local shards)
        optimizer-rank00000-of-00004.safetensors

The folder is assembled under a hidden temporary name and renamed by rank 0 once every rank has
written (barriers between), so a kill at any moment leaves no partial ``step-*`` folder. Resume
needs the same number of processes (each rank reads back its own file into its shards); the
stage-end exports are still gathered Hugging Face folders. safetensors and JSON only.
"""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from growlm.errors import CorruptCheckpoint, InvalidRecipe
from growlm.io.faults import fault_point
from growlm.train.checkpoint import flatten_optim, unflatten_optim
from growlm.train.distributed import DistContext, unwrap


def shard_file(kind: str, rank: int, world: int) -> str:
    return f"{kind}-rank{rank:05d}-of-{world:05d}.safetensors"


def _rank_shard(t: torch.Tensor) -> torch.Tensor:
    """This rank's part of a (possibly sharded) tensor, detached on the CPU."""
    from torch.distributed.tensor import DTensor

    if isinstance(t, DTensor):
        t = t.to_local()
    return t.detach().to("cpu").contiguous()


def write_local_shards(
    folder: Path, model: nn.Module, optimizer: torch.optim.Optimizer, ctx: DistContext
) -> None:
    """This rank's shards of every parameter and of its AdamW state into ``folder``."""
    params = dict(unwrap(model).named_parameters())
    weights = {name: _rank_shard(p) for name, p in params.items()}
    names = {id(p): n for n, p in params.items()}
    optim = {
        names[id(param)]: {key: _rank_shard(v) for key, v in optimizer.state.get(param, {}).items()}
        for group in optimizer.param_groups
        for param in group["params"]
    }
    save_file(weights, str(folder / shard_file("model", ctx.rank, ctx.world_size)))
    fault_point("checkpoint.shards")
    save_file(flatten_optim(optim), str(folder / shard_file("optimizer", ctx.rank, ctx.world_size)))


def read_local_shards(
    folder: Path, ctx: DistContext, saved_world: int
) -> tuple[dict[str, torch.Tensor], dict[str, dict[str, torch.Tensor]]]:
    """This rank's (weights, AdamW state) shards of a sharded checkpoint."""
    if saved_world != ctx.world_size:
        raise InvalidRecipe(
            f"checkpoint {str(folder)!r} is sharded over {saved_world} processes but this run "
            f"has {ctx.world_size}: resume with --nproc_per_node giving {saved_world} processes "
            "in total, or resume from a full checkpoint (run.checkpoint_format: full)"
        )
    try:
        weights = load_file(str(folder / shard_file("model", ctx.rank, ctx.world_size)))
        flat = load_file(str(folder / shard_file("optimizer", ctx.rank, ctx.world_size)))
    except (OSError, ValueError) as exc:
        raise CorruptCheckpoint(
            f"checkpoint {str(folder)!r}: rank {ctx.rank}'s shards cannot be read: {exc}"
        ) from None
    return weights, unflatten_optim(flat)


@torch.no_grad()
def install_local_weights(model: nn.Module, weights: dict[str, torch.Tensor]) -> None:
    """Copy saved local shards into the (already sharded) parameters."""
    from torch.distributed.tensor import DTensor

    for name, param in unwrap(model).named_parameters():
        if name not in weights:
            raise CorruptCheckpoint(f"sharded checkpoint has no shard of {name}")
        local = param.to_local() if isinstance(param, DTensor) else param
        if tuple(local.shape) != tuple(weights[name].shape):
            raise CorruptCheckpoint(
                f"shard of {name} has shape {tuple(weights[name].shape)}, this rank holds "
                f"{tuple(local.shape)}: the checkpoint was sharded differently"
            )
        local.copy_(weights[name])

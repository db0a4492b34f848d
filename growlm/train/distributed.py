"""Everything that differs between one process and ``torchrun``: process group, device, model
wrapping (DDP or FSDP2), collectives, and gathering full (unsharded) state on every rank.

The training loop only calls these functions; with one process they are cheap no-ops.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from growlm.errors import InvalidRecipe, PeerFailed


@dataclass
class DistContext:
    """Who this process is: rank, world size and the device it trains on."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    parallel: str = "ddp"
    launched: bool = False  # started by torchrun (or another launcher that sets its env vars)

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def fsdp(self) -> bool:
        """FSDP2 wraps the model: ``run.parallel: fsdp`` under torchrun, one process included
        (``--nproc_per_node 1`` runs the sharded code path on one GPU)."""
        return self.parallel == "fsdp" and (self.distributed or self.launched)


def init(device: str, parallel: str) -> DistContext:
    """Join the torchrun process group if launched under one (gloo on CPU, NCCL on CUDA).
    ``device`` is ``run.device``: cpu, cuda, or auto (CUDA when torch sees a GPU)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    launched = "WORLD_SIZE" in os.environ and "MASTER_ADDR" in os.environ
    use_cuda = device == "cuda" or (device == "auto" and torch.cuda.is_available())
    if device == "cuda" and not torch.cuda.is_available():
        raise InvalidRecipe("run.device: cuda requested but torch sees no GPU")
    if use_cuda:
        torch.cuda.set_device(local_rank)
        dev = torch.device("cuda", local_rank)
    else:
        dev = torch.device("cpu")
    # FSDP2 needs a process group (a device mesh) even for a single launched process
    grouped = world > 1 or (launched and parallel == "fsdp")
    if grouped and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if use_cuda else "gloo")
    return DistContext(rank, world, local_rank, dev, parallel, launched)


def shutdown(ctx: DistContext) -> None:
    if ctx.distributed and dist.is_initialized():
        dist.destroy_process_group()


def barrier(ctx: DistContext) -> None:
    if ctx.distributed:
        dist.barrier()


@contextlib.contextmanager
def all_or_none(ctx: DistContext, what: str) -> Iterator[None]:
    """Run the block on every rank, then agree on the outcome: if it raised on any rank, every
    rank raises (the failing ones their own error, the others ``PeerFailed`` naming them),
    instead of the others waiting forever at the next collective. Ends with a collective, so it
    also serves as the barrier after a write."""
    error: Exception | None = None
    try:
        yield
    except Exception as exc:  # re-raised below, after the other ranks have heard of it
        error = exc
    if ctx.distributed:
        flags = torch.zeros(ctx.world_size, device=ctx.device)
        flags[ctx.rank] = float(error is not None)
        try:
            dist.all_reduce(flags, op=dist.ReduceOp.SUM)
        except Exception:  # a peer died mid-collective: this rank's own error says more
            if error is not None:
                raise error from None
            raise
        failed = [rank for rank, flag in enumerate(flags.tolist()) if flag]
    else:
        failed = [0] if error is not None else []
    if error is not None:
        raise error
    if failed:
        ranks = ", ".join(str(r) for r in failed)
        raise PeerFailed(
            f"{what} failed on rank {ranks} (its error is in its log); every rank stopped: fix "
            "that, then run the same command with --resume"
        )


def broadcast_object(ctx: DistContext, value: Any) -> Any:
    """Rank 0's ``value`` on every rank (e.g. a path or an error message)."""
    if not ctx.distributed:
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def all_reduce_sum(ctx: DistContext, values: torch.Tensor) -> torch.Tensor:
    if ctx.distributed:
        values = values.clone()
        dist.all_reduce(values, op=dist.ReduceOp.SUM)
    return values


def wrap(model: nn.Module, ctx: DistContext) -> nn.Module:
    """DDP or FSDP2 (each transformer block sharded, then the root) under torchrun."""
    if not ctx.distributed and not ctx.fsdp:
        return model
    if not ctx.fsdp:
        from torch.nn.parallel import DistributedDataParallel

        ids = [ctx.local_rank] if ctx.device.type == "cuda" else None
        return DistributedDataParallel(model, device_ids=ids)
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard

    mesh = init_device_mesh(ctx.device.type, (ctx.world_size,))
    for block in _blocks(model):
        fully_shard(block, mesh=mesh)
    fully_shard(model, mesh=mesh)
    return model


def _blocks(model: nn.Module) -> list[nn.Module]:
    """The transformer blocks: children of the model's largest ModuleList."""
    blocks: list[nn.Module] = []
    for module in model.modules():
        if isinstance(module, nn.ModuleList) and len(module) > len(blocks):
            blocks = list(module)
    return blocks


def reshard(model: nn.Module) -> None:
    """Return FSDP2 parameters to their sharded form (the root stays unsharded after a
    forward pass with no backward, e.g. evaluation) so parameter objects match the optimizer's."""
    fsdp_reshard = getattr(model, "reshard", None)
    if callable(fsdp_reshard):
        for module in model.modules():
            method = getattr(module, "reshard", None)
            if callable(method) and type(module).__name__.startswith("FSDP"):
                method()


def unwrap(model: nn.Module) -> nn.Module:
    """The HF module under a DDP wrapper (FSDP2 shards in place, nothing to unwrap)."""
    inner = getattr(model, "module", None)
    return inner if isinstance(inner, nn.Module) else model


def set_grad_sync(model: nn.Module, ctx: DistContext, enabled: bool) -> Any:
    """Skip gradient reduction on all but the last accumulation micro-batch; returns a context
    manager for DDP and applies the setting directly for FSDP2."""
    from contextlib import nullcontext

    if not ctx.distributed and not ctx.fsdp:
        return nullcontext()
    if not ctx.fsdp:
        return nullcontext() if enabled else model.no_sync()  # type: ignore[operator]
    model.set_requires_gradient_sync(enabled)  # type: ignore[operator]
    return nullcontext()


def _full(t: torch.Tensor) -> torch.Tensor:
    from torch.distributed.tensor import DTensor

    if isinstance(t, DTensor):
        t = t.full_tensor()
    return t.detach().to("cpu", copy=True)


def full_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """Unsharded float weights on CPU, on every rank, keyed like the HF state dict.
    Tied tensors appear under each of their names."""
    module = unwrap(model)
    return {name: _full(t) for name, t in module.state_dict().items()}


def full_optim_state(
    model: nn.Module, optimizer: torch.optim.Optimizer
) -> dict[str, dict[str, Any]]:
    """AdamW state per parameter name, unsharded on CPU: {name: {step, exp_avg, exp_avg_sq}}."""
    names = {id(p): n for n, p in unwrap(model).named_parameters()}
    out: dict[str, dict[str, Any]] = {}
    for group in optimizer.param_groups:
        for param in group["params"]:
            state = optimizer.state.get(param)
            if state:
                out[names[id(param)]] = {k: _full(v) for k, v in state.items()}
    return out


def load_optim_state(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    state: dict[str, dict[str, Any]],
    local: bool = False,
) -> None:
    """Install per-name AdamW state into ``optimizer``: whole tensors (as returned by
    ``full_optim_state``), sharded like their parameters under FSDP2, or with ``local`` this
    rank's own shards (a sharded checkpoint), laid out like their parameters as they are."""
    from torch.distributed.tensor import DTensor, distribute_tensor

    params = dict(unwrap(model).named_parameters())
    fused = bool(optimizer.defaults.get("fused"))
    for name, entry in state.items():
        if name not in params or not params[name].requires_grad:
            continue  # frozen (MSLT): no optimizer state
        param = params[name]
        installed: dict[str, Any] = {}
        for key, value in entry.items():
            if key == "step":
                device = param.device if fused else torch.device("cpu")  # fused: on-device
                installed[key] = value.detach().to(device, torch.float32, copy=True)
            elif isinstance(param, DTensor) and local:
                installed[key] = DTensor.from_local(
                    value.to(param.device, param.dtype),
                    param.device_mesh,
                    param.placements,
                    run_check=False,
                    shape=param.shape,
                    stride=param.stride(),
                )
            elif isinstance(param, DTensor):
                installed[key] = distribute_tensor(
                    value.to(param.device_mesh.device_type), param.device_mesh, param.placements
                )
            else:
                installed[key] = value.to(param.device, param.dtype, copy=True)
        optimizer.state[param] = installed

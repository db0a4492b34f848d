"""Deterministic, resumable sampling of fixed-length training windows.

The training split is cut into non-overlapping windows of ``seq_len + 1`` tokens (inputs and
shifted targets). Each epoch visits every window once in an order drawn from
``numpy.random.PCG64([seed, epoch])``; the sampler's whole state is ``(epoch, cursor)``, so a run
resumed from a checkpoint draws exactly the windows the uninterrupted run would have drawn, and
changing the batch size between stages only changes how the same stream is cut into batches.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from growlm.errors import InvalidData


class TokenWindows:
    """Random access to the ``seq_len + 1``-token windows of a list of shards."""

    def __init__(self, shards: list[np.ndarray], seq_len: int, split: str = "train"):
        self.shards = shards
        self.seq_len = seq_len
        counts = np.asarray([max(0, (len(a) - 1) // seq_len) for a in shards], dtype=np.int64)
        self._ends = np.cumsum(counts)
        self.count = int(self._ends[-1]) if len(counts) else 0
        if self.count == 0:
            total = int(sum(len(a) for a in shards))
            raise InvalidData(
                f"the {split} split has {total} tokens, too few for one window of "
                f"seq_len {seq_len} + 1"
            )

    def batch(self, indices: np.ndarray) -> torch.Tensor:
        """Windows ``indices`` as int64 tensor [len(indices), seq_len + 1]."""
        shard_ids = np.searchsorted(self._ends, indices, side="right")
        out = np.empty((len(indices), self.seq_len + 1), dtype=np.int64)
        for row, (index, shard) in enumerate(zip(indices, shard_ids, strict=True)):
            local = int(index) - (int(self._ends[shard - 1]) if shard else 0)
            start = local * self.seq_len
            out[row] = self.shards[shard][start : start + self.seq_len + 1]
        return torch.from_numpy(out)


@dataclass
class SamplerState:
    epoch: int = 0
    cursor: int = 0


class WindowSampler:
    """An endless stream of window indices: epoch after epoch, each a seeded permutation."""

    def __init__(self, count: int, seed: int, state: SamplerState | None = None):
        self.count, self.seed = count, seed
        self.state = state or SamplerState()
        self._order_epoch = -1
        self._order = np.empty(0, dtype=np.int64)

    def _order_for(self, epoch: int) -> np.ndarray:
        if epoch != self._order_epoch:
            rng = np.random.Generator(np.random.PCG64([self.seed, epoch]))
            self._order = rng.permutation(self.count)
            self._order_epoch = epoch
        return self._order

    def take(self, n: int) -> np.ndarray:
        """The next ``n`` window indices, advancing the state."""
        out = np.empty(n, dtype=np.int64)
        filled = 0
        while filled < n:
            order = self._order_for(self.state.epoch)
            step = min(n - filled, self.count - self.state.cursor)
            out[filled : filled + step] = order[self.state.cursor : self.state.cursor + step]
            filled += step
            self.state.cursor += step
            if self.state.cursor == self.count:
                self.state = SamplerState(epoch=self.state.epoch + 1, cursor=0)
        return out

    def state_dict(self) -> dict[str, int]:
        return {"epoch": self.state.epoch, "cursor": self.state.cursor, "seed": self.seed}

    def load_state_dict(self, state: dict[str, int]) -> None:
        if int(state["seed"]) != self.seed:
            raise InvalidData("checkpoint was written with a different data seed")
        self.state = SamplerState(epoch=int(state["epoch"]), cursor=int(state["cursor"]))

"""The training run's view of its data: prepared once (rank 0, cached), then opened by every
rank as train windows, fixed validation windows and the tokenizer folder."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from growlm.data.prepare import PrepareOptions, prepare_cached
from growlm.data.sampler import TokenWindows
from growlm.data.shards import TokenShards, open_shards
from growlm.errors import GrowlmError, InvalidData
from growlm.train import distributed
from growlm.train.distributed import DistContext
from growlm.train.recipe import DataConfig


@dataclass
class TrainData:
    shards: TokenShards
    train: TokenWindows
    val: TokenWindows | None

    @property
    def tokenizer_dir(self) -> Path:
        return self.shards.tokenizer_dir

    @property
    def vocab_size(self) -> int:
        return self.shards.vocab_size

    @property
    def eos_id(self) -> int:
        return int(self.shards.manifest["eos_id"])


def prepared_folder(data: DataConfig) -> Path:
    """The prepared folder of the recipe's data, preparing it into the cache if needed."""
    if data.prepared:
        return Path(data.prepared)
    options = PrepareOptions.named_in(data)
    return prepare_cached(options, progress=True)


def open_training_data(data: DataConfig, ctx: DistContext) -> TrainData:
    """Rank 0 prepares (others wait and get its answer, error included), then all open."""
    result: str | tuple[str, str]
    if ctx.is_main:
        try:
            result = str(prepared_folder(data))
        except GrowlmError as exc:
            result = (type(exc).__name__, str(exc))
    else:
        result = ""
    result = distributed.broadcast_object(ctx, result)
    if isinstance(result, tuple):
        raise InvalidData(result[1])
    shards = open_shards(result)
    train = TokenWindows(shards.splits["train"], data.seq_len, "train")
    val = TokenWindows(shards.splits["val"], data.seq_len, "val") if shards.splits["val"] else None
    return TrainData(shards=shards, train=train, val=val)

"""Data pipeline: corpus sources, tokenizer training, token shards and a resumable sampler.

The sampler's names are imported on first use, so preparing data does not pay for torch."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from growlm.data.prepare import PrepareOptions, prepare, prepare_cached
from growlm.data.shards import TokenShards, open_shards
from growlm.data.tokenizer import CorpusTokenizer, load_tokenizer, train_tokenizer

if TYPE_CHECKING:
    from growlm.data.sampler import SamplerState, TokenWindows, WindowSampler

_SAMPLER = ("SamplerState", "TokenWindows", "WindowSampler")

__all__ = [
    "CorpusTokenizer",
    "PrepareOptions",
    "SamplerState",
    "TokenShards",
    "TokenWindows",
    "WindowSampler",
    "load_tokenizer",
    "open_shards",
    "prepare",
    "prepare_cached",
    "train_tokenizer",
]


def __getattr__(name: str) -> Any:
    if name in _SAMPLER:
        from growlm.data import sampler

        return getattr(sampler, name)
    raise AttributeError(f"module 'growlm.data' has no attribute {name!r}")

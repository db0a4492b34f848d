"""Data pipeline: corpus sources, tokenizer training, token shards and a resumable sampler."""

from __future__ import annotations

from growlm.data.prepare import PrepareOptions, prepare, prepare_cached
from growlm.data.sampler import SamplerState, TokenWindows, WindowSampler
from growlm.data.shards import TokenShards, open_shards
from growlm.data.tokenizer import CorpusTokenizer, load_tokenizer, train_tokenizer

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

"""Data pipeline: corpus sources, tokenizer training, token shards and a resumable sampler.

Every name is imported on first use: preparing data does not pay for torch, and the CLI's
``--help`` pays for neither tokenizers nor numpy."""

from __future__ import annotations

import sys
import types
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from growlm.data.prepare import PrepareOptions, prepare, prepare_cached
    from growlm.data.sampler import SamplerState, TokenWindows, WindowSampler
    from growlm.data.shards import TokenShards, open_shards
    from growlm.data.tokenizer import CorpusTokenizer, load_tokenizer, train_tokenizer

_WHERE = {
    "PrepareOptions": "prepare",
    "prepare": "prepare",
    "prepare_cached": "prepare",
    "SamplerState": "sampler",
    "TokenWindows": "sampler",
    "WindowSampler": "sampler",
    "TokenShards": "shards",
    "open_shards": "shards",
    "CorpusTokenizer": "tokenizer",
    "load_tokenizer": "tokenizer",
    "train_tokenizer": "tokenizer",
}

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
    if name in _WHERE:
        import importlib

        return getattr(importlib.import_module(f"growlm.data.{_WHERE[name]}"), name)
    raise AttributeError(f"module 'growlm.data' has no attribute {name!r}")


class _Package(types.ModuleType):
    """Keeps ``growlm.data.prepare`` the function: importing the submodule of the same name
    would otherwise bind the package attribute to the module."""

    def __setattr__(self, name: str, value: Any) -> None:
        if name in _WHERE and isinstance(value, types.ModuleType):
            return
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package

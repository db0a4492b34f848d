"""A Hugging Face checkpoint folder as growlm reads it: config, weights (streamed), side files."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import torch

from growlm.errors import CorruptCheckpoint, NotACausalLM
from growlm.io.hf_config import ConfigJsonError, not_causal_lm, read_config_json
from growlm.io.safetensors_stream import RawBytes, SafetensorsFile

SIDE_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "tokenizer.model",
    "vocab.json",
    "merges.txt",
    "added_tokens.json",
    "chat_template.jinja",
    "chat_template.json",
    "generation_config.json",
)


class SourceCheckpoint:
    """Config and weights of a local checkpoint folder; ``get`` reads one tensor at a time.

    safetensors (single or sharded) are read with ``pread``; ``.bin`` files only through
    ``torch.load(weights_only=True)`` (never a full unpickle of a user file).
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)
        if not self.path.exists():
            raise NotACausalLM(f"source {self.path} does not exist: give a checkpoint folder")
        if not self.path.is_dir():
            raise NotACausalLM(f"source {self.path} is not a folder: give a checkpoint folder")
        try:
            self.config: dict[str, Any] = read_config_json(self.path)
        except ConfigJsonError as e:
            if e.missing:
                raise NotACausalLM(
                    f"{self.path} has no config.json: not a Hugging Face model folder"
                ) from None
            raise CorruptCheckpoint(str(e)) from None
        arch = not_causal_lm(self.config)
        if arch is not None:
            raise NotACausalLM(
                f"{self.path} holds a {arch}, not a causal language model "
                f"(growlm grows *ForCausalLM / *LMHeadModel checkpoints)"
            )
        self._files: dict[str, SafetensorsFile] = {}
        self._where: dict[str, str] = {}
        self._bin: dict[str, dict[str, torch.Tensor]] = {}
        self._find_weights()
        self._check_side_files()

    # -- weights ---------------------------------------------------------------------------
    def _find_weights(self) -> None:
        p = self.path
        st_index, st_single = p / "model.safetensors.index.json", p / "model.safetensors"
        bin_index, bin_single = p / "pytorch_model.bin.index.json", p / "pytorch_model.bin"
        if st_index.is_file():
            self._from_index(st_index, self._open_st)
        elif st_single.is_file():
            self._open_st("model.safetensors")
        elif bin_index.is_file():
            self._from_index(bin_index, self._note_bin)
        elif bin_single.is_file():
            self._note_bin("pytorch_model.bin")
        else:
            raise NotACausalLM(
                f"{p} has no weights (model.safetensors, its index, or pytorch_model.bin)"
            )
        if not self._where:
            raise CorruptCheckpoint(f"{p} holds no tensors")

    def _from_index(self, index: Path, open_file) -> None:
        try:
            weight_map = json.loads(index.read_text())["weight_map"]
            files = sorted(set(weight_map.values()))
        except (json.JSONDecodeError, KeyError, TypeError, AttributeError):
            raise CorruptCheckpoint(f"{index} is not a valid weight index") from None
        for fname in files:
            if "/" in fname or "\\" in fname or fname.startswith(".."):
                raise CorruptCheckpoint(f"{index} names a file outside the folder: {fname!r}")
            open_file(fname)
        missing = [n for n, f in weight_map.items() if self._where.get(n) != f]
        if missing:
            raise CorruptCheckpoint(
                f"{index} lists {missing[0]!r} in {weight_map[missing[0]]} but that shard lacks it"
            )

    def _open_st(self, fname: str) -> None:
        path = self.path / fname
        if not path.is_file():
            raise CorruptCheckpoint(
                f"shard {fname} listed in the index is missing from {self.path}"
            )
        f = SafetensorsFile(path)
        self._files[fname] = f
        for name in f.entries:
            self._where[name] = fname

    def _note_bin(self, fname: str) -> None:
        path = self.path / fname
        if not path.is_file():
            raise CorruptCheckpoint(
                f"shard {fname} listed in the index is missing from {self.path}"
            )
        try:
            sd = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except Exception as e:  # torch raises many types for bad/unsafe pickles
            unsafe = "weights_only" in str(e) or "Unsupported global" in str(e)
            reason = (
                "it holds Python objects besides tensors, and growlm never unpickles them; "
                "convert it to safetensors with a tool you trust"
                if unsafe
                else str(e).splitlines()[0][:200]
            )
            raise CorruptCheckpoint(f"cannot load {path} safely (weights_only): {reason}") from None
        if not isinstance(sd, dict):
            raise CorruptCheckpoint(f"{path} does not hold a state dict")
        self._bin[fname] = sd
        for name in sd:
            self._where[name] = fname

    @property
    def names(self) -> list[str]:
        return list(self._where)

    def shape(self, name: str) -> tuple[int, ...]:
        fname = self._where[name]
        if fname in self._files:
            return self._files[fname].entries[name].shape
        return tuple(self._bin[fname][name].shape)

    def dtype(self, name: str) -> torch.dtype:
        fname = self._where[name]
        if fname in self._files:
            return self._files[fname].entries[name].dtype
        return self._bin[fname][name].dtype

    def get(self, name: str) -> torch.Tensor:
        fname = self._where[name]
        if fname in self._files:
            return self._files[fname].read(name)
        return self._bin[fname][name].clone()

    def raw(self, name: str) -> RawBytes | None:
        """Where a safetensors tensor's bytes lie (None for .bin sources)."""
        fname = self._where[name]
        if fname not in self._files:
            return None
        entry = self._files[fname].entries[name]
        return RawBytes(self._files[fname].path, entry.begin, entry.end)

    def total_bytes(self) -> int:
        return sum(f.path.stat().st_size for f in self._files.values()) + sum(
            (self.path / f).stat().st_size for f in self._bin
        )

    # -- side files ------------------------------------------------------------------------
    def _check_side_files(self) -> None:
        """The JSON side files (tokenizer, generation config) parse: a corrupt one fails here,
        before anything is written, instead of being copied into the output."""
        for fname in SIDE_FILES:
            path = self.path / fname
            if not fname.endswith(".json") or not path.is_file():
                continue
            try:
                value = json.loads(path.read_text(encoding="utf-8"))
            except (json.JSONDecodeError, UnicodeDecodeError) as e:
                reason = e.msg if isinstance(e, json.JSONDecodeError) else "not UTF-8"
                raise CorruptCheckpoint(
                    f"{path} is not valid JSON ({reason}): restore it from the original "
                    "model or delete it"
                ) from None
            if not isinstance(value, dict) and fname != "added_tokens.json":
                raise CorruptCheckpoint(
                    f"{path} does not hold a JSON object: restore it from the original model "
                    "or delete it"
                )
        tokenizer = self.path / "tokenizer.json"
        if tokenizer.is_file():
            from tokenizers import Tokenizer

            try:
                Tokenizer.from_file(str(tokenizer))
            except Exception as e:  # the Rust library raises a bare Exception for a bad file
                raise CorruptCheckpoint(
                    f"{tokenizer} is not a valid tokenizer ({str(e).splitlines()[0][:200]}): "
                    "restore it from the original model or delete it"
                ) from None

    def copy_side_files(self, out: Path) -> list[str]:
        copied = []
        for fname in SIDE_FILES:
            src = self.path / fname
            if src.is_file():
                shutil.copyfile(src, out / fname)
                copied.append(fname)
        return copied

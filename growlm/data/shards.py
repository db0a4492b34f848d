"""Token shards: flat binary files of token ids (uint16 when the vocabulary fits, else uint32),
read back as numpy memmaps, plus a manifest.json with token counts and content hashes.

Layout of a prepared folder::

    manifest.json          counts, dtype, EOS id, source and shard hashes
    tokenizer/             HF tokenizer folder (tokenizer.json + tokenizer_config.json)
    train-00000.bin ...    training tokens, documents separated by EOS
    val-00000.bin ...      held-out tokens
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from growlm.errors import InvalidData

FORMAT = "growlm-tokens/1"
MANIFEST = "manifest.json"
SPLITS = ("train", "val")


def dtype_for_vocab(vocab_size: int) -> np.dtype[Any]:
    """The smallest unsigned dtype that holds every token id."""
    return np.dtype(np.uint16) if vocab_size <= 1 << 16 else np.dtype(np.uint32)


@dataclass
class ShardRecord:
    file: str
    tokens: int
    sha256: str


@dataclass
class SplitWriter:
    """Appends token arrays to ``<split>-NNNNN.bin`` files, starting a new file every
    ``shard_tokens`` tokens, hashing bytes as they are written."""

    folder: Path
    split: str
    dtype: np.dtype[Any]
    shard_tokens: int
    records: list[ShardRecord] = field(default_factory=list)
    _handle: Any = None
    _digest: Any = None
    _count: int = 0

    def write(self, tokens: np.ndarray) -> None:
        start = 0
        while start < len(tokens):
            if self._handle is None:
                self._open()
            room = self.shard_tokens - self._count
            chunk = tokens[start : start + room].astype(self.dtype, copy=False)
            data = chunk.tobytes()
            self._handle.write(data)
            self._digest.update(data)
            self._count += len(chunk)
            start += len(chunk)
            if self._count >= self.shard_tokens:
                self._close()

    def finish(self) -> list[ShardRecord]:
        if self._handle is not None:
            self._close()
        return self.records

    def _open(self) -> None:
        name = f"{self.split}-{len(self.records):05d}.bin"
        self._handle = (self.folder / name).open("wb")
        self._digest = hashlib.sha256()
        self._count = 0
        self.records.append(ShardRecord(file=name, tokens=0, sha256=""))

    def _close(self) -> None:
        self._handle.close()
        record = self.records[-1]
        record.tokens = self._count
        record.sha256 = self._digest.hexdigest()
        self._handle = None


class BlockRouter:
    """Cuts the document stream into fixed blocks and sends every ``val_every``-th block to the
    validation split, so held-out text is spread evenly through the corpus (a corpus of a few
    long documents still gets a representative validation set)."""

    def __init__(self, train: SplitWriter, val: SplitWriter, block_tokens: int, val_every: int):
        self.train, self.val = train, val
        self.block_tokens, self.val_every = block_tokens, val_every
        self._buffer: list[np.ndarray] = []
        self._buffered = 0
        self._block_index = 0

    def add(self, tokens: np.ndarray) -> None:
        """Append tokens to the stream; every completed block is routed (each token is copied
        at most once, whatever the length of ``tokens``)."""
        start = 0
        if self._buffered + len(tokens) < self.block_tokens:
            if len(tokens):
                self._buffer.append(tokens)
                self._buffered += len(tokens)
            return
        if self._buffered:
            start = self.block_tokens - self._buffered
            self._route(np.concatenate([*self._buffer, tokens[:start]]))
            self._buffer, self._buffered = [], 0
        while len(tokens) - start >= self.block_tokens:
            self._route(tokens[start : start + self.block_tokens])
            start += self.block_tokens
        if start < len(tokens):
            self._buffer, self._buffered = [tokens[start:]], len(tokens) - start

    def finish(self) -> None:
        if self._buffered:
            self.train.write(np.concatenate(self._buffer))
        self._buffer, self._buffered = [], 0

    def _route(self, block: np.ndarray) -> None:
        to_val = self.val_every > 0 and self._block_index % self.val_every == self.val_every - 1
        (self.val if to_val else self.train).write(block)
        self._block_index += 1


@dataclass
class TokenShards:
    """A prepared folder opened for reading: memmaps per split and the manifest."""

    folder: Path
    manifest: dict[str, Any]
    splits: dict[str, list[np.ndarray]]

    @property
    def tokenizer_dir(self) -> Path:
        return self.folder / str(self.manifest["tokenizer"])

    @property
    def vocab_size(self) -> int:
        return int(self.manifest["vocab_size"])

    def tokens(self, split: str) -> int:
        return int(sum(len(a) for a in self.splits[split]))


def write_manifest(folder: Path, manifest: dict[str, Any]) -> None:
    (folder / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")


def open_shards(folder: Path | str, verify_hashes: bool = False) -> TokenShards:
    """Open a prepared folder; sizes are always checked, content hashes on request."""
    root = Path(folder).expanduser()
    manifest_file = root / MANIFEST
    if not manifest_file.is_file():
        raise InvalidData(
            f"{str(root)!r} is not a prepared data folder (no {MANIFEST}); "
            "run `growlm data prepare` first"
        )
    try:
        manifest = json.loads(manifest_file.read_text())
    except json.JSONDecodeError as exc:
        raise InvalidData(f"{manifest_file}: not valid JSON ({exc.msg})") from None
    if manifest.get("format") != FORMAT:
        raise InvalidData(f"{manifest_file}: unknown format {manifest.get('format')!r}")
    dtype = np.dtype(manifest["dtype"])
    splits: dict[str, list[np.ndarray]] = {}
    for split in SPLITS:
        arrays = []
        for record in manifest["splits"][split]["shards"]:
            arrays.append(_open_shard(root, record, dtype, verify_hashes))
        splits[split] = arrays
    return TokenShards(folder=root, manifest=manifest, splits=splits)


def _open_shard(
    root: Path, record: dict[str, Any], dtype: np.dtype[Any], verify: bool
) -> np.ndarray:
    path = root / record["file"]
    expected = int(record["tokens"]) * dtype.itemsize
    if not path.is_file() or path.stat().st_size != expected:
        raise InvalidData(
            f"token shard {str(path)!r} is missing or truncated "
            f"(expected {expected} bytes); prepare the data again"
        )
    if verify:
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        if digest != record["sha256"]:
            raise InvalidData(f"token shard {str(path)!r} does not match its manifest hash")
    return np.memmap(path, dtype=dtype, mode="r")

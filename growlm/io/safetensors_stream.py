"""Read and write safetensors one tensor at a time.

The format is an 8-byte little-endian header length, a JSON header mapping each tensor name to
dtype, shape and byte offsets, then the raw bytes. Reading with ``pread`` touches only the bytes
of the tensor asked for; writing streams tensors in plan order into headers computed up front
from the plan's shapes, so memory stays at about one tensor whatever the model size.
"""

from __future__ import annotations

import errno
import json
import os
import struct
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import torch

from growlm.errors import CorruptCheckpoint
from growlm.io.faults import fault_point

DTYPES: dict[str, torch.dtype] = {
    "F64": torch.float64,
    "F32": torch.float32,
    "F16": torch.float16,
    "BF16": torch.bfloat16,
    "I64": torch.int64,
    "I32": torch.int32,
    "I16": torch.int16,
    "I8": torch.int8,
    "U8": torch.uint8,
    "BOOL": torch.bool,
}
NAMES = {v: k for k, v in DTYPES.items()}
MAX_HEADER = 100 * 1024 * 1024


@dataclass(frozen=True)
class RawBytes:
    """A tensor's bytes left where they are: copied file to file (``copy_file_range``)."""

    path: Path
    begin: int
    end: int


@dataclass(frozen=True)
class Entry:
    dtype: torch.dtype
    shape: tuple[int, ...]
    begin: int  # absolute file offset
    end: int


def nbytes(shape: Iterable[int], dtype: torch.dtype) -> int:
    n = 1
    for s in shape:
        n *= s
    return n * torch.empty((), dtype=dtype).element_size()


class SafetensorsFile:
    """Header of one .safetensors file, validated against the file size; tensors read lazily."""

    def __init__(self, path: Path):
        self.path = path
        try:
            size = path.stat().st_size
            with open(path, "rb") as f:
                raw = f.read(8)
                if len(raw) < 8:
                    raise CorruptCheckpoint(f"{path} is truncated (no safetensors header)")
                (hlen,) = struct.unpack("<Q", raw)
                if hlen > MAX_HEADER or 8 + hlen > size:
                    raise CorruptCheckpoint(f"{path} is truncated or not a safetensors file")
                header = json.loads(f.read(hlen))
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise CorruptCheckpoint(f"{path} has a corrupt safetensors header") from None
        except OSError as e:
            raise CorruptCheckpoint(f"cannot read {path}: {e.strerror}") from None
        if not isinstance(header, dict):
            raise CorruptCheckpoint(f"{path} has a corrupt safetensors header")
        base = 8 + hlen
        self.entries: dict[str, Entry] = {}
        for name, info in header.items():
            if name == "__metadata__":
                continue
            try:
                dtype = DTYPES[info["dtype"]]
                shape = tuple(int(s) for s in info["shape"])
                begin, end = (int(x) for x in info["data_offsets"])
            except (KeyError, TypeError, ValueError):
                raise CorruptCheckpoint(f"{path}: bad header entry for {name!r}") from None
            if end - begin != nbytes(shape, dtype) or base + end > size:
                raise CorruptCheckpoint(
                    f"{path} is truncated or corrupt: tensor {name!r} lies past the end of the file"
                )
            self.entries[name] = Entry(dtype, shape, base + begin, base + end)

    def read(self, name: str) -> torch.Tensor:
        entry = self.entries[name]
        size = entry.end - entry.begin
        buf = torch.empty(size, dtype=torch.uint8)  # not zero-filled: readinto overwrites it
        if size:
            with open(self.path, "rb", buffering=0) as f:
                f.seek(entry.begin)
                view = buf.numpy().data
                got = 0
                while got < size:
                    n = f.readinto(view[got:])
                    if not n:
                        raise CorruptCheckpoint(f"{self.path} is truncated: short read of {name!r}")
                    got += n
        return buf.view(entry.dtype).reshape(entry.shape)


def _header_bytes(items: list[tuple[str, tuple[int, ...], torch.dtype]]) -> bytes:
    header: dict[str, object] = {"__metadata__": {"format": "pt"}}
    offset = 0
    for name, shape, dtype in items:
        n = nbytes(shape, dtype)
        header[name] = {
            "dtype": NAMES[dtype],
            "shape": list(shape),
            "data_offsets": [offset, offset + n],
        }
        offset += n
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)
    return struct.pack("<Q", len(raw)) + raw


def shard_layout(
    items: list[tuple[str, tuple[int, ...], torch.dtype]], max_shard_bytes: int
) -> list[list[tuple[str, tuple[int, ...], torch.dtype]]]:
    """Split tensors, in order, into shards of at most ``max_shard_bytes`` (a tensor may exceed)."""
    shards: list[list[tuple[str, tuple[int, ...], torch.dtype]]] = [[]]
    size = 0
    for item in items:
        n = nbytes(item[1], item[2])
        if shards[-1] and size + n > max_shard_bytes:
            shards.append([])
            size = 0
        shards[-1].append(item)
        size += n
    return shards


def shard_names(count: int) -> list[str]:
    if count == 1:
        return ["model.safetensors"]
    return [f"model-{i + 1:05d}-of-{count:05d}.safetensors" for i in range(count)]


def write_sharded(
    out_dir: Path,
    items: list[tuple[str, tuple[int, ...], torch.dtype]],
    tensors: Iterator[tuple[str, torch.Tensor | RawBytes]],
    max_shard_bytes: int,
) -> int:
    """Write ``tensors`` (yielded in ``items`` order) as sharded safetensors plus the index.

    Returns the total bytes of tensor data. Each tensor is written as soon as it is produced.
    """
    shards = shard_layout(items, max_shard_bytes)
    files = shard_names(len(shards))
    weight_map: dict[str, str] = {}
    total = 0
    for fname, shard in zip(files, shards, strict=True):
        with open(out_dir / fname, "wb") as f:
            f.write(_header_bytes(shard))
            for name, shape, dtype in shard:
                got_name, x = next(tensors)
                assert got_name == name, (got_name, name)
                if isinstance(x, RawBytes):
                    assert x.end - x.begin == nbytes(shape, dtype), name
                    _copy_range(x, f)
                    total += x.end - x.begin
                else:
                    assert tuple(x.shape) == shape and x.dtype == dtype, name
                    data = x.contiguous().reshape(-1).view(torch.uint8)
                    if data.numel():
                        f.write(data.numpy().data)
                    total += data.numel()
                weight_map[name] = fname
                fault_point("grow.tensor")
        fault_point("grow.shard")
    for fname in files:  # one durability barrier at the end, not one stall per shard
        fd = os.open(out_dir / fname, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    if len(files) > 1:
        index = {"metadata": {"total_size": total}, "weight_map": weight_map}
        (out_dir / "model.safetensors.index.json").write_text(json.dumps(index, indent=2) + "\n")
    return total


def _copy_range(raw: RawBytes, out) -> None:
    """Copy bytes between files in the kernel where possible (as ``cp`` does)."""
    out.flush()
    length = raw.end - raw.begin
    with open(raw.path, "rb", buffering=0) as src:
        offset = raw.begin
        try:
            while length:
                n = os.copy_file_range(src.fileno(), out.fileno(), length, offset)
                if n == 0:
                    raise CorruptCheckpoint(f"{raw.path} is truncated")
                offset += n
                length -= n
            return
        except (AttributeError, OSError) as e:
            if isinstance(e, OSError) and e.errno not in (errno.EXDEV, errno.ENOSYS, errno.EINVAL):
                raise
        src.seek(offset)
        while length:
            chunk = src.read(min(length, 64 << 20))
            if not chunk:
                raise CorruptCheckpoint(f"{raw.path} is truncated")
            out.write(chunk)
            length -= len(chunk)

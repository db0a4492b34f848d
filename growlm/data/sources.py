"""Corpus sources: turn what the user names (files, folders, .jsonl/.parquet, a hub dataset) into
a stream of documents.

A *source* is a string: a path to a text file, a folder (read recursively, files sorted by path so
the order never depends on the file system), a ``.jsonl``/``.parquet`` file whose rows carry a text
field, ``hf:<dataset>[:<config>][@<split>]`` for a Hugging Face hub dataset, or ``default`` for the
embedded Shakespeare corpus. Every document is one string; the shard writer puts EOS after each.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from growlm.data.chunks import CHUNK_CHARS, Piece, read_text_pieces, split_text
from growlm.errors import InvalidData

TEXT_SUFFIXES = (".txt", ".md", ".text")
ROW_SUFFIXES = (".jsonl", ".parquet")
HUB_PREFIX = "hf:"


@dataclass(frozen=True)
class SourceFile:
    """One readable file of a source: where it is and how its documents are stored."""

    path: Path
    kind: str  # "text" (whole file is one document) | "jsonl" | "parquet"


def resolve_files(source: str) -> list[SourceFile]:
    """Expand a path source into its files, sorted; a clear error when nothing can be read."""
    path = Path(source).expanduser()
    if not path.exists():
        raise InvalidData(f"data source {source!r} does not exist")
    candidates = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    found = [f for f in (_classify(p) for p in candidates) if f is not None]
    if not found:
        kinds = ", ".join(TEXT_SUFFIXES + ROW_SUFFIXES)
        if path.is_file():
            raise InvalidData(
                f"data source {source!r}: unsupported file type {path.suffix!r} (use {kinds})"
            )
        raise InvalidData(f"data source {source!r} holds no {kinds} files")
    return found


def _classify(path: Path) -> SourceFile | None:
    suffix = path.suffix.lower()
    if suffix in TEXT_SUFFIXES:
        return SourceFile(path, "text")
    if suffix == ".jsonl":
        return SourceFile(path, "jsonl")
    if suffix == ".parquet":
        return SourceFile(path, "parquet")
    return None


def iter_file_documents(file: SourceFile, text_field: str) -> Iterator[str]:
    """Documents of one file: the whole text of a text file, or one per row of a table."""
    if file.kind == "text":
        text = file.path.read_text(encoding="utf-8", errors="replace")
        if text.strip():
            yield text
    else:
        for text, _ in _iter_rows(file, text_field):
            yield text


def iter_file_pieces(
    file: SourceFile, text_field: str, chunk_chars: int = CHUNK_CHARS
) -> Iterator[Piece]:
    """The documents of one file as bounded pieces (growlm/data/chunks.py): a text file is
    read a chunk at a time, a table a row (jsonl) or a batch of rows (parquet) at a time."""
    if file.kind == "text":
        yield from read_text_pieces(file.path, chunk_chars)
        return
    for text, size in _iter_rows(file, text_field):
        yield from pieces_of(text, size, chunk_chars)


def pieces_of(text: str, size: int, chunk_chars: int) -> Iterator[Piece]:
    """One in-memory document as pieces; ``size`` source bytes are counted on the last."""
    parts = split_text(text, chunk_chars)
    for index, part in enumerate(parts):
        last = index == len(parts) - 1
        yield Piece(part, last, size if last else 0)


def _iter_rows(file: SourceFile, text_field: str) -> Iterator[tuple[str, int]]:
    """Non-empty text fields of a table's rows, each with the source bytes it stands for."""
    if file.kind == "jsonl":
        yield from _iter_jsonl(file.path, text_field)
    else:
        yield from _iter_parquet(file.path, text_field)


def _iter_jsonl(path: Path, text_field: str) -> Iterator[tuple[str, int]]:
    pending = 0  # bytes of skipped lines, counted with the next row
    with path.open("rb") as handle:
        for line_no, raw in enumerate(handle, start=1):
            pending += len(raw)
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError:
                raise InvalidData(
                    f"{path}:{line_no}: not UTF-8 text; convert the file to UTF-8"
                ) from None
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise InvalidData(f"{path}:{line_no}: not valid JSON ({exc.msg})") from None
            text = _field(row, text_field, f"{path}:{line_no}")
            if text:
                yield text, pending
                pending = 0


PARQUET_BATCH_ROWS = 256  # rows decoded at once: bounded by rows, whatever the row groups hold


def _iter_parquet(path: Path, text_field: str) -> Iterator[tuple[str, int]]:
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise InvalidData(f"{path}: reading .parquet needs pyarrow (pip install pyarrow)") from None
    import pyarrow as pa

    try:
        table = pq.ParquetFile(path)
    except (pa.ArrowException, OSError) as exc:
        raise InvalidData(
            f"{path}: not a readable parquet file ({str(exc).splitlines()[0][:200]})"
        ) from None
    names = table.schema_arrow.names
    if text_field not in names:
        raise InvalidData(
            f"{path}: no column {text_field!r} (columns: {', '.join(names)}); set data.text_field"
        )
    size, rows = path.stat().st_size, max(1, table.metadata.num_rows)
    seen = done = 0
    try:
        for batch in table.iter_batches(batch_size=PARQUET_BATCH_ROWS, columns=[text_field]):
            for value in batch.column(0).to_pylist():
                seen += 1
                if value:
                    position = size * seen // rows
                    yield str(value), position - done
                    done = position
    except (pa.ArrowException, OSError) as exc:
        raise InvalidData(
            f"{path}: parquet file is corrupt ({str(exc).splitlines()[0][:200]})"
        ) from None


def _field(row: object, text_field: str, where: str) -> str:
    if not isinstance(row, dict) or text_field not in row:
        raise InvalidData(f"{where}: row has no field {text_field!r}; set data.text_field")
    value = row[text_field]
    if not isinstance(value, str):
        raise InvalidData(f"{where}: field {text_field!r} is not a string")
    return value


def parse_hub_source(source: str) -> tuple[str, str | None, str]:
    """``hf:name[:config][@split]`` -> (name, config, split); split defaults to ``train``."""
    spec = source[len(HUB_PREFIX) :]
    spec, _, split = spec.partition("@")
    name, _, config = spec.partition(":")
    if not name:
        raise InvalidData(f"data source {source!r}: expected hf:<dataset>[:<config>][@<split>]")
    return name, (config or None), (split or "train")


def iter_hub_documents(source: str, text_field: str) -> Iterator[str]:
    """Stream a hub dataset's text field (needs the `datasets` package and hub access)."""
    name, config, split = parse_hub_source(source)
    check_hub_reachable(source)
    try:
        import datasets
    except ImportError:
        raise InvalidData(
            f"data source {source!r} needs the `datasets` package (pip install datasets)"
        ) from None
    try:
        rows = datasets.load_dataset(name, config, split=split, streaming=True)
    except Exception as exc:  # hub and network errors come in many types; name the source
        raise InvalidData(f"data source {source!r} could not be loaded: {exc}") from None
    for index, row in enumerate(rows):
        text = _field(row, text_field, f"{source} row {index}")
        if text:
            yield text


HUB_PROBE_SECONDS = 3.0


def check_hub_reachable(source: str) -> None:
    """Fail in seconds, not after the hub client's ~30 s of retries, when a hub dataset cannot
    be streamed: offline mode is on, or the hub's host does not answer."""
    if os.environ.get("HF_HUB_OFFLINE", "").strip().upper() in {"1", "ON", "YES", "TRUE"}:
        raise InvalidData(
            f"data source {source!r} streams from the Hugging Face hub, but HF_HUB_OFFLINE is "
            "set; unset it, or download the data and pass its files"
        )
    endpoint = os.environ.get("HF_ENDPOINT", "https://huggingface.co")
    url = urlsplit(endpoint)
    host = url.hostname or "huggingface.co"
    port = url.port or (80 if url.scheme == "http" else 443)
    try:
        socket.create_connection((host, port), timeout=HUB_PROBE_SECONDS).close()
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise InvalidData(
            f"data source {source!r}: cannot reach {endpoint} ({reason}); check the network "
            "(or HF_ENDPOINT), or download the data and pass its files"
        ) from None


def fingerprint_files(files: list[SourceFile]) -> list[dict[str, object]]:
    """Content hash and size of every file, for the manifest and the preparation cache key."""
    return [
        {"path": str(f.path), "bytes": f.path.stat().st_size, "sha256": sha256_file(f.path)}
        for f in files
    ]


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()

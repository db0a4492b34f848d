"""``growlm data prepare``: text sources -> tokenizer -> token shards + validation split + manifest.

Preparation is a pure function of its inputs (source contents, tokenizer, options), so a recipe's
corpus is prepared once and cached under a key hashed from those inputs.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np

from growlm.data.cache import cache_root
from growlm.data.chunks import CHUNK_CHARS, Piece, split_text
from growlm.data.corpus import DEFAULT_SOURCE, default_corpus_dir
from growlm.data.progress import byte_bar
from growlm.data.shards import (
    FORMAT,
    MANIFEST,
    BlockRouter,
    SplitWriter,
    dtype_for_vocab,
    open_shards,
    write_manifest,
)
from growlm.data.sources import (
    HUB_PREFIX,
    SourceFile,
    fingerprint_files,
    iter_file_pieces,
    iter_hub_documents,
    pieces_of,
    resolve_files,
    sha256_file,
)
from growlm.data.tokenizer import (
    CorpusTokenizer,
    check_vocab_size,
    load_tokenizer,
    train_tokenizer,
)
from growlm.errors import InvalidData
from growlm.io.diskspace import human_bytes, require_free
from growlm.io.output import OutputSpec

MEMBERS = (MANIFEST, "tokenizer", "train-*.bin", "val-*.bin")  # all a prepared folder holds
ENCODE_BATCH = 64  # pieces per parallel encode
ENCODE_BATCH_CHARS = 8 * CHUNK_CHARS  # text per parallel encode: bounds the encoder memory
TRAIN_PIECE_CHARS = 1 << 16  # size of the items fed to the BPE trainer
# a BPE token covers at most this many bytes of text on any real corpus (typically 3 to 5): the
# free-space check asks for the shards of one token per MAX_BYTES_PER_TOKEN bytes, a lower bound
MAX_BYTES_PER_TOKEN = 8


@dataclass
class PrepareOptions:
    """What to tokenize and how. Field by field:

    sources: paths (file or folder), ``hf:<dataset>[:<config>][@<split>]``, or ``default``
    tokenizer: an HF tokenizer folder; None trains a byte-level BPE on the corpus
    vocab_size: ids of the trained tokenizer (EOS included); ignored with ``tokenizer``
    tokenizer_train_bytes: train the BPE on at most this many bytes of text (from the start)
    val_fraction: share of tokens held out for validation (every 1/val_fraction-th block)
    block_tokens: granularity of the train/validation split, in tokens
    shard_tokens: tokens per shard file
    text_field: the field holding the text in .jsonl/.parquet rows and hub datasets
    val_sources: held-out sources (same forms as ``sources``): when given, their whole
        documents are the validation split, every document of ``sources`` is training text, the
        tokenizer is trained on ``sources`` only, and val_fraction/block_tokens are unused
    """

    sources: list[str] = field(default_factory=lambda: [DEFAULT_SOURCE])
    tokenizer: str | None = None
    vocab_size: int = 8192
    tokenizer_train_bytes: int = 200_000_000
    val_fraction: float = 0.01
    block_tokens: int = 2048
    shard_tokens: int = 100_000_000
    text_field: str = "text"
    val_sources: list[str] = field(default_factory=list)

    @classmethod
    def named_in(cls, holder: Any) -> PrepareOptions:
        """The options ``holder`` (``growlm data prepare``'s arguments, a recipe's data section)
        has under the same names; the others keep their defaults."""
        given: dict[str, Any] = {}
        for f in fields(cls):
            if hasattr(holder, f.name):
                value = getattr(holder, f.name)
                given[f.name] = list(value) if isinstance(value, list | tuple) else value
        return cls(**given)

    def validate(self) -> None:
        if not self.sources:
            raise InvalidData("no data sources given")
        if not 0.0 <= self.val_fraction < 0.5:
            raise InvalidData(f"val_fraction must be in [0, 0.5), got {self.val_fraction}")
        if self.block_tokens < 1 or self.shard_tokens < 1:
            raise InvalidData("block_tokens and shard_tokens must be positive")
        if self.tokenizer is None:
            check_vocab_size(self.vocab_size)


class _Corpus:
    """The resolved sources, readable any number of times in the same order."""

    def __init__(self, sources: list[str], text_field: str):
        self.text_field = text_field
        self.entries: list[tuple[str, list[SourceFile]]] = []
        for source in sources:
            if source == DEFAULT_SOURCE:
                self.entries.append((source, resolve_files(str(default_corpus_dir()))))
            elif source.startswith(HUB_PREFIX):
                self.entries.append((source, []))
            else:
                self.entries.append((source, resolve_files(source)))

    def pieces(self, chunk_chars: int) -> Iterator[Piece]:
        """Every document, in order, as bounded pieces (growlm/data/chunks.py)."""
        for _, piece in self.labelled_pieces(chunk_chars):
            yield piece

    def labelled_pieces(self, chunk_chars: int) -> Iterator[tuple[str, Piece]]:
        """(the file path or hub source it came from, piece), in corpus order."""
        for source, files in self.entries:
            if source.startswith(HUB_PREFIX):
                for doc in iter_hub_documents(source, self.text_field):
                    for piece in pieces_of(doc, len(doc), chunk_chars):
                        yield source, piece
            for file in files:
                label = str(file.path)
                for piece in iter_file_pieces(file, self.text_field, chunk_chars):
                    yield label, piece

    def total_bytes(self) -> int | None:
        """Bytes of all source files; None when a hub dataset's size is unknown."""
        if any(source.startswith(HUB_PREFIX) for source, _ in self.entries):
            return None
        return sum(f.path.stat().st_size for _, files in self.entries for f in files)

    def fingerprint(self) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        for source, files in self.entries:
            if source.startswith(HUB_PREFIX):
                out.append({"source": source})
            else:
                out.append({"source": source, "files": fingerprint_files(files)})
        return out


def cache_key(
    options: PrepareOptions,
    sources_fingerprint: list[dict[str, Any]],
    val_fingerprint: list[dict[str, Any]] | None = None,
) -> str:
    """Hash of everything the prepared tokens depend on."""
    opts = asdict(options)
    opts.pop("sources")
    opts.pop("val_sources")
    if val_fingerprint:
        opts["val_sources"] = _stable(val_fingerprint)
    if options.tokenizer is not None:
        opts["tokenizer"] = sha256_file(Path(options.tokenizer).expanduser() / "tokenizer.json")
        opts.pop("vocab_size")
        opts.pop("tokenizer_train_bytes")
    payload = json.dumps(
        {"format": FORMAT, "options": opts, "sources": _stable(sources_fingerprint)}, sort_keys=True
    )
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def _stable(fingerprint: list[dict[str, Any]]) -> list[Any]:
    """Fingerprint without absolute paths: the same files elsewhere give the same key."""
    return [
        {"files": [f["sha256"] for f in e["files"]]} if "files" in e else {"source": e["source"]}
        for e in fingerprint
    ]


def prepare_cached(options: PrepareOptions, progress: bool = False) -> Path:
    """The prepared folder for these options, preparing it into the cache on first use."""
    options.validate()
    corpora = _corpora(options)
    folder = cache_root() / "data" / cache_key(options, *(c.fingerprint() for c in corpora))
    if (folder / MANIFEST).is_file():
        return folder
    return _prepare(corpora, options, _output(folder, options, True), _Settings(progress=progress))


def prepare(
    options: PrepareOptions,
    out_dir: Path,
    force: bool = False,
    progress: bool = False,
    chunk_chars: int = CHUNK_CHARS,
) -> Path:
    """Prepare into ``out_dir`` (which must not exist unless ``force``; even then only an empty
    folder or an earlier prepared folder is replaced). ``progress`` shows byte progress bars on
    stderr (when it is a terminal); ``chunk_chars`` bounds the text held at once
    (growlm/data/chunks.py) and, where text offers safe cuts, not the tokens."""
    options.validate()
    output = _output(out_dir, options, force)
    output.check()
    settings = _Settings(progress=progress, chunk_chars=chunk_chars)
    return _prepare(_corpora(options), options, output, settings)


def _corpora(options: PrepareOptions) -> list[_Corpus]:
    """The training corpus, and the held-out one when ``val_sources`` are given."""
    corpora = [_Corpus(options.sources, options.text_field)]
    if options.val_sources:
        corpora.append(_Corpus(options.val_sources, options.text_field))
    return corpora


def _output(out_dir: Path, options: PrepareOptions, force: bool) -> OutputSpec:
    """--out of data prepare: a growlm token folder, never one of the local sources."""
    local = [s for s in (*options.sources, *options.val_sources) if Path(s).exists()]
    return OutputSpec(
        path=out_dir, force=force, records=(MANIFEST,), members=MEMBERS, sources=local, flag="--out"
    )


@dataclass(frozen=True)
class _Settings:
    """How to prepare, not what: kept out of the cache key, since the output is the same for any
    piece size except where text offers no safe cut (one enormous line; growlm/data/chunks.py)."""

    progress: bool = False
    chunk_chars: int = CHUNK_CHARS
    batch_chars: int = ENCODE_BATCH_CHARS


def _prepare(
    corpora: list[_Corpus], options: PrepareOptions, output: OutputSpec, settings: _Settings
) -> Path:
    _require_room(corpora, output.path)
    with output.staged() as staging:
        tokenizer = _tokenizer(corpora[0], options, staging / "tokenizer", settings)
        manifest, per_file = _write_tokens(corpora, tokenizer, options, staging, settings)
        for key, corpus in zip(("sources", "val_sources"), corpora, strict=False):
            manifest[key] = _with_counts(corpus.fingerprint(), per_file)
        write_manifest(staging, manifest)
    open_shards(output.path)  # sizes agree with the manifest
    return output.path


def _require_room(corpora: list[_Corpus], out: Path) -> None:
    """DiskFull before tokenizing when OUT's disk obviously cannot hold the token shards (at
    least 2 bytes per token, one token per MAX_BYTES_PER_TOKEN bytes of local text)."""
    sizes = [corpus.total_bytes() for corpus in corpora]
    if any(size is None for size in sizes):
        return  # a hub dataset: its size is not known before it streams
    text = sum(size or 0 for size in sizes)
    require_free(
        out,
        text // MAX_BYTES_PER_TOKEN * np.dtype(np.uint16).itemsize,
        f"the token shards of {human_bytes(text)} of text",
        "free space or choose another --out",
    )


def _tokenizer(
    corpus: _Corpus, options: PrepareOptions, folder: Path, settings: _Settings
) -> CorpusTokenizer:
    if options.tokenizer is not None:
        source = load_tokenizer(options.tokenizer)
        folder.mkdir(parents=True)
        for item in sorted(source.path.iterdir()):
            if item.is_file():
                shutil.copyfile(item, folder / item.name)
        return load_tokenizer(folder)
    total = corpus.total_bytes()
    cap = options.tokenizer_train_bytes
    with byte_bar(
        "training tokenizer", min(total, cap) if total else cap, settings.progress
    ) as bar:
        texts = _training_texts(corpus.pieces(settings.chunk_chars), cap, bar.update)
        return train_tokenizer(texts, options.vocab_size, folder)


def _training_texts(
    pieces: Iterator[Piece], max_chars: int, advance: Callable[[int], Any]
) -> Iterator[str]:
    """The first ``max_chars`` characters of the corpus (whole pieces), in small parts: the
    trainer buffers a fixed number of items, so small items keep its memory small."""
    seen = 0
    for piece in pieces:
        if seen >= max_chars:
            return
        yield from split_text(piece.text, TRAIN_PIECE_CHARS)
        seen += len(piece.text)
        advance(piece.source_bytes)


def _write_tokens(
    corpora: list[_Corpus],
    tokenizer: CorpusTokenizer,
    options: PrepareOptions,
    folder: Path,
    settings: _Settings,
) -> tuple[dict[str, Any], dict[str, list[int]]]:
    """Token shards of every document; returns the manifest and, per file (or hub source),
    [documents, tokens] with the EOS after each document counted."""
    dtype = dtype_for_vocab(tokenizer.vocab_size)
    train = SplitWriter(folder, "train", dtype, options.shard_tokens)
    val = SplitWriter(folder, "val", dtype, options.shard_tokens)
    held_out = len(corpora) > 1
    val_every = round(1 / options.val_fraction) if options.val_fraction > 0 and not held_out else 0
    routers = [BlockRouter(train, val, options.block_tokens, val_every)]
    if held_out:  # a router that sends every block to validation
        routers.append(BlockRouter(val, val, options.block_tokens, 1))
    per_file: dict[str, list[int]] = {}
    documents = 0
    for corpus, router in zip(corpora, routers, strict=True):
        with byte_bar("tokenizing", corpus.total_bytes(), settings.progress) as bar:
            pieces = corpus.labelled_pieces(settings.chunk_chars)
            for batch in _batches(pieces, settings.batch_chars):
                documents += _encode_into(router, tokenizer, batch, per_file)
                bar.update(sum(piece.source_bytes for _, piece in batch))
        router.finish()
    splits = {"train": train.finish(), "val": val.finish()}
    if documents == 0:
        raise InvalidData("the data sources hold no text")
    if held_out and not splits["val"]:
        raise InvalidData("the validation sources (--val-source) hold no text")
    if val_every and not splits["val"]:
        raise InvalidData(
            f"corpus too small for a validation split: fewer than {val_every} blocks of "
            f"{options.block_tokens} tokens; lower data.block_tokens or val_fraction"
        )
    manifest = {
        "format": FORMAT,
        "dtype": dtype.name,
        "vocab_size": tokenizer.vocab_size,
        "eos_id": tokenizer.eos_id,
        "tokenizer": "tokenizer",
        "documents": documents,
        "options": {
            k: v for k, v in asdict(options).items() if k not in ("sources", "val_sources")
        },
        "splits": {
            name: {
                "tokens": sum(r.tokens for r in records),
                "shards": [asdict(r) for r in records],
            }
            for name, records in splits.items()
        },
    }
    return manifest, per_file


Labelled = tuple[str, Piece]  # (the file or hub source a piece came from, the piece)


def _batches(pieces: Iterator[Labelled], max_chars: int) -> Iterator[list[Labelled]]:
    """Pieces grouped for one parallel encode: at most ``ENCODE_BATCH`` of them, and no more
    text than ``max_chars`` beyond the first piece."""
    batch: list[Labelled] = []
    chars = 0
    for item in pieces:
        size = len(item[1].text)
        if batch and (len(batch) == ENCODE_BATCH or chars + size > max_chars):
            yield batch
            batch, chars = [], 0
        batch.append(item)
        chars += size
    if batch:
        yield batch


def _encode_into(
    router: BlockRouter,
    tokenizer: CorpusTokenizer,
    batch: list[Labelled],
    per_file: dict[str, list[int]],
) -> int:
    """Encode a batch of pieces in parallel and route the ids (EOS after each document);
    count documents and tokens (EOS included) per source file."""
    eos = np.asarray([tokenizer.eos_id], dtype=np.uint32)
    documents = 0
    texts = [piece.text for _, piece in batch]
    for (label, piece), ids in zip(batch, tokenizer.encode_pieces(texts), strict=True):
        router.add(ids)
        counts = per_file.setdefault(label, [0, 0])
        counts[1] += len(ids)
        if piece.doc_end:
            router.add(eos)
            documents += 1
            counts[0] += 1
            counts[1] += 1
    return documents


def _with_counts(
    fingerprint: list[dict[str, Any]], per_file: dict[str, list[int]]
) -> list[dict[str, Any]]:
    """The sources' fingerprint with documents and tokens (EOS included) per file."""

    def counts(label: str) -> dict[str, int]:
        documents, tokens = per_file.get(label, [0, 0])
        return {"documents": documents, "tokens": tokens}

    out = []
    for entry in fingerprint:
        entry = dict(entry)
        if "files" in entry:
            entry["files"] = [{**f, **counts(f["path"])} for f in entry["files"]]
        else:
            entry.update(counts(entry["source"]))
        out.append(entry)
    return out

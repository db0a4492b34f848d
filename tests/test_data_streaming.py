"""Streaming preparation: bounded pieces, cuts that keep every token, the same shards whatever the
chunk size, progress on stderr, a hub source that fails fast when it cannot be reached."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
from tokenizers import Regex, pre_tokenizers

from growlm.data import PrepareOptions, open_shards, prepare
from growlm.data.chunks import cut_point, read_text_pieces, split_text
from growlm.data.shards import BlockRouter, SplitWriter
from growlm.errors import InvalidData

FIXTURE = Path(__file__).parent / "fixtures" / "shakespeare"
MACBETH = (FIXTURE / "macbeth.txt").read_text()
CODE = (Path(__file__).parent / "test_data_prepare.py").read_text()  # indented lines, blanks
LLAMA3_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+"
)


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("GROWLM_CACHE", str(tmp_path / "cache"))


def _corpus(root: Path) -> Path:
    """Every kind of text file: plays, code, CRLF, whitespace-only, long jsonl rows, one line."""
    src = root / "corpus"
    src.mkdir()
    (src / "a_macbeth.txt").write_text(MACBETH)
    (src / "b_code.txt").write_text(CODE)
    (src / "c_crlf.txt").write_bytes(MACBETH[:20_000].replace("\n", "\r\n").encode())
    (src / "d_blank.txt").write_text(" \n\n\t \n")
    rows = [{"text": MACBETH[i : i + 9_000]} for i in range(0, 45_000, 9_000)]
    (src / "e_rows.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return src


@pytest.mark.parametrize("chunk_chars", [64, 4096])
def test_tiny_chunks_give_the_same_shards_and_tokenizer_as_whole_files(tmp_path, chunk_chars):
    src = _corpus(tmp_path)
    opts = PrepareOptions(sources=[str(src)], vocab_size=320, val_fraction=0.1, block_tokens=128)
    whole = prepare(opts, tmp_path / "whole", chunk_chars=1 << 30)
    chunked = prepare(opts, tmp_path / "chunked", chunk_chars=chunk_chars)
    a, b = open_shards(whole), open_shards(chunked)
    assert a.manifest["documents"] == b.manifest["documents"] == 3 + 5  # the blank file: none
    assert a.manifest["splits"] == b.manifest["splits"]  # every shard's hash and count
    tok = "tokenizer/tokenizer.json"
    assert (whole / tok).read_bytes() == (chunked / tok).read_bytes()


@pytest.mark.parametrize("text", [MACBETH, CODE, "no newline at all " * 400, "x\n" * 3000])
@pytest.mark.parametrize("chunk_chars", [16, 500])
def test_pieces_are_bounded_and_concatenate_to_the_text(tmp_path, text, chunk_chars):
    pieces = split_text(text, chunk_chars)
    assert "".join(pieces) == text
    assert all(0 < len(p) <= 2 * chunk_chars for p in pieces)
    file = tmp_path / "t.txt"
    file.write_text(text)
    streamed = list(read_text_pieces(file, chunk_chars))
    assert "".join(p.text for p in streamed) == text
    assert all(len(p.text) <= 2 * chunk_chars for p in streamed)
    assert [p.doc_end for p in streamed] == [False] * (len(streamed) - 1) + [True]
    assert sum(p.source_bytes for p in streamed) == file.stat().st_size


@pytest.mark.parametrize(
    "pre",
    [
        pre_tokenizers.ByteLevel(add_prefix_space=False),  # GPT-2, growlm's own BPE
        pre_tokenizers.Split(Regex(LLAMA3_SPLIT), behavior="isolated"),  # Llama 3 / GPT-4
    ],
    ids=["gpt2", "llama3"],
)
def test_strict_cuts_keep_every_pre_token(pre):
    """Pre-tokens of the pieces are the pre-tokens of the whole text: a cut changes no token."""
    for text in (MACBETH[:30_000], CODE):
        pieces = split_text(text, 200)
        assert len(pieces) > 20
        whole = [t for t, _ in pre.pre_tokenize_str(text)]
        parts = [t for p in pieces for t, _ in pre.pre_tokenize_str(p)]
        assert parts == whole


def test_cut_points_in_order_of_preference():
    text = "alpha\n  beta\n\ngamma\ndelta  \nepsilon"
    assert text[: cut_point(text)].endswith("gamma\n")  # newline between non-spaces
    indented = "def f():\n    return 1\n\n    x"
    assert indented[: cut_point(indented)] == "def f():\n    return 1\n\n   "  # before " x"
    assert cut_point("one long line of single spaced words") == 0  # the caller falls back
    assert cut_point("a b\nc d  \n", strict=False) == 4


def test_router_output_does_not_depend_on_how_tokens_arrive(tmp_path):
    tokens = np.arange(10_000, dtype=np.uint32) % 5000

    def route(parts: list[np.ndarray], name: str) -> tuple[bytes, bytes]:
        folder = tmp_path / name
        folder.mkdir()
        train = SplitWriter(folder, "train", np.dtype(np.uint16), 3000)
        val = SplitWriter(folder, "val", np.dtype(np.uint16), 3000)
        router = BlockRouter(train, val, 128, 7)
        for part in parts:
            router.add(part)
        router.finish()
        train.finish(), val.finish()
        read = lambda split: b"".join(p.read_bytes() for p in sorted(folder.glob(f"{split}-*")))  # noqa: E731
        return read("train"), read("val")

    one = route([tokens], "one")
    ragged = route(np.split(tokens, [1, 2, 130, 131, 900, 5000, 5001]), "ragged")
    singles = route(list(tokens.reshape(-1, 1)), "singles")
    assert one == ragged == singles
    assert len(one[1]) == (10_000 // 128 // 7) * 128 * 2


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_goes_to_stderr_on_a_terminal_only(tmp_path, monkeypatch):
    opts = PrepareOptions(sources=[str(FIXTURE)], vocab_size=300, val_fraction=0.1)
    opts.block_tokens = 256
    terminal = _Terminal()
    monkeypatch.setattr("sys.stderr", terminal)
    prepare(opts, tmp_path / "a", progress=True)
    shown = terminal.getvalue()
    assert "training tokenizer" in shown and "tokenizing" in shown
    assert "100%" in shown and "/s" in shown  # bytes per second
    pipe = io.StringIO()
    monkeypatch.setattr("sys.stderr", pipe)
    prepare(opts, tmp_path / "b", progress=True)
    assert pipe.getvalue() == ""


def test_hub_source_fails_fast_offline_or_unreachable(tmp_path, monkeypatch):
    opts = PrepareOptions(sources=["hf:someorg/plays"], vocab_size=300)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(InvalidData, match=r"'hf:someorg/plays' streams .* HF_HUB_OFFLINE is set"):
        prepare(opts, tmp_path / "a")
    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # nothing listens on discard
    with pytest.raises(InvalidData, match=r"cannot reach http://127.0.0.1:9 \(Connection refused"):
        prepare(opts, tmp_path / "b")
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_reader_reads_no_further_than_it_needs(tmp_path):
    """A 4 MB file read 1000 characters at a time: the first piece comes after a few kB read."""
    file = tmp_path / "big.txt"
    file.write_text(MACBETH * 40)
    pieces = read_text_pieces(file, 1000)
    first = next(pieces)
    assert len(first.text) <= 2000 and 0 < first.source_bytes <= 64 * 1024
    assert file.stat().st_size > 4_000_000

"""Bounded pieces of text: a document of any length becomes pieces of about ``chunk_chars``
characters, so reading, tokenizer training and tokenisation never hold a whole large file.

Where a piece ends matters: a tokenizer sees each piece on its own, so a cut must not change the
pre-tokens around it. Pieces are cut after a newline that sits between two non-space characters
(``x\\n|y``), else before the space that starts a word after other whitespace
(``x\\n   | y``): there the pre-tokens on both sides are the same whether the text goes on or
not, for the byte-level regexes of GPT-2 and of Llama 3 / GPT-4 alike, so the concatenated ids of
the pieces equal the ids of the whole document. Only text with neither within twice
``chunk_chars`` (one enormous line of single-spaced words) is cut at a weaker place: any
newline, else the chunk edge; then the few tokens at that cut may differ from
a whole-document encoding. So may tokenizers that mark the start of a text (SentencePiece's
``prepend_scheme: first``): the first word of each piece after the first gets the marker.
"""

from __future__ import annotations

import io
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

CHUNK_CHARS = 1 << 18


@dataclass(frozen=True)
class Piece:
    """Part of a document: its text, whether EOS follows it, and how many source bytes it
    stands for (for progress; approximate inside a file, exact at a file's end)."""

    text: str
    doc_end: bool
    source_bytes: int = 0


def cut_point(text: str, strict: bool = True) -> int:
    """The largest ``i`` in (0, len(text)) where a piece may end (see the module docstring);
    0 when there is none. ``strict=False`` settles for any newline."""
    end = len(text) - 1  # the character after the cut must exist to be judged
    if not strict:
        return text.rfind("\n", 0, end) + 1
    while end > 0:
        nl = text.rfind("\n", 0, end)
        if nl < 0:
            break
        i = nl + 1
        if nl > 0 and not text[nl - 1].isspace() and not text[i].isspace():
            return i
        end = nl
    last = 0
    for match in _BEFORE_WORD.finditer(text):
        last = match.start(1)
    return last


# A space that ends a run of whitespace and starts a word: the space belongs to the word's
# pre-token and the run before it is one pre-token that ends there ("\n    return" is cut as
# "\n   " | " return"), for the GPT-2 and the Llama 3 regexes alike.
_BEFORE_WORD = re.compile(r"\s( )(?=\S)")


def _take(buffer: str, chunk_chars: int, final: bool) -> tuple[list[str], str]:
    """Split ``buffer`` into pieces of about ``chunk_chars``; return them and the carried tail
    (shorter than ``2 * chunk_chars``; empty when ``final``)."""
    pieces: list[str] = []
    while len(buffer) > chunk_chars:
        cut = cut_point(buffer[: 2 * chunk_chars + 1])
        if cut == 0 and not final and len(buffer) < 2 * chunk_chars:
            break  # wait for more text before settling for a weaker cut
        if cut == 0:
            cut = cut_point(buffer[: 2 * chunk_chars + 1], strict=False) or min(
                len(buffer) - 1, 2 * chunk_chars
            )
        pieces.append(buffer[:cut])
        buffer = buffer[cut:]
    if final and buffer:
        pieces.append(buffer)
        buffer = ""
    return pieces, buffer


def split_text(text: str, chunk_chars: int = CHUNK_CHARS) -> list[str]:
    """An in-memory document (a .jsonl or hub row) as pieces whose concatenation is ``text``."""
    if len(text) <= chunk_chars:
        return [text]
    pieces, _ = _take(text, chunk_chars, final=True)
    return pieces


def read_text_pieces(path: Path, chunk_chars: int = CHUNK_CHARS) -> Iterator[Piece]:
    """A text file as one document in pieces, read ``chunk_chars`` characters at a time
    (UTF-8 with replacement, universal newlines: the same text ``Path.read_text`` gives).
    A file holding only whitespace yields nothing."""
    if not _has_text(path, chunk_chars):
        return
    size = path.stat().st_size
    done = 0
    with (
        path.open("rb") as raw,
        io.TextIOWrapper(raw, encoding="utf-8", errors="replace") as handle,
    ):
        carry = ""
        while block := handle.read(chunk_chars):
            pieces, carry = _take(carry + block, chunk_chars, final=False)
            for text in pieces:
                position = min(raw.tell(), size)
                yield Piece(text, False, position - done)
                done = position
        pieces, _ = _take(carry, chunk_chars, final=True)
    for index, text in enumerate(pieces):
        last = index == len(pieces) - 1
        yield Piece(text, last, size - done if last else 0)


def _has_text(path: Path, chunk_chars: int) -> bool:
    with path.open(encoding="utf-8", errors="replace") as handle:
        while block := handle.read(chunk_chars):
            if block.strip():
                return True
    return False

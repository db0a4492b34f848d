"""Token batches for work outside the training loop (G_learn's map training in ``growlm grow``):
windows of ``seq_len + 1`` tokens from text, tokenized with a model's own tokenizer, or from a
``growlm data prepare`` folder, in a seeded order."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch

from growlm.errors import InvalidData


def path_batches(
    data: str | Path,
    tokenizer_dir: str | Path,
    vocab_size: int,
    seq_len: int,
    batch_size: int,
    seed: int = 0,
    max_tokens: int | None = None,
) -> Callable[[int], torch.Tensor]:
    """Batches of ``seq_len + 1`` token windows from a text file, a folder of text files
    (tokenized with the tokenizer in ``tokenizer_dir``) or a ``growlm data prepare`` folder.
    Text is tokenized in pieces of about ``PIECE_CHARS`` characters (cut after a newline) and
    only until ``max_tokens`` tokens are in hand (None: all of it), so a few steps on a large
    corpus do not wait for the whole corpus to be tokenized."""
    import numpy as np

    from growlm.data.sampler import TokenWindows, WindowSampler
    from growlm.data.shards import MANIFEST, open_shards
    from growlm.data.sources import iter_file_documents, resolve_files

    path = Path(data).expanduser()
    if not path.exists():
        raise InvalidData(f"--data {str(data)!r} does not exist")
    if path.is_dir() and (path / MANIFEST).is_file():
        shards = open_shards(path)
        if shards.vocab_size > vocab_size:
            raise InvalidData(
                f"--data {str(data)!r} was prepared with a {shards.vocab_size}-token vocabulary "
                f"but the model has {vocab_size}: prepare it with the model's tokenizer"
            )
        arrays = list(shards.splits["train"])
    else:
        tok = _tokenizer(tokenizer_dir)
        ids: list[int] = []
        enough = False
        for file in resolve_files(str(path)):
            for doc in iter_file_documents(file, "text"):
                for piece in _pieces(doc):
                    ids += tok(piece, add_special_tokens=False)["input_ids"]
                    enough = max_tokens is not None and len(ids) >= max_tokens
                    if enough:
                        break
                if tok.eos_token_id is not None and not enough:
                    ids.append(int(tok.eos_token_id))
                if enough:
                    break
            if enough:
                break
        arr = np.asarray(ids, dtype=np.int64)
        if arr.size and int(arr.max()) >= vocab_size:
            raise InvalidData(
                f"the tokenizer of {tokenizer_dir} emits id {int(arr.max())} but the model has "
                f"{vocab_size} embeddings"
            )
        arrays = [arr]
    total = int(sum(len(a) for a in arrays))
    if total < seq_len + 1:
        raise InvalidData(
            f"--data {str(data)!r} has {total} tokens, too few for one window of "
            f"--seq-len {seq_len} + 1: give more text or a smaller --seq-len"
        )
    windows = TokenWindows(arrays, seq_len, "data")
    sampler = WindowSampler(windows.count, seed)
    return lambda step: windows.batch(sampler.take(batch_size))


PIECE_CHARS = 1 << 16


def _pieces(text: str, size: int = PIECE_CHARS) -> Iterator[str]:
    """``text`` in consecutive pieces of about ``size`` characters, each cut after a newline
    where there is one (a byte-level BPE splits there anyway)."""
    start = 0
    while start < len(text):
        end = min(len(text), start + size)
        if end < len(text):
            cut = text.rfind("\n", start, end)
            end = cut + 1 if cut > start else end
        yield text[start:end]
        start = end


def _tokenizer(folder: str | Path) -> Any:
    try:
        from transformers import AutoTokenizer

        tok = AutoTokenizer.from_pretrained(str(folder), trust_remote_code=False)
    except Exception:  # missing files, bad json, remote code: all mean "no usable tokenizer"
        raise InvalidData(
            f"{folder} has no usable tokenizer to tokenize --data: add the tokenizer files, or "
            f"pass a folder made by `growlm data prepare` with the model's tokenizer"
        ) from None
    tok.model_max_length = 1 << 60  # documents are cut into windows here, not by the tokenizer
    return tok

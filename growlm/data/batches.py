"""Token batches for work outside the training loop (G_learn's map training in ``growlm grow``):
windows of ``seq_len + 1`` tokens from text, tokenized with a model's own tokenizer, or from a
``growlm data prepare`` folder, in a seeded order."""

from __future__ import annotations

from collections.abc import Callable
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
) -> Callable[[int], torch.Tensor]:
    """Batches of ``seq_len + 1`` token windows from a text file, a folder of text files
    (tokenized with the tokenizer in ``tokenizer_dir``) or a ``growlm data prepare`` folder."""
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
        for file in resolve_files(str(path)):
            for doc in iter_file_documents(file, "text"):
                ids += tok(doc, add_special_tokens=False)["input_ids"]
                if tok.eos_token_id is not None:
                    ids.append(int(tok.eos_token_id))
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

"""Perplexity and bits per byte of a causal LM on held-out text, with sliding windows: each
window holds up to ``max_length`` tokens (the model's max positions by default) and scores only
the tokens not scored by the previous window, so every token after the first window sees
``max_length - stride`` tokens of context. Documents are scored separately, each starting after
a BOS (or EOS) token so its first token is predicted too.

Bits per byte = total NLL / ln 2 / UTF-8 bytes of the scored text: unlike perplexity it does
not depend on the tokenizer, so models with different vocabularies compare."""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from growlm.errors import one_line
from growlm.eval.errors import EvalError
from growlm.io.hf_config import ConfigJsonError, not_causal_lm, read_config_json

TEXT_SUFFIXES = (".txt", ".md", ".text")


@dataclass
class PerplexityResult:
    perplexity: float
    bits_per_byte: float | None
    nll: float
    tokens: int
    bytes: int | None
    documents: int
    max_length: int
    stride: int

    def to_json(self) -> dict[str, Any]:
        return dict(self.__dict__)


def load_model(
    model_dir: Path | str, dtype: torch.dtype = torch.float32, trust_remote_code: bool = False
) -> tuple[Any, Any]:
    """(model in eval mode, tokenizer) from an HF folder. Its config and tokenizer files are
    checked first, and every load failure is one EvalError line. Code shipped in the folder
    (``auto_map``) runs only with ``trust_remote_code``."""
    from safetensors import SafetensorError
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging

    path = Path(model_dir)
    config = _checked_config(path)
    if "auto_map" in config and not trust_remote_code:
        raise EvalError(
            f"{str(path)!r} needs the Python code it ships (auto_map in config.json); read that "
            "code, then pass --trust-remote-code to run it"
        )
    _check_tokenizer_files(path)
    logging.disable_progress_bar()
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(path), trust_remote_code=trust_remote_code)
    except (OSError, ValueError, TypeError, KeyError) as exc:
        raise EvalError(
            f"{str(path)!r} has no usable tokenizer: {one_line(exc)}; copy the tokenizer of "
            "the model's training run into the folder"
        ) from None
    _check_vocab(path, len(tokenizer), config.get("vocab_size"))  # before the weights load
    try:
        model = AutoModelForCausalLM.from_pretrained(
            str(path), dtype=dtype, trust_remote_code=trust_remote_code
        )
    except (OSError, ValueError, RuntimeError, KeyError, TypeError, SafetensorError) as exc:
        reason = one_line(exc)
        if "mismatched_sizes" in reason or "size mismatch" in reason:
            reason = "weight shapes differ from the shapes config.json describes"
        raise EvalError(
            f"{str(path)!r} cannot be loaded as a causal LM: {reason}; check that "
            "config.json and the weights belong together and are complete"
        ) from None
    _check_vocab(path, len(tokenizer), getattr(model.config, "vocab_size", None))
    return model.eval(), tokenizer


def _check_vocab(path: Path, ids: int, vocab: Any) -> None:
    if isinstance(vocab, int) and 0 < vocab < ids:
        raise EvalError(
            f"{str(path)!r}: the tokenizer has {ids} ids but the model only {vocab} "
            "embeddings; use the tokenizer the model was trained with"
        )


def _checked_config(path: Path) -> dict[str, Any]:
    """config.json as a JSON object with a model_type transformers knows (or auto_map)."""
    from transformers import CONFIG_MAPPING

    try:
        config = read_config_json(path)
    except ConfigJsonError as e:
        if e.missing:
            raise EvalError(f"{str(path)!r} is not a model folder (no config.json)") from None
        raise EvalError(f"{str(e.file)!r} {e.problem}: restore it") from None
    file = path / "config.json"
    model_type = config.get("model_type")
    arch = not_causal_lm(config)
    if arch is not None:
        raise EvalError(
            f"{str(path)!r} holds a {arch}, not a causal language model: perplexity and "
            "next-token tasks need a *ForCausalLM / *LMHeadModel checkpoint"
        )
    if "auto_map" not in config and model_type not in CONFIG_MAPPING:
        raise EvalError(
            f"{str(file)!r}: model_type {model_type!r} is not one transformers knows; "
            "fix config.json or upgrade transformers"
        )
    return config


def _check_tokenizer_files(path: Path) -> None:
    """tokenizer.json / tokenizer_config.json parse, and a tokenizer is there at all."""
    import json

    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        file = path / name
        if not file.is_file():
            continue
        try:
            value = json.loads(file.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise EvalError(
                f"{str(file)!r} is not valid JSON ({one_line(exc)}): restore the tokenizer"
            ) from None
        if not isinstance(value, dict):
            raise EvalError(f"{str(file)!r} does not hold a JSON object: restore the tokenizer")
    if (path / "tokenizer.json").is_file():
        from tokenizers import Tokenizer

        try:
            Tokenizer.from_file(str(path / "tokenizer.json"))
        except Exception as exc:  # the Rust library raises a bare Exception for a bad file
            raise EvalError(
                f"{str(path / 'tokenizer.json')!r} is not a valid tokenizer "
                f"({one_line(exc)}): restore the tokenizer"
            ) from None
    elif not any((path / f).is_file() for f in ("tokenizer.model", "vocab.json", "vocab.txt")):
        raise EvalError(
            f"{str(path)!r} has no tokenizer (tokenizer.json): copy the tokenizer of the model's "
            "training run into the folder"
        )


def text_documents(source: Path | str) -> Iterator[str]:
    """Documents of a text file (one) or a folder (each text file, sorted)."""
    p = Path(source)
    if p.is_file():
        yield p.read_text(encoding="utf-8", errors="replace")
    elif p.is_dir():
        files = sorted(f for f in p.rglob("*") if f.suffix in TEXT_SUFFIXES and f.is_file())
        if not files:
            raise EvalError(f"{str(p)!r} holds no text files ({', '.join(TEXT_SUFFIXES)})")
        for f in files:
            yield f.read_text(encoding="utf-8", errors="replace")
    else:
        raise EvalError(f"--data {str(p)!r} does not exist")


@torch.no_grad()
def score_ids(
    model: Any, ids: list[int], start_id: int | None, max_length: int, stride: int
) -> tuple[float, int]:
    """(summed NLL in nats, scored tokens) of one token sequence, sliding windows."""
    seq = torch.tensor(([start_id] if start_id is not None else []) + ids, dtype=torch.long)
    n = seq.numel()
    nll, scored, prev_end = 0.0, 0, 1  # position 0 is never a target
    begin = 0
    while prev_end < n:
        end = min(begin + max_length, n)
        window = seq[begin:end].unsqueeze(0)  # [1, T]
        logits = model(window).logits.float()  # [1, T, V]
        logp = torch.log_softmax(logits[0, :-1], dim=-1)  # predicts window[1:]
        targets = window[0, 1:]
        first = prev_end - begin - 1  # first new target, as an index into targets
        picked = logp[first:].gather(1, targets[first:, None])  # [new, 1]
        nll -= float(picked.sum())
        scored += picked.shape[0]
        prev_end = end
        begin = max(0, end - (max_length - stride)) if end < n else end
    return nll, scored


def check_window_args(max_length: int | None, stride: int | None) -> None:
    """Window options that can never work, refused before a model is loaded (0 is not
    'the default')."""
    if max_length is not None and max_length < 2:
        raise EvalError(f"--max-length must be at least 2 tokens, got {max_length}")
    if stride is not None and stride < 1:
        raise EvalError(f"--stride must be at least 1 token, got {stride}")


def perplexity(
    model: Any,
    tokenizer: Any,
    documents: list[str] | None = None,
    token_ids: list[int] | None = None,
    max_length: int | None = None,
    stride: int | None = None,
) -> PerplexityResult:
    """Perplexity over ``documents`` (bits per byte included) or a pre-tokenized stream."""
    limit = int(getattr(model.config, "max_position_embeddings", 0) or 1024)
    check_window_args(max_length, stride)
    window = min(max_length if max_length is not None else limit, limit)
    if window < 2:
        raise EvalError(f"window of {window} tokens is too short")
    step = stride if stride is not None else max(1, window // 2)
    if not 0 < step <= window - 1:
        raise EvalError(f"--stride must be in [1, {window - 1}], got {step}")
    start = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id
    nll, tokens, nbytes, docs = 0.0, 0, 0, 0
    streams: list[list[int]] = []
    if token_ids is not None:
        streams = [token_ids]
        # bytes of the text itself: separators (EOS) are not text
        nbytes += len(tokenizer.decode(token_ids, skip_special_tokens=True).encode("utf-8"))
    for doc in documents or []:
        if doc.strip():
            streams.append(tokenizer(doc, add_special_tokens=False)["input_ids"])
            nbytes += len(doc.encode("utf-8"))
    for ids in streams:
        if len(ids) + (start is not None) < 2:
            continue
        a, b = score_ids(model, ids, start, window, step)
        nll, tokens, docs = nll + a, tokens + b, docs + 1
    if tokens == 0:
        raise EvalError("no tokens to score (empty data?)")
    bpb = nll / math.log(2) / nbytes if nbytes else None
    return PerplexityResult(
        math.exp(nll / tokens), bpb, nll, tokens, nbytes or None, docs, window, step
    )


DEFAULT_SHARD_TOKENS = 1_000_000


def shard_token_ids(folder: Path | str, max_tokens: int | None = None) -> list[int]:
    """The validation split of a ``growlm data prepare`` folder as one token stream."""
    from growlm.data.shards import open_shards

    shards = open_shards(folder)
    parts = shards.splits.get("val") or []
    if not parts:
        raise EvalError(f"{str(folder)!r} has no validation shards")
    if max_tokens is not None and max_tokens < 1:
        raise EvalError(f"--max-tokens must be at least 1, got {max_tokens}")
    cap = max_tokens or DEFAULT_SHARD_TOKENS  # a whole corpus as Python ints would not fit
    ids: list[int] = []
    for part in parts:
        ids.extend(int(t) for t in part[: cap - len(ids)])
        if len(ids) >= cap:
            break
    return ids


def is_shards(path: Path | str) -> bool:
    """True for a ``growlm data prepare`` folder (it has a manifest)."""
    from growlm.data.shards import MANIFEST

    return (Path(path) / MANIFEST).is_file()

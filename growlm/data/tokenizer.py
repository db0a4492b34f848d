"""Tokenizers for pre-training: load an existing Hugging Face tokenizer folder, or train a
byte-level BPE on the corpus and save it as one (tokenizer.json + tokenizer_config.json) so it
travels with every checkpoint and loads with ``AutoTokenizer.from_pretrained``.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

from growlm.errors import InvalidData

EOS_TOKEN = "<|endoftext|>"
MIN_VOCAB = 257  # 256 byte symbols + EOS
MAX_VOCAB = 1 << 20  # the BPE trainer allocates per id: a typo like 1e11 would abort the process
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json")


@dataclass
class CorpusTokenizer:
    """A fast tokenizer plus the EOS id that separates documents in token shards."""

    backend: Tokenizer
    eos_id: int
    path: Path

    @property
    def vocab_size(self) -> int:
        """Rows the embedding needs: every id the tokenizer can emit, special tokens included."""
        return int(self.backend.get_vocab_size(with_added_tokens=True))

    def encode_documents(self, texts: list[str]) -> list[list[int]]:
        """Token ids of each text without BOS/EOS decorations (EOS is added by the shard writer)."""
        encodings = self.backend.encode_batch(texts, add_special_tokens=False)
        return [enc.ids for enc in encodings]

    def encode_pieces(self, texts: list[str]) -> list[np.ndarray]:
        """Token ids of each text as uint32 arrays, encoded in parallel over the cores (the
        library's thread pool; ``encode_batch_fast`` skips the offsets nobody reads here)."""
        encode = getattr(self.backend, "encode_batch_fast", self.backend.encode_batch)
        encodings = encode(texts, add_special_tokens=False)
        return [np.asarray(enc.ids, dtype=np.uint32) for enc in encodings]

    def decode(self, ids: list[int]) -> str:
        return str(self.backend.decode(ids))


def train_tokenizer(documents: Iterable[str], vocab_size: int, out_dir: Path) -> CorpusTokenizer:
    """Train a byte-level BPE of ``vocab_size`` ids (EOS included) and save it as an HF folder."""
    check_vocab_size(vocab_size)
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[EOS_TOKEN],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(documents, trainer)
    save_hf_tokenizer(tokenizer, out_dir)
    return load_tokenizer(out_dir)


def check_vocab_size(vocab_size: int) -> None:
    if not MIN_VOCAB <= vocab_size <= MAX_VOCAB:
        raise InvalidData(
            f"tokenizer vocab_size must be in [{MIN_VOCAB}, {MAX_VOCAB}], got {vocab_size}"
        )


def save_hf_tokenizer(tokenizer: Tokenizer, out_dir: Path) -> None:
    """Write the files ``AutoTokenizer`` needs: the fast tokenizer and its config."""
    out_dir.mkdir(parents=True, exist_ok=True)
    tokenizer.save(str(out_dir / "tokenizer.json"))
    config = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": EOS_TOKEN,
        "eos_token": EOS_TOKEN,
        "unk_token": None,
        "pad_token": None,
        "model_max_length": 1_000_000_000,
        "clean_up_tokenization_spaces": False,
    }
    (out_dir / "tokenizer_config.json").write_text(json.dumps(config, indent=2) + "\n")


def load_tokenizer(path: Path | str) -> CorpusTokenizer:
    """Open an HF tokenizer folder (it must hold tokenizer.json) and find its EOS token."""
    folder = Path(path).expanduser()
    file = folder / "tokenizer.json"
    if not file.is_file():
        raise InvalidData(
            f"tokenizer {str(folder)!r} has no tokenizer.json "
            "(growlm needs a fast tokenizer folder)"
        )
    try:
        backend = Tokenizer.from_file(str(file))
    except Exception as exc:  # the Rust library raises a bare Exception on a bad file
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise InvalidData(
            f"tokenizer {str(file)!r} cannot be read ({reason}); restore it or give another "
            "tokenizer folder"
        ) from None
    eos = _eos_token(folder)
    eos_id = backend.token_to_id(eos) if eos else None
    if eos_id is None:
        raise InvalidData(
            f"tokenizer {str(folder)!r} has no EOS token (set eos_token in tokenizer_config.json)"
        )
    return CorpusTokenizer(backend=backend, eos_id=int(eos_id), path=folder)


def _eos_token(folder: Path) -> str | None:
    config_file = folder / "tokenizer_config.json"
    if not config_file.is_file():
        return EOS_TOKEN
    try:
        config = json.loads(config_file.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        reason = exc.msg if isinstance(exc, json.JSONDecodeError) else "not UTF-8"
        raise InvalidData(f"{config_file}: not valid JSON ({reason}); restore it") from None
    if not isinstance(config, dict):
        raise InvalidData(f"{config_file}: expected a JSON object; restore it")
    eos = config.get("eos_token", EOS_TOKEN)
    if isinstance(eos, dict):
        eos = eos.get("content")
    return eos if isinstance(eos, str) else None


def copy_tokenizer_files(src: Path, dst: Path) -> None:
    """Copy the tokenizer folder's files next to a checkpoint."""
    dst.mkdir(parents=True, exist_ok=True)
    for item in sorted(src.iterdir()):
        if item.is_file():
            (dst / item.name).write_bytes(item.read_bytes())

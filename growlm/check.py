"""Check a growth: logits and loss of the source and the grown model on the same tokens."""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Any

import torch


def sample_tokens(model_dir: Path, vocab_size: int, length: int = 64) -> torch.Tensor:
    """English sample text through the source's tokenizer; seeded random ids if it has none."""
    try:
        from transformers import AutoTokenizer

        tok = AutoTokenizer.from_pretrained(str(model_dir), trust_remote_code=False)
        text = resources.files("growlm").joinpath("assets/sample.txt").read_text()
        ids = tok(text, return_tensors="pt")["input_ids"][:, :length]
        if ids.numel() >= 8 and int(ids.max()) < vocab_size:
            return ids
    except Exception:  # no or unusable tokenizer: fall back to random ids
        pass
    gen = torch.Generator().manual_seed(0)
    return torch.randint(0, vocab_size, (2, length // 2), generator=gen)


@torch.no_grad()
def logits_and_loss(model: Any, ids: torch.Tensor) -> tuple[torch.Tensor, float]:
    out = model(input_ids=ids, labels=ids)
    return out.logits.float(), float(out.loss)


def load_fp32(path: Path) -> Any:
    from transformers import AutoModelForCausalLM
    from transformers.utils import logging

    logging.disable_progress_bar()
    # growlm grows only the families of growlm/arch: never code shipped in the folder
    model = AutoModelForCausalLM.from_pretrained(
        str(path), dtype=torch.float32, trust_remote_code=False
    )
    return model.eval()


def check_growth(src: Path, out: Path) -> dict[str, Any]:
    """Max |logit difference| (float32) and the loss before and after growth."""
    before = load_fp32(src)
    ids = sample_tokens(src, before.config.vocab_size)
    lb, loss_b = logits_and_loss(before, ids)
    del before
    after = load_fp32(out)
    la, loss_a = logits_and_loss(after, ids)
    return {
        "max_abs_logit_diff": float((la - lb).abs().max()),
        "loss_before": round(loss_b, 6),
        "loss_after": round(loss_a, 6),
        "check_tokens": int(ids.numel()),
    }

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


# |logit difference| a function-preserving growth may show, relative to the source's largest
# |logit|, by the dtype the grown weights are stored in: fp32 rounding of rescaled weights and
# reordered sums, or the rounding of rescaled norm/weight values to 16 bits.
RELATIVE_TOLERANCE = {torch.float32: 1e-4, torch.bfloat16: 2e-2, torch.float16: 4e-3}


def compare_logits(src: Path, out: Path, stored: torch.dtype = torch.float32) -> dict[str, Any]:
    """Max |logit difference| (both models in float32) and the loss before and after growth,
    with the verdict: within the tolerance of the dtype the grown weights are stored in."""
    before = load_fp32(src)
    ids = sample_tokens(src, before.config.vocab_size)
    lb, loss_b = logits_and_loss(before, ids)
    del before
    after = load_fp32(out)
    la, loss_a = logits_and_loss(after, ids)
    diff = float((la - lb).abs().max())
    tol = RELATIVE_TOLERANCE.get(stored, 2e-2) * max(1.0, float(lb.abs().max()))
    return {
        "max_abs_logit_diff": diff,
        "check_tolerance": tol,
        "check_within_tolerance": diff <= tol,
        "check_dtype": str(stored).removeprefix("torch."),
        "loss_before": round(loss_b, 6),
        "loss_after": round(loss_a, 6),
        "check_tokens": int(ids.numel()),
    }

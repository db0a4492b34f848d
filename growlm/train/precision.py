"""``run.precision``: bf16 autocast, fp32, or ``auto`` (chosen per stage from the model's width).

On CPU, small models run faster in fp32: below a crossover width the casts that bf16 autocast
adds cost more than its cheaper matmuls save. bench/results/small_model_speed.json measures
training tokens/s by width in both precisions; ``auto`` takes fp32 below ``AUTO_BF16_MIN_WIDTH``
and bf16 from it on, and bf16 on CUDA (where bf16 matmuls are the fast path at every width).
"""

from __future__ import annotations

from typing import Any

import torch

# bench/results/small_model_speed.json (4-layer Llama, sequences of 128, batches of 32, 2 CPU
# threads, shared machine): fp32 trained 1.7x to 2.2x faster than bf16 at widths 48, 64 and 96,
# and no width was measured with bf16 faster; 192 is the narrowest width never measured
# fp32-faster (issue 19's idle runs at sequences of 256 had bf16 ahead at 96 and 256). Re-measure
# on an idle machine and move this when the crossover is seen.
AUTO_BF16_MIN_WIDTH = 192


def model_width(config: Any) -> int:
    """The residual stream's width of an HF config (hidden_size, or GPT-2's n_embd)."""
    for key in ("hidden_size", "n_embd", "d_model"):
        value = getattr(config, key, None)
        if isinstance(value, int):
            return value
    return 0


def resolve_precision(precision: str, config: Any, device_type: str = "cpu") -> str:
    """``bf16`` or ``fp32`` for this model: the recipe's choice, or the ``auto`` rule."""
    if precision != "auto":
        return precision
    if device_type == "cuda" or model_width(config) >= AUTO_BF16_MIN_WIDTH:
        return "bf16"
    return "fp32"


def autocast_dtype(precision: str, config: Any, device_type: str = "cpu") -> torch.dtype | None:
    """The autocast dtype of a stage (None: plain fp32)."""
    resolved = resolve_precision(precision, config, device_type)
    return torch.bfloat16 if resolved == "bf16" else None

"""Dtype names as users write them: ``bf16`` and ``bfloat16`` (and fp32/float32, fp16/float16)
mean the same everywhere, in ``growlm grow --dtype`` as in a recipe's ``run.precision``."""

from __future__ import annotations

SPELLINGS = {
    "float32": "float32",
    "fp32": "float32",
    "bfloat16": "bfloat16",
    "bf16": "bfloat16",
    "float16": "float16",
    "fp16": "float16",
}
SHORT = {"float32": "fp32", "bfloat16": "bf16", "float16": "fp16"}


def long_name(name: str) -> str:
    """``bf16`` -> ``bfloat16``; a name that is no dtype comes back unchanged."""
    return SPELLINGS.get(name, name)


def short_name(name: str) -> str:
    """``bfloat16`` -> ``bf16``; a name that is no dtype comes back unchanged."""
    return SHORT.get(SPELLINGS.get(name, ""), name)

"""TokenFormer's config: a module of its own, light enough to register with ``AutoConfig`` while
transformers is still importing its auto classes (growlm/_register.py)."""

from __future__ import annotations

import contextlib
from typing import Any

from transformers import PretrainedConfig


class TokenFormerConfig(PretrainedConfig):
    """Sizes of a TokenFormer; ``*_slot_num`` are the parameter-token counts P of the q/k/v,
    attention-output and FFN Pattention layers (the names of the official code)."""

    model_type = "tokenformer"

    def __init__(
        self,
        vocab_size: int = 50304,
        hidden_size: int = 768,
        num_hidden_layers: int = 12,
        num_attention_heads: int = 12,
        qkv_slot_num: int = 768,
        proj_slot_num: int = 768,
        ffn_slot_num: int = 3072,
        rotary_pct: float = 0.25,
        rope_theta: float = 10000.0,
        max_position_embeddings: int = 2048,
        layer_norm_eps: float = 1e-5,
        initializer_range: float = 0.02,
        tie_word_embeddings: bool = False,
        **kwargs: Any,
    ) -> None:
        self.vocab_size = vocab_size
        self.hidden_size = hidden_size
        self.num_hidden_layers = num_hidden_layers
        self.num_attention_heads = num_attention_heads
        self.qkv_slot_num = qkv_slot_num
        self.proj_slot_num = proj_slot_num
        self.ffn_slot_num = ffn_slot_num
        self.rotary_pct = rotary_pct
        self.rope_theta = rope_theta
        self.max_position_embeddings = max_position_embeddings
        self.layer_norm_eps = layer_norm_eps
        self.initializer_range = initializer_range
        if hidden_size % num_attention_heads:
            raise ValueError(
                f"hidden_size {hidden_size} is not divisible by num_attention_heads "
                f"{num_attention_heads}"
            )
        super().__init__(tie_word_embeddings=tie_word_embeddings, **kwargs)  # type: ignore[call-arg]


def register() -> None:
    """Make ``AutoConfig`` know ``model_type: tokenformer``."""
    from transformers import AutoConfig

    with contextlib.suppress(ValueError):  # already registered (a reload of growlm)
        AutoConfig.register("tokenformer", TokenFormerConfig)

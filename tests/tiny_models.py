"""Tiny random models of every supported family, built by transformers itself."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

V = 128
BASE: dict[str, Any] = dict(vocab_size=V, bos_token_id=1, eos_token_id=2, pad_token_id=0)
LLAMA_LIKE = dict(
    num_hidden_layers=3,
    hidden_size=32,
    num_attention_heads=4,
    num_key_value_heads=2,
    intermediate_size=48,
    head_dim=8,
    max_position_embeddings=128,
)

CONFIGS: dict[str, dict[str, Any]] = {
    "llama": dict(LLAMA_LIKE, tie_word_embeddings=False),
    "llama-tied": dict(LLAMA_LIKE, tie_word_embeddings=True, model_type="llama"),
    "mistral": dict(LLAMA_LIKE, sliding_window=16),
    "qwen2": dict(LLAMA_LIKE, use_sliding_window=True, sliding_window=16, max_window_layers=2),
    "qwen3": dict(LLAMA_LIKE),
    "gemma2": dict(LLAMA_LIKE, num_hidden_layers=4, sliding_window=16, query_pre_attn_scalar=8),
    "gemma3_text": dict(
        LLAMA_LIKE, num_hidden_layers=4, sliding_window=16, query_pre_attn_scalar=8
    ),
    "phi3": dict(LLAMA_LIKE, num_key_value_heads=2),
    "olmo2": dict(LLAMA_LIKE),
    "gpt2": dict(n_layer=3, n_embd=32, n_head=4, n_positions=128),
    "gpt_neox": dict(
        num_hidden_layers=3,
        hidden_size=32,
        num_attention_heads=4,
        intermediate_size=48,
        max_position_embeddings=128,
    ),
}
# growlm's own families (growlm/models): tested in their own files, not by every family test
OWN: dict[str, dict[str, Any]] = {
    "tokenformer": dict(
        num_hidden_layers=3,
        hidden_size=32,
        num_attention_heads=4,
        qkv_slot_num=24,
        proj_slot_num=16,
        ffn_slot_num=64,
        max_position_embeddings=128,
    ),
}
FAMILIES = sorted(CONFIGS)

# recipes/tiny.yaml as a 2-layer TokenFormer (hidden 32) whose second stage grows by
# param-tokens: the ``--set`` items the training tests add for that family
TOKENFORMER_SETS = [
    "model.type=tokenformer",
    "model.config={hidden_size: 32, num_hidden_layers: 2, num_attention_heads: 4, "
    "qkv_slot_num: 16, proj_slot_num: 16, ffn_slot_num: 32, max_position_embeddings: 256}",
    "stages.grown.grow={op: param-tokens, new_tokens: 8}",
]


def make_model(family: str, seed: int = 0):
    from transformers import AutoConfig, AutoModelForCausalLM

    import growlm.models  # noqa: F401  (registers growlm's own families)

    kw = dict(CONFIGS[family] if family in CONFIGS else OWN[family])
    model_type = kw.pop("model_type", family)
    cfg = AutoConfig.for_model(model_type, **BASE, **kw)
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(cfg, dtype=torch.float32)
    # Norm weights at init are all ones/zeros; randomise them so norm handling is really tested.
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() == 1:
                p.add_(torch.randn_like(p) * 0.1)
    return model.eval()


def save_model(family: str, path: Path, seed: int = 0, **save_kw: Any) -> Path:
    model = make_model(family, seed)
    model.save_pretrained(str(path), **save_kw)
    return path

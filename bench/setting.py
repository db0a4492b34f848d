"""The CPU reference setting shared by bench/reference_gstack.py and bench/operator_table.py:
a Llama target of 8 layers, hidden 256, ffn 688, 4 heads of 64, on the embedded Shakespeare
corpus with a 2048-token byte-level BPE, sequences of 128 tokens, batches of 32."""

from __future__ import annotations

from typing import Any

STEP = 32 * 128  # tokens per optimizer step
VOCAB = 2048
TARGET: dict[str, Any] = {
    "hidden_size": 256,
    "intermediate_size": 688,
    "num_hidden_layers": 8,
    "num_attention_heads": 4,
    "max_position_embeddings": 128,
    "tie_word_embeddings": False,
}


def model(**overrides: Any) -> dict[str, Any]:
    """The target's Llama config with ``overrides`` (kv heads follow the heads: no GQA)."""
    config = {**TARGET, **overrides}
    config["num_key_value_heads"] = config["num_attention_heads"]
    return {"type": "llama", "config": config}


def common(seed: int, threads: int, lr: float = 1.0e-3) -> dict[str, Any]:
    """Data, optimisation and run sections of every recipe of the setting."""
    return {
        "seed": seed,
        "data": {
            "sources": ["default"],
            "vocab_size": VOCAB,
            "val_fraction": 0.02,
            "block_tokens": 1024,
            "seq_len": 128,
        },
        "optim": {
            "lr": lr,
            "min_lr_ratio": 0.1,
            "warmup_steps": 30,
            "betas": [0.9, 0.95],
            "weight_decay": 0.1,
            "grad_clip": 1.0,
            "micro_batch_size": 32,
            "grad_accum": 1,
        },
        "run": {
            "precision": "bf16",
            "threads": threads,
            "eval_every": 20,
            "eval_sequences": 64,
            "checkpoint_every": 100,
            "keep_checkpoints": 1,
            "progress": False,
        },
    }


def n_params(model_section: dict[str, Any]) -> int:
    """N of C = 6 N D for a model section (untied head counted)."""
    from growlm.analysis.params import ModelSpec, count_params

    return count_params(ModelSpec("llama", {**model_section["config"], "vocab_size": VOCAB}))

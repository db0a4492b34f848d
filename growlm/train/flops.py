"""FLOPs per trained token, the compute axis of every metrics record (and so of every
comparison): the paper's C = 6 N D on the parameters a token uses, with attention's score and
value products kept apart (``attn_flops``)."""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn
from transformers import PretrainedConfig

from growlm.models.templates import dense_params
from growlm.train.model import param_count
from growlm.train.moe import active_params


@dataclass(frozen=True)
class TokenFlops:
    """Training FLOPs per token, forward + backward: the model's (6 N) and attention's."""

    model: float
    attention: float


def token_flops(
    model: nn.Module, config: PretrainedConfig, seq_len: int, frozen: bool = False
) -> TokenFlops:
    """The FLOPs per token of training ``model`` (unwrapped) on ``seq_len`` windows. N counts the
    parameters a token uses (an MoE: the top-k experts). With ``frozen`` layers (MSLT) there are
    no weight gradients for frozen parameters (2 N_trainable), and activation gradients stop at
    the lowest trainable layer (2 N_trainable) unless a tied head makes the embedding trainable
    (then 2 N): 2 N + 2 N_trainable + 2 N_trainable (or 2 N) instead of 6 N."""
    attention = attention_flops_per_token(config, seq_len)
    if not frozen:
        # MoE: the top-k experts; templates: the mixed weights the matmuls use
        n_used = dense_params(model, active_params(model, config))
        return TokenFlops(model_flops_per_token(n_used), attention)
    n_params = param_count(model)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    tied = bool(getattr(config, "tie_word_embeddings", False))
    flops = 2.0 * n_params + 2.0 * trainable + 2.0 * (n_params if tied else trainable)
    return TokenFlops(flops, attention)


def model_flops_per_token(n_params: int) -> float:
    """The paper's compute convention: C = 6 * N * D."""
    return 6.0 * n_params


def attention_flops_per_token(config: PretrainedConfig, seq_len: int) -> float:
    """Attention score and value FLOPs per trained token, forward + backward:
    12 * layers * seq_len * (heads * head_dim) (PaLM appendix B; no causal discount)."""
    layers = int(config.num_hidden_layers)
    heads = int(config.num_attention_heads)
    head_dim = int(getattr(config, "head_dim", None) or config.hidden_size // heads)
    return 12.0 * layers * seq_len * heads * head_dim

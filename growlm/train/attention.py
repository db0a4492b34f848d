"""Causal attention for CPU training: PyTorch's flash forward, a recomputing backward.

On CPU, the backward of ``scaled_dot_product_attention``'s flash kernel costs ~7x its forward
(34 ms vs 5 ms for [8, 8, 256, 64] bf16 on 2 cores, 2026-11-30), a fifth of a training step of
a 12-layer model. This implementation keeps the flash forward (it saves the row log-sum-exp)
and computes the backward from the softmax recomputed with that log-sum-exp, as matmuls plus
two elementwise passes:

    P = exp(s QK^T - lse)            dV = P^T dO        dP = dO V^T
    dS = P * (dP - rowsum(dO * O))   dQ = s dS K        dK = s dS^T Q

Compiled by ``torch.compile`` (``run.compile: true``) the elementwise passes fuse and the
backward takes ~16 ms; run eagerly it is slower than the flash kernel's, so the trainer only
picks it for compiled CPU runs (``model.attn_implementation: auto``).

It is registered with transformers' attention interface as ``growlm_cpu``, with SDPA's mask
function: a model gets exactly the masks SDPA would, and every call the fast path does not cover
(a mask, dropout, soft-capping, attention sinks, a query shorter than the keys, a GPU tensor) is
handed to transformers' SDPA attention unchanged. Plain causal attention gets no mask only when
the mask is built outside ``torch.compile`` (traced, transformers cannot rule out packed
sequences and builds a [B, 1, T, T] mask): the trainer compiles the decoder blocks one by one,
not the whole model, for this reason (see ``growlm.train.model.compile_blocks``).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

NAME = "growlm_cpu"


class _CausalAttention(torch.autograd.Function):
    """Causal attention over [B, H, T, D] tensors of one dtype; returns [B, H, T, D]."""

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float
    ) -> torch.Tensor:
        out, lse = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu(
            q, k, v, 0.0, True, scale=scale
        )
        ctx.save_for_backward(q, k, v, out, lse)
        ctx.scale = scale
        return out

    @staticmethod
    def backward(ctx: Any, grad_out: torch.Tensor) -> tuple[torch.Tensor | None, ...]:  # type: ignore[override]
        q, k, v, out, lse = ctx.saved_tensors
        scale = ctx.scale
        t = q.shape[-2]
        causal = torch.ones(t, t, dtype=torch.bool, device=q.device).tril()
        scores = torch.matmul(q, k.transpose(-1, -2)).float() * scale
        probs = torch.exp(scores - lse.unsqueeze(-1)).masked_fill(~causal, 0.0)  # fp32 [B,H,T,T]
        grad_v = torch.matmul(probs.to(q.dtype).transpose(-1, -2), grad_out)
        grad_probs = torch.matmul(grad_out, v.transpose(-1, -2)).float()
        delta = (grad_out.float() * out.float()).sum(-1, keepdim=True)
        grad_scores = (probs * (grad_probs - delta)).to(q.dtype)
        grad_q = torch.matmul(grad_scores, k) * scale
        grad_k = torch.matmul(grad_scores.transpose(-1, -2), q) * scale
        return grad_q, grad_k, grad_v, None


def causal_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float | None = None
) -> torch.Tensor:
    """Causal attention of [B, H, T, D] query, key and value (same heads, same length)."""
    if scale is None:
        scale = q.shape[-1] ** -0.5
    out: torch.Tensor = _CausalAttention.apply(q, k, v, scale)
    return out


def _covered(
    query: torch.Tensor,
    key: torch.Tensor,
    attention_mask: torch.Tensor | None,
    dropout: float,
    kwargs: dict[str, Any],
) -> bool:
    return (
        query.device.type == "cpu"
        and attention_mask is None
        and not dropout
        and query.shape[2] == key.shape[2]
        and query.shape[2] > 1
        and kwargs.get("softcap") is None
        and kwargs.get("s_aux") is None
        and kwargs.get("position_bias") is None
        and kwargs.get("is_causal") is not False
        and not kwargs.get("output_attentions", False)
    )


def attention_forward(
    module: nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    dropout: float = 0.0,
    scaling: float | None = None,
    **kwargs: Any,
) -> tuple[torch.Tensor, None]:
    """transformers' attention-interface signature: [B, H, T, D] in, [B, T, H, D] out."""
    from transformers.integrations.sdpa_attention import repeat_kv, sdpa_attention_forward

    if not getattr(module, "is_causal", True) or not _covered(
        query, key, attention_mask, dropout, kwargs
    ):
        return sdpa_attention_forward(  # type: ignore[no-any-return]
            module, query, key, value, attention_mask, dropout=dropout, scaling=scaling, **kwargs
        )
    groups = getattr(module, "num_key_value_groups", 1)
    if groups > 1:
        key, value = repeat_kv(key, groups), repeat_kv(value, groups)
    # under autocast, RoPE's fp32 cos/sin can promote q and k: SDPA is an autocast op that
    # casts all three to the autocast dtype, so do the same
    dtype = value.dtype
    if torch.is_autocast_enabled(query.device.type):
        dtype = torch.get_autocast_dtype(query.device.type)
    out = causal_attention(query.to(dtype), key.to(dtype), value.to(dtype), scaling)
    return out.transpose(1, 2).contiguous(), None


def register() -> None:
    """Make ``attn_implementation="growlm_cpu"`` known to transformers (idempotent)."""
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

    AttentionInterface.register(NAME, attention_forward)
    AttentionMaskInterface.register(NAME, sdpa_mask)


def resolve(name: str, config: Any, device: torch.device, compiled: bool) -> str | None:
    """The implementation to build ``config``'s model with for ``model.attn_implementation``.
    ``auto``: ``growlm_cpu`` for compiled CPU runs of families that support SDPA (there its
    backward is ~2x faster than SDPA's), ``sdpa`` elsewhere, and transformers' own default
    (None) for families without SDPA (Gemma-2's soft-capping)."""
    if name == "auto":
        from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING

        model_class = MODEL_FOR_CAUSAL_LM_MAPPING.get(type(config), None)
        if model_class is None or not getattr(model_class, "_supports_sdpa", False):
            return None
        name = NAME if device.type == "cpu" and compiled else "sdpa"
    if name == NAME:
        register()
    return name

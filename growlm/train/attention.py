"""Causal attention for CPU training: PyTorch's flash forward, a recomputing backward.

On CPU, the backward of ``scaled_dot_product_attention``'s flash kernel costs ~7x its forward
(``python bench/attention_cpu.py`` times both). This implementation keeps the flash forward (it
saves the row log-sum-exp) and computes the backward from the softmax recomputed with that
log-sum-exp, in blocks of ``BLOCK`` query rows that see only the keys up to their own end, as
matmuls plus two elementwise passes:

    P = exp(s QK^T - lse)            dV = P^T dO        dP = dO V^T
    dS = P * (dP - rowsum(dO * O))   dQ = s dS K        dK = s dS^T Q

Compiled by ``torch.compile`` (``run.compile: true``) the elementwise passes fuse; run eagerly
the backward is slower than the flash kernel's. It materialises fp32 [BLOCK, T] score blocks, so
it loses to the flash kernel at long sequences: forward + backward vs SDPA, both compiled,
[8, 8, T, 64] bf16, was 3.2x faster at T = 128, 1.44x at 256, 1.32x at 512 and 0.79x at 1024
(``python bench/attention_cpu.py --lengths 128 256 512 1024``, bench/results/attention_cpu.json).
``model.attn_implementation: auto`` therefore picks it only for compiled CPU runs with
``data.seq_len <= MAX_AUTO_SEQ``.

It is registered with transformers' attention interface as ``growlm_cpu``, with SDPA's mask
function: a model gets exactly the masks SDPA would, and every call the fast path does not cover
(a mask, dropout, soft-capping, attention sinks, a query shorter than the keys, value heads of
another size than query heads as in DeepSeek-V3, a GPU tensor) is handed to transformers' SDPA
attention unchanged. Plain causal attention gets no mask only when
the mask is built outside ``torch.compile`` (traced, transformers cannot rule out packed
sequences and builds a [B, 1, T, T] mask): the trainer compiles the decoder blocks one by one,
not the whole model, for this reason (see ``growlm.train.model.compile_blocks``).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

NAME = "growlm_cpu"
BLOCK = 128  # query rows per backward block (64 and 256 were slower at T = 256..1024)
MAX_AUTO_SEQ = 512  # auto picks growlm_cpu up to here (bench/attention_cpu.py: slower at 1024)


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
        scale, t = ctx.scale, q.shape[-2]
        delta = (grad_out.float() * out.float()).sum(-1, keepdim=True)  # rowsum(dO * O)
        grad_k = torch.zeros(k.shape, dtype=torch.float32, device=k.device)
        grad_v = torch.zeros(v.shape, dtype=torch.float32, device=v.device)
        grad_q = []
        # query blocks see keys up to their own end: the upper causal triangle is never built
        for a in range(0, t, BLOCK):
            b = min(a + BLOCK, t)
            q_blk, go_blk, k_seen, v_seen = (
                q[..., a:b, :],
                grad_out[..., a:b, :],
                k[..., :b, :],
                v[..., :b, :],
            )
            causal = torch.ones(b - a, b, dtype=torch.bool, device=q.device).tril(a)
            scores = torch.matmul(q_blk, k_seen.transpose(-1, -2)).float() * scale
            probs = torch.exp(scores - lse[..., a:b].unsqueeze(-1)).masked_fill(~causal, 0.0)
            grad_v[..., :b, :] += torch.matmul(probs.to(q.dtype).transpose(-1, -2), go_blk)
            grad_probs = torch.matmul(go_blk, v_seen.transpose(-1, -2)).float()
            # the softmax scale is folded in before the bf16 cast: one rounding, not two
            grad_scores = (probs * (grad_probs - delta[..., a:b, :]) * scale).to(q.dtype)
            grad_q.append(torch.matmul(grad_scores, k_seen))
            grad_k[..., :b, :] += torch.matmul(grad_scores.transpose(-1, -2), q_blk)
        return torch.cat(grad_q, dim=-2), grad_k.to(k.dtype), grad_v.to(v.dtype), None


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
    value: torch.Tensor,
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
        and query.shape[-1] == key.shape[-1] == value.shape[-1]  # the flash kernel's rule
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
        query, key, value, attention_mask, dropout, kwargs
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


def resolve(
    name: str, config: Any, device: torch.device, compiled: bool, seq_len: int = 0
) -> str | None:
    """The implementation to build ``config``'s model with for ``model.attn_implementation``.
    ``auto``: ``growlm_cpu`` for compiled CPU runs of families that support SDPA, with
    sequences up to ``MAX_AUTO_SEQ``; ``sdpa`` elsewhere; transformers' own default (None) for
    families without SDPA (Gemma-2's soft-capping)."""
    if name == "auto":
        from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING

        model_class = MODEL_FOR_CAUSAL_LM_MAPPING.get(type(config), None)
        if model_class is None or not getattr(model_class, "_supports_sdpa", False):
            return None
        fast = device.type == "cpu" and compiled and 0 < seq_len <= MAX_AUTO_SEQ
        name = NAME if fast else "sdpa"
    if name == NAME:
        register()
    return name

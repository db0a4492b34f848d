"""TokenFormer (Wang et al. 2024, "Rethinking Transformer Scaling with Tokenized Model
Parameters", arXiv 2410.23168) as a native transformers model (no remote code).

Every projection of a pre-norm decoder (query, key, value, attention output and the whole FFN)
is a Pattention layer: the input tokens are queries, and P learnable parameter tokens are the
keys K [P, d_in] and values V [P, d_out]:

    A = x K^T                                   # [..., P], no 1/sqrt(d) scale
    S = GeLU(A * sqrt(P) / ||A||_2)             # "l2_norm_gelu": the official default score
    out = S V                                   # [..., d_out]

Attention between tokens stays causal softmax attention over heads (rotary on the first
``rotary_pct`` of each head, GPT-NeoX style); LayerNorms with bias; sequential residuals; an
untied head by default. The layout follows the official code (Haiyang-W/TokenFormer), read as
reference; its released checkpoints convert exactly (``tokenformer_convert.py``).
"""

from __future__ import annotations

import contextlib
import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from transformers import GenerationMixin, PreTrainedModel
from transformers.modeling_outputs import CausalLMOutputWithPast

from growlm.models.tokenformer_config import TokenFormerConfig

SCORE_EPS = 1e-12  # floor of ||A||_2 (an all-zero input row would divide 0 by 0)


def pattention_scores(x: torch.Tensor, keys: torch.Tensor) -> torch.Tensor:
    """S = GeLU(A sqrt(P) / ||A||_2), A = x K^T: [..., d_in] x [P, d_in] -> [..., P]."""
    a = x @ keys.transpose(0, 1)  # [..., P]
    af = a.to(torch.promote_types(a.dtype, torch.float32))  # the norm in >= fp32 (bf16 runs)
    norm = af.norm(p=2, dim=-1, keepdim=True).clamp(min=SCORE_EPS)
    return F.gelu((af * math.sqrt(keys.shape[0]) / norm).to(a.dtype))


class Pattention(nn.Module):
    """Token-parameter attention: the input attends to P key/value parameter tokens."""

    def __init__(self, d_in: int, d_out: int, tokens: int) -> None:
        super().__init__()
        self.key_param_tokens = nn.Parameter(torch.empty(tokens, d_in))
        self.value_param_tokens = nn.Parameter(torch.empty(tokens, d_out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return pattention_scores(x, self.key_param_tokens) @ self.value_param_tokens


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    a, b = x.chunk(2, dim=-1)
    return torch.cat((-b, a), dim=-1)


class TokenFormerAttention(nn.Module):
    def __init__(self, config: TokenFormerConfig) -> None:
        super().__init__()
        h, p = config.hidden_size, config.qkv_slot_num
        self.heads = config.num_attention_heads
        self.head_dim = h // self.heads
        self.rot = int(self.head_dim * config.rotary_pct) // 2 * 2
        self.theta = config.rope_theta
        self.query = Pattention(h, h, p)
        self.key = Pattention(h, h, p)
        self.value = Pattention(h, h, p)
        self.proj = Pattention(h, h, config.proj_slot_num)

    def _rope(self, x: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        if self.rot == 0:
            return x
        inv = 1.0 / self.theta ** (torch.arange(0, self.rot, 2, device=x.device) / self.rot)
        ang = pos[:, None].float() * inv[None, :]  # [T, rot/2]
        cos, sin = torch.cat((ang, ang), -1).cos(), torch.cat((ang, ang), -1).sin()
        r, rest = x[..., : self.rot], x[..., self.rot :]
        r = r.to(torch.promote_types(r.dtype, torch.float32))  # bf16 rotated in fp32
        r = (r * cos + _rotate_half(r) * sin).to(x.dtype)
        return torch.cat((r, rest), dim=-1)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        b, t, _ = x.shape
        pos = torch.arange(t, device=x.device)

        def heads(y: torch.Tensor) -> torch.Tensor:
            return y.view(b, t, self.heads, self.head_dim).transpose(1, 2)  # [B, nh, T, hd]

        q = self._rope(heads(self.query(x)), pos)
        k = self._rope(heads(self.key(x)), pos)
        v = heads(self.value(x))
        if mask is None:
            o = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        else:
            o = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        return self.proj(o.transpose(1, 2).reshape(b, t, -1))  # [B, T, H]


class TokenFormerLayer(nn.Module):
    def __init__(self, config: TokenFormerConfig) -> None:
        super().__init__()
        h = config.hidden_size
        self.input_layernorm = nn.LayerNorm(h, eps=config.layer_norm_eps)
        self.attention = TokenFormerAttention(config)
        self.post_attention_layernorm = nn.LayerNorm(h, eps=config.layer_norm_eps)
        self.mlp = Pattention(h, h, config.ffn_slot_num)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        x = x + self.attention(self.input_layernorm(x), mask)
        return x + self.mlp(self.post_attention_layernorm(x))


class TokenFormerPreTrainedModel(PreTrainedModel):
    config_class = TokenFormerConfig
    base_model_prefix = "model"
    _no_split_modules = ["TokenFormerLayer"]  # noqa: RUF012 (transformers class attribute)

    def _init_weights(self, module: nn.Module) -> None:
        from transformers import initialization as init

        std = self.config.initializer_range
        if isinstance(module, Pattention):
            # residual writers (attention output, FFN) scaled as GPT-2 / NeoX: std / sqrt(2 L)
            layers = self.config.num_hidden_layers
            init.normal_(module.key_param_tokens, mean=0.0, std=std)
            init.normal_(module.value_param_tokens, mean=0.0, std=std / math.sqrt(2 * layers))
        elif isinstance(module, nn.Embedding | nn.Linear):
            init.normal_(module.weight, mean=0.0, std=std)
        elif isinstance(module, nn.LayerNorm):
            init.ones_(module.weight)
            init.zeros_(module.bias)


class TokenFormerModel(TokenFormerPreTrainedModel):
    def __init__(self, config: TokenFormerConfig) -> None:
        super().__init__(config)
        self.embed_tokens = nn.Embedding(config.vocab_size, config.hidden_size)
        self.layers = nn.ModuleList(
            TokenFormerLayer(config) for _ in range(config.num_hidden_layers)
        )
        self.norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.post_init()

    def get_input_embeddings(self) -> nn.Module:
        return self.embed_tokens

    def set_input_embeddings(self, value: nn.Module) -> None:
        self.embed_tokens = value  # type: ignore[assignment]

    def forward(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        x = self.embed_tokens(input_ids)  # [B, T, H]
        mask = None
        if attention_mask is not None and not bool(attention_mask.all()):
            t = input_ids.shape[1]
            causal = torch.ones(t, t, dtype=torch.bool, device=x.device).tril()
            mask = causal[None, None] & attention_mask.bool()[:, None, None, :]  # [B, 1, T, T]
        for layer in self.layers:
            x = layer(x, mask)
        return self.norm(x)


class TokenFormerForCausalLM(TokenFormerPreTrainedModel, GenerationMixin):
    _tied_weights_keys = {"lm_head.weight": "model.embed_tokens.weight"}  # noqa: RUF012

    def __init__(self, config: TokenFormerConfig) -> None:
        super().__init__(config)
        self.model = TokenFormerModel(config)
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        self.post_init()

    def get_input_embeddings(self) -> nn.Module:
        return self.model.embed_tokens

    def get_output_embeddings(self) -> nn.Module:
        return self.lm_head

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        **kwargs: Any,
    ) -> CausalLMOutputWithPast:
        """Logits [B, T, V]; with ``labels``, the mean next-token loss (labels shifted here)."""
        logits = self.lm_head(self.model(input_ids, attention_mask))
        loss = None
        if labels is not None:
            loss = F.cross_entropy(
                logits[:, :-1].float().flatten(0, 1), labels[:, 1:].flatten(), ignore_index=-100
            )
        return CausalLMOutputWithPast(loss=loss, logits=logits)

    def prepare_inputs_for_generation(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None, **kwargs: Any
    ) -> dict[str, Any]:
        return {"input_ids": input_ids, "attention_mask": attention_mask}  # no KV cache


def register() -> None:
    """Make ``AutoModelForCausalLM`` know ``model_type: tokenformer`` (growlm/_register.py)."""
    from transformers import AutoModelForCausalLM

    with contextlib.suppress(ValueError):  # already registered (a reload of growlm)
        AutoModelForCausalLM.register(TokenFormerConfig, TokenFormerForCausalLM)

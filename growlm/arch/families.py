"""The supported Hugging Face causal-LM families, one spec each (data, no code paths)."""

from __future__ import annotations

from dataclasses import replace

from growlm.arch.spec import ArchSpec, ConfigKeys, TensorSpec, t

BUFFERS = (
    ".rotary_emb.inv_freq",
    ".attn.bias",
    ".attn.masked_bias",
    ".attention.bias",
    ".attention.masked_bias",
)


def _attn_llama(bias: bool = True) -> tuple[TensorSpec, ...]:
    return (
        t("self_attn.q_proj.weight", "out:q", "in:hidden"),
        t("self_attn.q_proj.bias", "out:q", role="bias", optional=bias),
        t("self_attn.k_proj.weight", "out:kv", "in:hidden"),
        t("self_attn.k_proj.bias", "out:kv", role="bias", optional=bias),
        t("self_attn.v_proj.weight", "out:kv", "in:hidden"),
        t("self_attn.v_proj.bias", "out:kv", role="bias", optional=bias),
        t("self_attn.o_proj.weight", "out:hidden", "in:q", zero=True),
        t("self_attn.o_proj.bias", "out:hidden", role="bias", zero=True, optional=True),
    )


def _mlp_llama() -> tuple[TensorSpec, ...]:
    return (
        t("mlp.gate_proj.weight", "out:ffn", "in:hidden"),
        t("mlp.gate_proj.bias", "out:ffn", role="bias", optional=True),
        t("mlp.up_proj.weight", "out:ffn", "in:hidden"),
        t("mlp.up_proj.bias", "out:ffn", role="bias", optional=True),
        t("mlp.down_proj.weight", "out:hidden", "in:ffn", zero=True),
        t("mlp.down_proj.bias", "out:hidden", role="bias", zero=True, optional=True),
    )


def _norm(name: str, axis: str = "norm:hidden") -> TensorSpec:
    return t(name, axis, role="norm")


_PRE_NORMS = (_norm("input_layernorm.weight"), _norm("post_attention_layernorm.weight"))
_QK_HEAD_NORMS = (
    _norm("self_attn.q_norm.weight", "norm:head"),
    _norm("self_attn.k_norm.weight", "norm:head"),
)
_EMBED = t("model.embed_tokens.weight", "out:vocab", "out:hidden", role="embed")
_FINAL = (_norm("model.norm.weight"),)
_HEAD = t("lm_head.weight", "out:vocab", "in:hidden")
_LAYERS = "model.layers.{i}."

# Llama's names and global tensors; the families after it that share them are replace()s of it
LLAMA = ArchSpec(
    name="llama",
    model_types=("llama",),
    layer_prefix=_LAYERS,
    layer_tensors=(*_attn_llama(), *_mlp_llama(), *_PRE_NORMS),
    embed=_EMBED,
    final_norm=_FINAL,
    head=_HEAD,
    notes="Llama 1/2/3, SmolLM, TinyLlama and other LlamaForCausalLM checkpoints.",
)

MISTRAL = replace(LLAMA, name="mistral", model_types=("mistral",), notes="as Llama.")

QWEN2 = replace(
    LLAMA,
    name="qwen2",
    model_types=("qwen2",),
    layer_tensors=(*_attn_llama(bias=False), *_mlp_llama(), *_PRE_NORMS),
    keys=ConfigKeys(per_layer=("layer_types",)),
    notes="q/k/v biases; layer_types and max_window_layers follow the layers.",
)

QWEN3 = replace(
    LLAMA,
    name="qwen3",
    model_types=("qwen3",),
    layer_tensors=(*_attn_llama(), *_QK_HEAD_NORMS, *_mlp_llama(), *_PRE_NORMS),
    keys=ConfigKeys(per_layer=("layer_types",)),
    notes="per-head q/k RMSNorm; layer_types follow the layers.",
)

_GEMMA_NORMS = (
    _norm("input_layernorm.weight"),
    _norm("post_attention_layernorm.weight"),
    _norm("pre_feedforward_layernorm.weight"),
    _norm("post_feedforward_layernorm.weight"),
)

GEMMA2 = replace(
    LLAMA,
    name="gemma2",
    model_types=("gemma2",),
    layer_tensors=(*_attn_llama(), *_mlp_llama(), *_GEMMA_NORMS),
    keys=ConfigKeys(per_layer=("layer_types",)),
    norm_offset=1.0,
    embed_scale_sqrt_hidden=True,
    tie_default=True,
    notes="norms apply 1 + w; embeddings scaled by sqrt(hidden); sliding/global layer_types.",
)

GEMMA3 = replace(
    GEMMA2,
    name="gemma3",
    model_types=("gemma3_text",),
    layer_tensors=(*_attn_llama(), *_QK_HEAD_NORMS, *_mlp_llama(), *_GEMMA_NORMS),
    notes="Gemma 3 text models (Gemma3ForCausalLM); as Gemma 2 plus per-head q/k norms.",
)

PHI3 = replace(
    LLAMA,
    name="phi3",
    model_types=("phi3",),
    layer_tensors=(
        t("self_attn.qkv_proj.weight", "out:qkv", "in:hidden"),
        t("self_attn.o_proj.weight", "out:hidden", "in:q", zero=True),
        t("mlp.gate_up_proj.weight", "out:ffn2", "in:hidden"),
        t("mlp.down_proj.weight", "out:hidden", "in:ffn", zero=True),
        *_PRE_NORMS,
    ),
    notes="fused qkv_proj ([q; k; v]) and gate_up_proj ([gate; up]).",
)

OLMO2 = replace(
    LLAMA,
    name="olmo2",
    model_types=("olmo2",),
    layer_tensors=(
        *_attn_llama(),
        _norm("self_attn.q_norm.weight", "norm:q"),
        _norm("self_attn.k_norm.weight", "norm:kv"),
        *_mlp_llama(),
        _norm("post_attention_layernorm.weight"),
        _norm("post_feedforward_layernorm.weight"),
    ),
    normed_width_axes=("q", "kv"),
    notes="post-norms on block outputs; q/k RMSNorm over all heads at once.",
)

_GPT2_LAYER = (
    t("ln_1.weight", "norm:hidden", role="norm"),
    t("ln_1.bias", "norm:hidden", role="norm_bias"),
    t("attn.c_attn.weight", "in:hidden", "out:qkv"),
    t("attn.c_attn.bias", "out:qkv", role="bias"),
    t("attn.c_proj.weight", "in:q", "out:hidden", zero=True),
    t("attn.c_proj.bias", "out:hidden", role="bias", zero=True),
    t("ln_2.weight", "norm:hidden", role="norm"),
    t("ln_2.bias", "norm:hidden", role="norm_bias"),
    t("mlp.c_fc.weight", "in:hidden", "out:ffn"),
    t("mlp.c_fc.bias", "out:ffn", role="bias"),
    t("mlp.c_proj.weight", "in:ffn", "out:hidden", zero=True),
    t("mlp.c_proj.bias", "out:hidden", role="bias", zero=True),
)

GPT2 = ArchSpec(
    name="gpt2",
    model_types=("gpt2",),
    layer_prefix="transformer.h.{i}.",
    layer_tensors=_GPT2_LAYER,
    embed=t("transformer.wte.weight", "out:vocab", "out:hidden", role="embed"),
    extra_globals=(t("transformer.wpe.weight", "out:pos", "out:hidden", role="embed"),),
    final_norm=(
        t("transformer.ln_f.weight", "norm:hidden", role="norm"),
        t("transformer.ln_f.bias", "norm:hidden", role="norm_bias"),
    ),
    head=_HEAD,
    keys=ConfigKeys(
        layers="n_layer",
        hidden="n_embd",
        ffn="n_inner",
        heads="n_head",
        kv_heads=None,
        head_dim=None,
        eps="layer_norm_epsilon",
    ),
    norm="layer",
    alt_prefixes=(("transformer.", ""),),
    tie_default=True,
    notes="Conv1D weights stored [in, out]; learned positions; LayerNorm with bias; tied head.",
)

GPT_NEOX = ArchSpec(
    name="gpt_neox",
    model_types=("gpt_neox",),
    layer_prefix="gpt_neox.layers.{i}.",
    layer_tensors=(
        t("input_layernorm.weight", "norm:hidden", role="norm"),
        t("input_layernorm.bias", "norm:hidden", role="norm_bias"),
        t("post_attention_layernorm.weight", "norm:hidden", role="norm"),
        t("post_attention_layernorm.bias", "norm:hidden", role="norm_bias"),
        t("attention.query_key_value.weight", "out:qkvh", "in:hidden"),
        t("attention.query_key_value.bias", "out:qkvh", role="bias"),
        t("attention.dense.weight", "out:hidden", "in:q", zero=True),
        t("attention.dense.bias", "out:hidden", role="bias", zero=True),
        t("mlp.dense_h_to_4h.weight", "out:ffn", "in:hidden"),
        t("mlp.dense_h_to_4h.bias", "out:ffn", role="bias"),
        t("mlp.dense_4h_to_h.weight", "out:hidden", "in:ffn", zero=True),
        t("mlp.dense_4h_to_h.bias", "out:hidden", role="bias", zero=True),
    ),
    embed=t("gpt_neox.embed_in.weight", "out:vocab", "out:hidden", role="embed"),
    final_norm=(
        t("gpt_neox.final_layer_norm.weight", "norm:hidden", role="norm"),
        t("gpt_neox.final_layer_norm.bias", "norm:hidden", role="norm_bias"),
    ),
    head=t("embed_out.weight", "out:vocab", "in:hidden", alts=("lm_head.weight",)),
    keys=ConfigKeys(kv_heads=None, head_dim=None, eps="layer_norm_eps"),
    norm="layer",
    notes="fused per-head interleaved qkv; parallel residual; LayerNorm with bias (Pythia).",
)


def _pattention(name: str, tokens: str, reads: str, writes: str, zero: bool = False):
    """A Pattention layer: key tokens [P, d_in] write one score per token, value tokens
    [P, d_out] read the scores and write the output."""
    return (
        t(f"{name}.key_param_tokens", f"out:{tokens}", f"in:{reads}"),
        t(f"{name}.value_param_tokens", f"in:{tokens}", f"out:{writes}", zero=zero),
    )


TOKENFORMER = ArchSpec(
    name="tokenformer",
    model_types=("tokenformer",),
    layer_prefix=_LAYERS,
    layer_tensors=(
        t("input_layernorm.weight", "norm:hidden", role="norm"),
        t("input_layernorm.bias", "norm:hidden", role="norm_bias"),
        *_pattention("attention.query", "ptok_qkv", "hidden", "q"),
        *_pattention("attention.key", "ptok_qkv", "hidden", "kv"),
        *_pattention("attention.value", "ptok_qkv", "hidden", "kv"),
        *_pattention("attention.proj", "ptok_proj", "q", "hidden", zero=True),
        t("post_attention_layernorm.weight", "norm:hidden", role="norm"),
        t("post_attention_layernorm.bias", "norm:hidden", role="norm_bias"),
        *_pattention("mlp", "ptok_ffn", "hidden", "hidden", zero=True),
    ),
    embed=_EMBED,
    final_norm=(
        t("model.norm.weight", "norm:hidden", role="norm"),
        t("model.norm.bias", "norm:hidden", role="norm_bias"),
    ),
    head=_HEAD,
    keys=ConfigKeys(
        kv_heads=None,
        head_dim=None,
        eps="layer_norm_eps",
        param_tokens=(
            ("ptok_qkv", "qkv_slot_num"),
            ("ptok_proj", "proj_slot_num"),
            ("ptok_ffn", "ffn_slot_num"),
        ),
    ),
    norm="layer",
    notes="growlm's own TokenFormer (growlm/models): Pattention projections, LayerNorm.",
)

FAMILIES: tuple[ArchSpec, ...] = (
    LLAMA,
    MISTRAL,
    QWEN2,
    QWEN3,
    GEMMA2,
    GEMMA3,
    PHI3,
    OLMO2,
    GPT2,
    GPT_NEOX,
    TOKENFORMER,
)

"""Architecture specs: a Hugging Face causal-LM family described as data.

A spec lists every tensor of the checkpoint by name template and says, for each dimension, which
*axis* it runs along and whether the tensor writes to that axis ("out"), reads from it ("in") or
scales it ("norm"). Growth operators only ever look at these labels, never at family names.

Axis kinds
  hidden   the residual stream (hidden_size)
  ffn      MLP intermediate units (intermediate_size)
  ffn2     fused [gate; up] (2 x intermediate_size)
  q        query heads x head_dim
  kv       key/value heads x head_dim
  qkv      fused [q; k; v] concatenation (Phi-3, GPT-2 c_attn)
  qkvh     fused per-head [q, k, v] interleaving (GPT-NeoX: heads x 3 x head_dim)
  head     head_dim (per-head q/k norms; never grows)
  vocab    vocabulary (never grows)
  pos      learned positions (never grows)
  ptok_qkv, ptok_proj, ptok_ffn
           TokenFormer parameter tokens of the q/k/v, attention-output and FFN Pattention
           layers (key tokens write a score per token: "out"; value tokens read it: "in")
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

AXIS_KINDS = (
    "hidden",
    "ffn",
    "ffn2",
    "q",
    "kv",
    "qkv",
    "qkvh",
    "head",
    "vocab",
    "pos",
    "ptok_qkv",
    "ptok_proj",
    "ptok_ffn",
)
DIRECTIONS = ("out", "in", "norm")

Role = Literal["matrix", "bias", "norm", "norm_bias", "embed"]


@dataclass(frozen=True)
class Axis:
    """One tensor dimension: its kind and whether the tensor writes, reads or scales it."""

    kind: str
    direction: str

    @staticmethod
    def parse(text: str) -> Axis:
        direction, _, kind = text.partition(":")
        assert direction in DIRECTIONS and kind in AXIS_KINDS, text
        return Axis(kind=kind, direction=direction)


@dataclass(frozen=True)
class TensorSpec:
    """One tensor: name template (``{i}`` = layer index for per-layer tensors) and its axes.

    ``identity_zero`` marks outputs written into the residual stream by a block (attention output
    projection, MLP down projection and their biases): zeroing them turns the block into an
    identity (G_zero / LLaMA Pro).
    """

    name: str
    axes: tuple[Axis, ...]
    role: Role
    identity_zero: bool = False
    optional: bool = False
    alts: tuple[str, ...] = ()
    """Other names the same tensor has in some checkpoints (GPT-NeoX head: embed_out)."""


def t(
    name: str,
    *axes: str,
    role: Role = "matrix",
    zero: bool = False,
    optional: bool = False,
    alts: tuple[str, ...] = (),
) -> TensorSpec:
    """Compact constructor for the family table: ``t("q.weight", "out:q", "in:hidden")``."""
    return TensorSpec(
        name=name,
        axes=tuple(Axis.parse(a) for a in axes),
        role=role,
        identity_zero=zero,
        optional=optional,
        alts=alts,
    )


@dataclass(frozen=True)
class ConfigKeys:
    """Where a family's config keeps its shape numbers."""

    layers: str = "num_hidden_layers"
    hidden: str = "hidden_size"
    ffn: str = "intermediate_size"
    heads: str = "num_attention_heads"
    kv_heads: str | None = "num_key_value_heads"
    head_dim: str | None = "head_dim"
    eps: str = "rms_norm_eps"
    init_std: str = "initializer_range"
    per_layer: tuple[str, ...] = ()
    """Config lists indexed by layer (e.g. ``layer_types``): remapped with the layers."""
    param_tokens: tuple[tuple[str, str], ...] = ()
    """(axis kind, config key) of each parameter-token count (TokenFormer's ``*_slot_num``)."""


@dataclass(frozen=True)
class ArchSpec:
    """A Hugging Face causal-LM family as data."""

    name: str
    model_types: tuple[str, ...]
    layer_prefix: str
    layer_tensors: tuple[TensorSpec, ...]
    embed: TensorSpec
    final_norm: tuple[TensorSpec, ...]
    head: TensorSpec
    extra_globals: tuple[TensorSpec, ...] = ()
    keys: ConfigKeys = field(default_factory=ConfigKeys)
    norm: Literal["rms", "layer"] = "rms"
    norm_offset: float = 0.0
    """Norm weights applied as ``offset + w`` (Gemma stores w and applies 1 + w)."""
    embed_scale_sqrt_hidden: bool = False
    """Embeddings are multiplied by sqrt(hidden_size) in forward (Gemma)."""
    normed_width_axes: tuple[str, ...] = ()
    """Axes other than hidden that a norm spans as a whole (OLMo-2's q_norm over all heads)."""
    drop: tuple[str, ...] = ()
    """Suffixes of checkpoint entries that are buffers, not parameters (GPT-2's attn.bias)."""
    alt_prefixes: tuple[tuple[str, str], ...] = ()
    """(canonical, alternative) name prefixes seen in checkpoints (GPT-2 without 'transformer.')."""
    tie_default: bool = False
    """``tie_word_embeddings`` when config.json does not say (transformers' family default)."""
    notes: str = ""

    def layer_name(self, ts: TensorSpec, layer: int) -> str:
        return self.layer_prefix.replace("{i}", str(layer)) + ts.name

    @property
    def pre_norm_only(self) -> bool:
        """Each block normalises the hidden state with one RMSNorm before each of its two
        sublayers and nowhere else: no norm after a sublayer (Gemma, OLMo 2), no norm over all
        heads (OLMo 2), no LayerNorm mean (GPT-2, GPT-NeoX). Width fade masks
        (growlm.train.masks) are exact on such blocks only."""
        hidden_norms = [
            ts for ts in self.layer_tensors if ts.role == "norm" and ts.axes[0].kind == "hidden"
        ]
        return self.norm == "rms" and not self.normed_width_axes and len(hidden_norms) == 2

    @property
    def global_tensors(self) -> tuple[TensorSpec, ...]:
        return (self.embed, *self.extra_globals, *self.final_norm, self.head)

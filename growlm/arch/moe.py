"""Mixture-of-Experts target families as data: where a dense family's FFN goes when upcycled.

Each ``MoeSpec`` names the MoE family a dense family upcycles into, the per-layer tensor names
its published hub checkpoints use (one tensor per expert, ``{e}`` = expert index), and the config
keys that hold the expert count, top-k and expert width. transformers 5 fuses the per-expert
tensors into 3-D parameters at load time (its checkpoint conversion); the files keep the hub
layout so other tools that read those checkpoints read ours.

Dense -> MoE pairs in transformers that are *not* targets, and why (the layer outside the FFN
must be the same computation, else the upcycled model is not the dense model plus experts):
- olmo2 -> olmoe: OLMoE normalises before attention and the MLP (pre-norm); OLMo-2 after them.
- phi3 -> phimoe: PhiMoE uses LayerNorm with bias and a sparsemixer router, Phi-3 RMSNorm.
- gemma2 / gemma3 -> (none): no Gemma MoE in transformers.
- gpt2, gpt_neox -> (none): no MoE counterpart with the same attention and norms.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any


@dataclass(frozen=True)
class MoeSpec:
    """One dense -> MoE mapping.

    ``ffn`` names the dense source's FFN tensors (suffix after the layer prefix) by role:
    gate, up (read the hidden state, write FFN units) and down (reads units, writes hidden).
    ``experts`` gives the target name of each role for expert ``{e}``; ``shared`` the target
    names of a shared expert (always active) and ``shared_gate`` its scalar sigmoid gate.
    """

    name: str
    model_type: str
    architecture: str
    sources: tuple[str, ...]
    router: str
    experts: dict[str, str]
    num_experts_key: str
    top_k_key: str
    expert_ffn_key: str
    shared: dict[str, str] = field(default_factory=dict)
    shared_gate: str | None = None
    shared_ffn_key: str | None = None
    renormalises: str | bool = True
    """True: top-k weights always sum to 1; a config key: set True in the written config."""
    aux_coef_key: str = "router_aux_loss_coef"
    set_config: dict[str, Any] = field(default_factory=dict)
    drop_config: tuple[str, ...] = ()
    """Source config keys the target does not have."""
    attention_bias: bool = True
    """The target's attention can carry q/k/v/o biases (Mixtral's cannot)."""
    module_router: str = "mlp.gate.weight"
    module_gate_up: str = "mlp.experts.gate_up_proj"
    """transformers' in-memory layout: every expert's [gate; up] fused, [E, 2I, H]."""
    module_down: str = "mlp.experts.down_proj"
    """[E, H, I]"""
    notes: str = ""

    @property
    def has_shared(self) -> bool:
        return bool(self.shared)


FFN = {"gate": "mlp.gate_proj.weight", "up": "mlp.up_proj.weight", "down": "mlp.down_proj.weight"}
"""The dense FFN of every source family below (Llama-style SwiGLU, no biases)."""

_QWEN_EXPERTS = {
    "gate": "mlp.experts.{e}.gate_proj.weight",
    "up": "mlp.experts.{e}.up_proj.weight",
    "down": "mlp.experts.{e}.down_proj.weight",
}

MIXTRAL = MoeSpec(
    name="mixtral",
    model_type="mixtral",
    architecture="MixtralForCausalLM",
    sources=("llama", "mistral"),
    router="block_sparse_moe.gate.weight",
    experts={
        "gate": "block_sparse_moe.experts.{e}.w1.weight",
        "up": "block_sparse_moe.experts.{e}.w3.weight",
        "down": "block_sparse_moe.experts.{e}.w2.weight",
    },
    num_experts_key="num_local_experts",
    top_k_key="num_experts_per_tok",
    expert_ffn_key="intermediate_size",
    drop_config=("attention_bias", "mlp_bias", "pretraining_tp"),
    attention_bias=False,
    notes="router softmax, top-k, renormalised (weights sum to 1)",
)

QWEN3_MOE = MoeSpec(
    name="qwen3_moe",
    model_type="qwen3_moe",
    architecture="Qwen3MoeForCausalLM",
    sources=("qwen3",),
    router="mlp.gate.weight",
    experts=_QWEN_EXPERTS,
    num_experts_key="num_experts",
    top_k_key="num_experts_per_tok",
    expert_ffn_key="moe_intermediate_size",
    renormalises="norm_topk_prob",
    set_config={"decoder_sparse_step": 1, "mlp_only_layers": []},
    notes="norm_topk_prob written True",
)

# Qwen2-MoE: Qwen3-MoE's router and experts, plus a shared expert
QWEN2_MOE = replace(
    QWEN3_MOE,
    name="qwen2_moe",
    model_type="qwen2_moe",
    architecture="Qwen2MoeForCausalLM",
    sources=("qwen2",),
    shared={
        "gate": "mlp.shared_expert.gate_proj.weight",
        "up": "mlp.shared_expert.up_proj.weight",
        "down": "mlp.shared_expert.down_proj.weight",
    },
    shared_gate="mlp.shared_expert_gate.weight",
    shared_ffn_key="shared_expert_intermediate_size",
    set_config={"decoder_sparse_step": 1, "mlp_only_layers": [], "qkv_bias": True},
    notes="shared expert behind a sigmoid gate; norm_topk_prob written True",
)

MOE_FAMILIES: tuple[MoeSpec, ...] = (MIXTRAL, QWEN2_MOE, QWEN3_MOE)

NO_MOE: dict[str, str] = {
    "olmo2": "OLMoE (olmoe) is pre-norm, OLMo-2 post-norm: not the same layers",
    "phi3": "PhiMoE uses LayerNorm and a sparsemixer router: not the same layers",
    "gemma2": "transformers has no Gemma MoE",
    "gemma3": "transformers has no Gemma MoE",
    "gpt2": "transformers has no MoE with GPT-2's attention and norms",
    "gpt_neox": "transformers has no MoE with GPT-NeoX's parallel residual",
}

MOE_MODEL_TYPES = frozenset(
    {s.model_type for s in MOE_FAMILIES}
    | {"olmoe", "phimoe", "granitemoe", "jetmoe", "dbrx", "deepseek_v2", "deepseek_v3"}
    | {"qwen3_next", "llama4", "minimax", "jamba", "ernie4_5_moe", "glm4_moe", "hunyuan_v1_moe"}
)
"""MoE families a user might hand to upcycle (refused: the source is already MoE)."""

MOE_CONFIG_KEYS = ("num_local_experts", "num_experts", "n_routed_experts", "moe_num_experts")


def moe_target(dense: str) -> MoeSpec | None:
    """The MoE family the dense family ``dense`` upcycles into, None when there is none."""
    for spec in MOE_FAMILIES:
        if dense in spec.sources:
            return spec
    return None


def moe_spec_for_type(model_type: str | None) -> MoeSpec | None:
    for spec in MOE_FAMILIES:
        if spec.model_type == model_type:
            return spec
    return None


def targets_line() -> str:
    """``llama, mistral -> mixtral; ...`` for help texts and ``growlm ops``."""
    return "; ".join(f"{', '.join(s.sources)} -> {s.name}" for s in MOE_FAMILIES)

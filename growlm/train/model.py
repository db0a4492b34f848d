"""Build the model of a recipe: any Hugging Face causal-LM family from its config, plus its
parameter count (FLOPs per token: ``growlm.train.flops``)."""

from __future__ import annotations

import copy
import functools
from pathlib import Path
from typing import Any

import torch
from transformers import AutoConfig, AutoModelForCausalLM, PretrainedConfig, PreTrainedModel

from growlm.errors import InvalidRecipe, one_line
from growlm.io.hf_config import ConfigJsonError, read_config_json
from growlm.train.recipe import ModelConfig

# HF config keys that growlm sets itself or that only describe serialisation.
_MANAGED = {"vocab_size", "eos_token_id", "bos_token_id", "pad_token_id"}


def build_config(model: ModelConfig, vocab_size: int, eos_id: int) -> PretrainedConfig:
    """The HF config of ``model``: its family's defaults, the recipe's keys, the tokenizer's ids.

    HF configs accept any keyword silently, so keys the family does not know are rejected here
    (a typo like ``hiden_size`` would otherwise train the default model)."""
    if model.init is not None:
        return load_config(init_folder(model.init))
    try:
        defaults = AutoConfig.for_model(model.type)
    except (ValueError, KeyError):
        raise InvalidRecipe(f"model.type: unknown Hugging Face model type {model.type!r}") from None
    known = set(defaults.to_dict()) | set(getattr(defaults, "attribute_map", {}))
    for key in model.config:
        if key not in known:
            raise InvalidRecipe(
                f"model.config.{key}: not a {model.type} config key "
                f"(known: {', '.join(sorted(k for k in known if not k.startswith('_')))})"
            )
    kwargs: dict[str, Any] = dict(model.config)
    kwargs.setdefault("tie_word_embeddings", False)
    kwargs.update(vocab_size=vocab_size, eos_token_id=eos_id, bos_token_id=eos_id)
    try:
        config = AutoConfig.for_model(model.type, **kwargs)
    except Exception as exc:  # HF validates configs with several error types; all mean "bad value"
        raise InvalidRecipe(
            f"model.config: not a valid {model.type} config: {one_line(exc)}"
        ) from None
    config.use_cache = False
    if model.templates is not None:
        from growlm.models.templates import KEY

        setattr(config, KEY, {"count": model.templates.count, "grid": 1})
    return config


@functools.cache
def init_folder(init: str) -> Path:
    """The local folder of ``model.init`` (a folder, hub id or .gguf file; resolved once)."""
    from growlm.io.resolve import resolve_model

    return resolve_model(init, what="model.init").path


def init_metadata(init: str) -> dict[str, Any]:
    """base_model and licence of ``model.init`` for the model cards of the run's exports."""
    from growlm.io.model_card import source_metadata
    from growlm.io.resolve import hub_id

    folder = init_folder(init)
    try:
        raw = read_config_json(folder)
    except (OSError, ConfigJsonError):
        raw = {}
    parsed = None if Path(init).exists() else hub_id(init)
    return source_metadata(folder, raw, parsed and parsed[0])


def load_config(folder: Path, what: str = "model.init") -> PretrainedConfig:
    """The HF config of ``folder``; errors name it as ``what`` (a recipe key or "checkpoint")."""
    file = folder / "config.json"
    try:
        raw = read_config_json(folder)
    except ConfigJsonError as e:
        if e.missing:
            raise InvalidRecipe(f"{what}: {str(folder)!r} has no config.json") from None
        raise InvalidRecipe(f"{what}: {str(e.file)!r} {e.reason}") from None
    model_type = raw.pop("model_type", None)
    if not isinstance(model_type, str):
        raise InvalidRecipe(f"{what}: {str(file)!r} has no model_type")
    try:
        config = AutoConfig.for_model(model_type, **raw)
    except Exception as exc:  # as in build_config: any HF validation error is a bad config
        raise InvalidRecipe(
            f"{what}: {str(file)!r} is not a valid config: {one_line(exc)}"
        ) from None
    config.use_cache = False
    return config


def load_init_weights(folder: Path) -> dict[str, torch.Tensor]:
    """The safetensors weights of a ``model.init`` folder (never a pickle), or InvalidRecipe."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    files = sorted(folder.glob("*.safetensors"))
    if not files:
        raise InvalidRecipe(f"model.init: {str(folder)!r} holds no .safetensors weights")
    weights: dict[str, torch.Tensor] = {}
    for file in files:
        try:
            weights.update(load_file(str(file)))
        except (OSError, SafetensorError) as exc:
            raise InvalidRecipe(
                f"model.init: {str(file)!r} is truncated or not a safetensors file "
                f"({one_line(exc)}); point model.init at an intact checkpoint"
            ) from None
    return weights


def build_model(
    config: PretrainedConfig,
    attn_implementation: str = "auto",
    device: torch.device | None = None,
    compiled: bool = False,
    seq_len: int = 0,
) -> PreTrainedModel:
    """A freshly initialised float32 model (draws from torch's global RNG: seed first), with the
    attention ``attn_implementation`` resolves to on ``device`` (growlm.train.attention); a
    template model's config (``model.templates``) gets its template-mixed projections."""
    from growlm.models import templates
    from growlm.train.attention import resolve

    attn = resolve(attn_implementation, config, device or torch.device("cpu"), compiled, seq_len)
    try:
        model = AutoModelForCausalLM.from_config(
            config, attn_implementation=attn, dtype=torch.float32
        )
    except ValueError as exc:  # e.g. an attention implementation this install lacks
        raise InvalidRecipe(
            f"model: cannot build the {config.model_type} model: {one_line(exc)}"
        ) from None
    if templates.settings(config) is not None:
        templates.templatize(model, config)  # MixtureGrowth's template-mixed projections
    return model


def meta_model(config: PretrainedConfig) -> PreTrainedModel:
    """``config``'s model on the meta device (shapes, no memory), built from a copy: building
    sets its config's attention implementation, which a live model of ``config`` reads at every
    forward (a dry run must not switch a compiled CPU run from growlm_cpu to sdpa)."""
    with torch.device("meta"):
        return build_model(copy.deepcopy(config))


def param_count(model: torch.nn.Module) -> int:
    """Total parameters, a tied embedding/head counted once (N in the 6*N*D FLOP estimate)."""
    return sum(p.numel() for p in model.parameters())


def compile_blocks(model: torch.nn.Module) -> int:
    """``torch.compile`` each decoder block in place (torchtitan's per-block compile); returns
    how many. The blocks are the children of the model's largest ``ModuleList`` (by parameters);
    a model without one is compiled whole (returns 0).

    Per block rather than whole: identical blocks share one compiled graph (compile time of one
    layer, not L), and transformers builds the attention mask outside the traced region, where
    it can see that a batch of plain windows needs no mask at all (traced, it must materialise
    a [B, 1, T, T] one, and the CPU attention kernels run slower with it)."""
    lists = [m for m in model.modules() if isinstance(m, torch.nn.ModuleList) and len(m)]
    if not lists:
        model.compile()
        return 0
    blocks = max(lists, key=lambda m: sum(p.numel() for p in m.parameters()))
    for block in blocks:
        block.compile()
    return len(blocks)

"""Parameter counts from a model description (HF config.json, checkpoint folder or growlm
recipe) without allocating weights: the model is built on the meta device, so any HF family
counts exactly (tied embedding/head once, as the trainer's N in C = 6 N D)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from growlm.analysis.errors import AnalysisError
from growlm.errors import one_line
from growlm.io.hf_config import ConfigJsonError, read_config_json


@dataclass
class ModelSpec:
    """A target model: its HF ``model_type`` and config keys, and the recipe it came from."""

    model_type: str
    config: dict[str, Any]
    recipe: dict[str, Any] | None = None  # the parsed growlm recipe, when --model was one
    recipe_path: Path | None = None
    folder: Path | None = None  # the model folder, when --model was one (hub id, .gguf)

    @property
    def layers(self) -> int:
        for key in ("num_hidden_layers", "n_layer", "num_layers"):
            if key in self.config:
                return int(self.config[key])
        raise AnalysisError(f"model config has no layer count (num_hidden_layers): {self.config}")

    def with_layers(self, layers: int) -> ModelSpec:
        key = next(
            (k for k in ("num_hidden_layers", "n_layer", "num_layers") if k in self.config),
            "num_hidden_layers",
        )
        return ModelSpec(
            self.model_type,
            {**self.config, key: layers},
            self.recipe,
            self.recipe_path,
            self.folder,
        )


def load_model_spec(path: Path | str) -> ModelSpec:
    """Read a config.json, a checkpoint folder holding one (or a hub id / .gguf file that
    resolves to one), or a growlm recipe YAML."""
    from growlm.io.resolve import resolve_model

    p = Path(path)
    folder = None
    if p.suffix not in (".json", ".yaml", ".yml"):
        p = resolve_model(path, what="--model", config_only=True).path
    if p.is_dir():
        folder = p
        p = p / "config.json"
    if not p.is_file():
        raise AnalysisError(f"--model {str(path)!r}: no such config.json, folder or recipe")
    if p.suffix in (".yaml", ".yml"):
        return _from_recipe(p)
    try:
        config = read_config_json(p)
    except OSError as exc:
        raise AnalysisError(f"--model {str(p)!r} is not a readable config.json: {exc}") from None
    except ConfigJsonError as exc:
        raise AnalysisError(f"--model {str(p)!r} {exc.problem}") from None
    if "model_type" not in config:
        raise AnalysisError(f"--model {str(p)!r}: config.json has no model_type")
    model_type = str(config.pop("model_type"))
    return ModelSpec(model_type, config, folder=folder)


def _from_recipe(path: Path) -> ModelSpec:
    import yaml

    from growlm.errors import InvalidRecipe
    from growlm.train.recipe import load_recipe, recipe_to_dict

    try:
        raw = yaml.safe_load(path.read_text())
        recipe = load_recipe(path)
    except yaml.YAMLError as exc:
        from growlm.train.schema import yaml_problem

        raise AnalysisError(
            f"recipe {str(path)!r} is not valid YAML: {yaml_problem(exc)}"
        ) from None
    except InvalidRecipe as exc:
        raise AnalysisError(f"--model {str(path)!r} is not a valid recipe: {exc}") from None
    plain = recipe_to_dict(recipe)
    config = dict(plain["model"]["config"])
    config.setdefault("vocab_size", int(plain["data"]["vocab_size"]))
    config.setdefault("tie_word_embeddings", False)  # as the trainer builds recipe models
    # A recipe's model is its first stage; the target is that model after every stack growth.
    factor = 1
    for stage in plain["stages"]:
        grow = stage.get("grow") or {}
        factor_value = (grow.get("params") or {}).get("factor", 1)
        if grow.get("op") in ("stack", "direct-depth", "G_stack", "G_direct", "interleave"):
            if not isinstance(factor_value, int) or isinstance(factor_value, bool):
                raise AnalysisError(
                    f"--model {str(path)!r}: stage {stage['name']!r} grow factor must be an "
                    f"integer, got {factor_value!r}"
                )
            factor *= factor_value
    spec = ModelSpec(str(plain["model"]["type"]), config, recipe=raw, recipe_path=path)
    return spec.with_layers(spec.layers * factor) if factor > 1 else spec


def count_params(spec: ModelSpec) -> int:
    """Exact parameter count of ``spec`` (tied weights once), built on the meta device."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    try:
        config = AutoConfig.for_model(spec.model_type, **spec.config)
    except Exception as exc:  # transformers validates configs with several error types
        raise AnalysisError(f"cannot build a {spec.model_type!r} config: {one_line(exc)}") from None
    try:
        with torch.device("meta"):
            model = AutoModelForCausalLM.from_config(config)
    except Exception as exc:  # the model class rejects the sizes (heads vs width, ...)
        raise AnalysisError(f"cannot build a {spec.model_type!r} model: {one_line(exc)}") from None
    return int(sum(p.numel() for p in model.parameters()))

"""Write a plan as a ``growlm train`` recipe: stage ``base`` trains the small model for d tokens
at peak lr 1e-3, stage ``grown`` stacks it g times and trains D - d tokens at peak lr 3e-4 with
a fresh AdamW and restarted warm-up (the paper's settings)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from growlm.analysis.errors import AnalysisError
from growlm.analysis.params import ModelSpec
from growlm.analysis.plan import Plan
from growlm.io.atomic import write_text_atomic

_DROP = {"architectures", "transformers_version", "torch_dtype", "dtype", "vocab_size", "auto_map"}
BASE_LR = 1e-3
GROWN_LR = 3e-4


def plan_recipe(plan: Plan, model: ModelSpec, name: str = "planned") -> dict[str, Any]:
    """The recipe mapping (validated by the trainer's schema when it loads)."""
    if plan.small_layers is None:
        raise AnalysisError("--write-recipe needs --model (the target's architecture)")
    if plan.growth_tokens >= plan.tokens:
        raise AnalysisError(
            "--write-recipe: growth timing d is not below the budget D, no two-stage recipe"
        )
    small = model.with_layers(plan.small_layers).config
    config = {k: v for k, v in small.items() if k not in _DROP and not k.startswith("_")}
    base = dict(model.recipe or {})
    data = dict(base.get("data") or {"sources": ["default"]})
    tokenizer = model_tokenizer(model)
    if tokenizer is not None:
        data["tokenizer"] = str(tokenizer)  # the target's own tokenizer, not a new BPE
    elif model.recipe is None and "vocab_size" in model.config:
        data["vocab_size"] = int(model.config["vocab_size"])
    optim = dict(base.get("optim") or {})
    optim["lr"] = BASE_LR
    recipe: dict[str, Any] = {
        "name": name,
        "seed": int(base.get("seed", 0)),
        "data": data,
        "model": {**(base.get("model") or {}), "type": model.model_type, "config": config},
        "optim": optim,
    }
    if base.get("run"):
        recipe["run"] = base["run"]
    recipe["stages"] = [
        {"name": "base", "tokens": round(plan.growth_tokens)},
        {
            "name": "grown",
            "tokens": round(plan.tokens - plan.growth_tokens),
            "grow": {"op": "stack", "factor": plan.growth_factor},
            "optimizer_state": "fresh",
            "optim": {"lr": GROWN_LR},
        },
    ]
    return recipe


def model_tokenizer(model: ModelSpec) -> Path | None:
    """The folder of --model when it holds a tokenizer (the recipe then trains with it)."""
    if model.folder is None or model.recipe is not None:
        return None
    files = ("tokenizer.json", "tokenizer.model", "vocab.json")
    return model.folder.resolve() if any((model.folder / f).is_file() for f in files) else None


def write_plan_recipe(plan: Plan, model: ModelSpec, path: Path | str) -> Path:
    """Write the recipe YAML; data paths of a source recipe are made absolute first."""
    out = Path(path)
    recipe = plan_recipe(plan, model, name=out.stem)
    if model.recipe_path is not None:
        _absolute_sources(recipe["data"], model.recipe_path.resolve().parent)
    header = (
        f"# Written by `growlm plan`: N={plan.params:.4g}, D={plan.tokens:.4g} tokens, "
        f"d={plan.growth_tokens:.4g}, g={plan.growth_factor}\n"
        f"# ({plan.guideline['source']}). Edit data/run to taste; train with growlm train.\n"
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(out, header + yaml.safe_dump(recipe, sort_keys=False))
    return out


def _absolute_sources(data: dict[str, Any], base: Path) -> None:
    def fix(p: str) -> str:
        if p == "default" or p.startswith("hf:") or Path(p).is_absolute():
            return p
        return str((base / p).resolve())

    data["sources"] = [fix(s) for s in data.get("sources") or []]
    for key in ("prepared", "tokenizer"):
        if data.get(key):
            data[key] = fix(data[key])

"""A config.json as transformers reads it, and the tensor shapes it implies.

:func:`read_config_json` is the one reader of a Hugging Face folder's config.json (grow's source,
training's ``model.init`` and checkpoints, eval, plan ``--model``): each caller turns its
:class:`ConfigJsonError` into its own typed error, worded for its command.

transformers decides whether a folder loads: so the shapes that a config implies are read off the
family's own model class, built on the meta device (no memory, no weights, ~0.1 s for a 30-layer
model). The same check serves a source (config.json against its weights) and a grown model (the
new config against the planned tensors) before any byte is written.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from growlm.errors import GrowlmError, one_line

CAUSAL_LM_SUFFIXES = ("ForCausalLM", "LMHeadModel")


class ConfigJsonError(Exception):
    """A folder's config.json is missing (``missing``), or ``reason`` ("is not valid JSON",
    "does not hold a JSON object"; ``detail``: the parser's words). Not a user error by itself:
    the caller words it for its command."""

    def __init__(self, file: Path, reason: str, detail: str = "", missing: bool = False):
        self.file, self.reason, self.missing = file, reason, missing
        self.problem = f"{reason} ({detail})" if detail else reason  # the reason with details
        super().__init__(f"{file} {self.problem}")


def read_config_json(path: Path) -> dict[str, Any]:
    """The config.json in the folder ``path`` (or the file ``path``) as a JSON object (UTF-8), or
    ConfigJsonError."""
    file = Path(path) if Path(path).is_file() else Path(path) / "config.json"
    if not file.is_file():
        raise ConfigJsonError(file, "is missing", missing=True)
    try:
        value = json.loads(file.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        detail = exc.msg if isinstance(exc, json.JSONDecodeError) else "not UTF-8"
        raise ConfigJsonError(file, "is not valid JSON", detail) from None
    if not isinstance(value, dict):
        raise ConfigJsonError(file, "does not hold a JSON object")
    return value


def not_causal_lm(config: Mapping[str, Any]) -> str | None:
    """The first of ``architectures`` when it names only classes that are not causal language
    models (a *ForSequenceClassification, a BERT); None when it names one, or none at all."""
    archs = config.get("architectures") or []
    if archs and not any(str(a).endswith(CAUSAL_LM_SUFFIXES) for a in archs):
        return str(archs[0])
    return None


def config_object(
    cfg: Mapping[str, Any], what: str = "config", error: type[GrowlmError] = GrowlmError
) -> Any:
    """``cfg`` as the family's PretrainedConfig (no remote code); one line if it is invalid."""
    from transformers import AutoConfig

    new_cfg = dict(cfg)
    model_type = new_cfg.pop("model_type", None)
    try:
        return AutoConfig.for_model(str(model_type), **new_cfg)
    except Exception as e:  # transformers raises ValueError, KeyError, TypeError...
        raise error(f"{what} is not a valid {model_type} config: {one_line(e)}") from None


def implied_shapes(
    cfg: Mapping[str, Any], what: str = "config", error: type[GrowlmError] = GrowlmError
) -> dict[str, tuple[int, ...]]:
    """Every parameter and buffer shape of the model that ``cfg`` describes (meta device)."""
    import torch
    from transformers import AutoModelForCausalLM

    conf = config_object(cfg, what, error)
    try:
        with torch.device("meta"):
            model = AutoModelForCausalLM.from_config(conf, trust_remote_code=False)
    except Exception as e:  # a config the model class itself rejects (e.g. heads vs width)
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise GrowlmError(
            f"{what} does not build a {conf.model_type} model: {first[:200]}"
        ) from None
    return {name: tuple(t.shape) for name, t in model.state_dict().items()}


def check_shapes(
    cfg: Mapping[str, Any],
    shapes: Mapping[str, tuple[int, ...]],
    *,
    what: str,
    weights: str,
    fix: str,
    error: type[GrowlmError] = GrowlmError,
) -> None:
    """Refuse when a tensor of ``shapes`` has another shape than ``cfg`` implies for that name
    (names transformers maps on loading, such as GPT-NeoX's head, are not compared)."""
    implied = implied_shapes(cfg, what, error)
    for name, shape in shapes.items():
        want = implied.get(name)
        if want is not None and tuple(shape) != want:
            raise error(
                f"{what} disagrees with {weights}: {name} is {list(shape)} there but the config "
                f"implies {list(want)}; {fix}"
            )

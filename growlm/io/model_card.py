"""Model cards (README.md in the Hugging Face format) for every model growlm writes.

A card is YAML front matter (base_model where known, library_name, tags with growlm and the
operator, the source's licence where known) and a short body: what was done, the numbers, how to
load it. Grown models' cards come from growth.json; trained models' from the run's record.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import yaml

from growlm import __version__
from growlm.io.atomic import write_text_atomic

CARD = "README.md"
_CACHE_SNAPSHOT = re.compile(r"models--([^/]+?)--([^/]+)/snapshots/")
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.\-]*/[\w.\-]+$")


# -- what is known about a source model ------------------------------------------------------
def front_matter(text: str) -> dict[str, Any]:
    """The YAML front matter of a model card ({} when there is none or it does not parse)."""
    if not text.startswith("---"):
        return {}
    end = text.find("\n---", 3)
    if end < 0:
        return {}
    try:
        meta = yaml.safe_load(text[3:end])
    except yaml.YAMLError:
        return {}
    return meta if isinstance(meta, dict) else {}


def source_metadata(
    folder: Path, config: dict[str, Any], hub_id: str | None = None
) -> dict[str, Any]:
    """base_model and licence of a source model: its hub id (given, or read off a hub-cache
    path or config's ``_name_or_path``), the licence from its card, else from its config."""
    card_file = folder / CARD
    try:
        card = front_matter(card_file.read_text(encoding="utf-8")) if card_file.is_file() else {}
    except (OSError, UnicodeDecodeError):
        card = {}
    grown = _growth_record(folder).get("source_card") or {}  # a model growlm grew
    meta: dict[str, Any] = {}
    base = hub_id or _hub_id_of(folder, config) or grown.get("base_model")
    if base:
        meta["base_model"] = base
    for key in ("license", "license_name", "license_link"):
        value = card.get(key, config.get(key, grown.get(key)))
        if isinstance(value, str) and value:
            meta[key] = value
    return meta


def _growth_record(folder: Path) -> dict[str, Any]:
    try:
        record = json.loads((folder / "growth.json").read_text())
    except (OSError, ValueError):
        return {}
    return record if isinstance(record, dict) else {}


def _hub_id_of(folder: Path, config: dict[str, Any]) -> str | None:
    m = _CACHE_SNAPSHOT.search(str(folder.resolve()))
    if m:
        return f"{m.group(1)}/{m.group(2)}"
    name = config.get("_name_or_path")
    if isinstance(name, str) and _HUB_ID.match(name) and not Path(name).exists():
        return name
    return None


# -- rendering -------------------------------------------------------------------------------
def render(meta: dict[str, Any], body: str) -> str:
    return "---\n" + yaml.safe_dump(meta, sort_keys=False) + "---\n\n" + body.rstrip() + "\n"


def _header(meta: dict[str, Any], tags: list[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if meta.get("base_model"):
        out["base_model"] = meta["base_model"]
    out["library_name"] = "transformers"
    out["pipeline_tag"] = "text-generation"
    for key in ("license", "license_name", "license_link"):
        if meta.get(key):
            out[key] = meta[key]
    out["tags"] = list(dict.fromkeys(["growlm", *tags]))
    return out


def _usage(name: str) -> str:
    return (
        "## How to load it\n\n"
        "```python\n"
        "from transformers import AutoModelForCausalLM, AutoTokenizer\n\n"
        f'model = AutoModelForCausalLM.from_pretrained("{name}")\n'
        f'tokenizer = AutoTokenizer.from_pretrained("{name}")\n'
        "```\n"
    )


def _number(n: Any) -> str:
    return f"{n:,}" if isinstance(n, int) else str(n)


def grow_card(record: dict[str, Any], name: str) -> str:
    """The card of a grown model from its growth.json ``record`` (see growlm.grow)."""
    op = str(record["operator"])
    meta = _header(record.get("source_card") or {}, ["model-growth", *op.split("+")])
    params = ", ".join(f"{k}={v}" for k, v in (record.get("params") or {}).items()) or "defaults"
    source = record.get("source_hub_id") or record.get("source_gguf") or record.get("source")
    lines = [
        f"# {name}",
        "",
        f"Grown with growlm {record.get('growlm_version')} "
        f"from `{source}` by the operator `{op}` ({params}, seed {record.get('seed')}): "
        f"{record.get('src_layers')} -> {record.get('out_layers')} layers"
        + (
            f", {_number(record['src_params'])} -> {_number(record['out_params'])} parameters."
            if "src_params" in record
            else "."
        ),
        "",
        "- function preserving by construction: "
        + ("yes" if record.get("function_preserving") else "no"),
        f"- layer map (source layer of each output layer): {_layer_map(record)}",
    ]
    if record.get("source_gguf"):
        lines.append(
            "- the source was a GGUF file de-quantised to float32: its quantisation error is in "
            "these weights"
        )
    if "steps" in record and "loss_first" in record:
        lines.append(
            f"- learned growth maps trained {record['steps']} steps on "
            f"{_number(record.get('tokens'))} tokens of `{record.get('data')}`: loss "
            f"{record['loss_first']} -> {record['loss_last']}"
        )
    check = record.get("check")
    if check:
        lines.append(
            f"- check (`--check`, float32, sample English text): max |logit diff| "
            f"{check.get('max_abs_logit_diff')}, loss before {check.get('loss_before')}, "
            f"after {check.get('loss_after')}"
        )
    else:
        lines.append("- check: not run (`growlm grow ... --check` compares logits and losses)")
    lines += [
        "",
        "This model has not been trained since it was grown: it is the start of further "
        "training (`growlm train` with `model.init` pointing here, or any trainer). The exact "
        "provenance is in `growth.json`.",
        "",
        _usage(name),
    ]
    return render(meta, "\n".join(lines))


def _layer_map(record: dict[str, Any]) -> str:
    entries = record.get("layer_map") or []
    return ", ".join(
        str(m["src"]) if m.get("kind") == "copy" else f"{m.get('src')}:{m.get('kind')}"
        for m in entries
    )


def grow_facts(
    folder: Path, config: dict[str, Any], report: dict[str, Any], hub_id: str | None = None
) -> dict[str, Any]:
    """What a grow card needs beyond the plan: the source's base_model/licence, the sizes."""
    return {
        "source_card": source_metadata(folder, config, hub_id),
        "src_params": report.get("src_params"),
        "out_params": report.get("out_params"),
    }


def write_grow_card(folder: Path, record: dict[str, Any], name: str | None = None) -> None:
    write_text_atomic(folder / CARD, grow_card(record, name or folder.name))


def add_check(folder: Path, check: dict[str, Any]) -> None:
    """Record a ``--check`` result (run after the folder was written) in growth.json and card."""
    record_file = folder / "growth.json"
    record = json.loads(record_file.read_text())
    record["check"] = check
    write_text_atomic(record_file, json.dumps(record, indent=2) + "\n")
    write_grow_card(folder, record)


def train_card(
    name: str, recipe: dict[str, Any], stage: int, steps: int, tokens: int, source: dict[str, Any]
) -> str:
    """The card of a model exported by ``growlm train`` after stage ``stage`` of ``recipe``
    (a plain recipe mapping); ``source`` is source_metadata of ``model.init`` ({} if none)."""
    stages = recipe.get("stages") or []
    ops = [str(s["grow"]["op"]) for s in stages[: stage + 1] if s.get("grow")]
    tags = ["model-growth", *(p for op in ops for p in op.split("+"))] if ops else []
    meta = _header(source, tags)
    init = (recipe.get("model") or {}).get("init")
    start = f"from `{init}`" if init else "from a random initialisation"
    lines = [
        f"# {name}",
        "",
        f"Trained with growlm {__version__}, recipe "
        f"`{recipe.get('name')}` (seed {recipe.get('seed')}), {start}: {_number(steps)} steps, "
        f"{_number(tokens)} tokens, stages {stage + 1} of {len(stages)}:",
        "",
    ]
    for i, s in enumerate(stages[: stage + 1]):
        grow = s.get("grow")
        what = ""
        if grow:
            params = ", ".join(f"{k}={v}" for k, v in (grow.get("params") or {}).items())
            what = f", grown first by `{grow['op']}` ({params or 'defaults'})"
        lines.append(f"{i + 1}. `{s.get('name')}`: {_number(s.get('tokens'))} tokens{what}")
    data = recipe.get("data") or {}
    lines += [
        "",
        f"Data: {', '.join(map(str, data.get('sources') or [])) or data.get('prepared')}; "
        f"sequence length {data.get('seq_len')}. The whole recipe is `recipe.yaml` in the run "
        "folder.",
        "",
        _usage(name),
    ]
    return render(meta, "\n".join(lines))

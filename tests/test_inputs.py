"""Model arguments beyond a folder: a hub id from a local Hugging Face cache (offline, no
network), and what growlm writes about its outputs (model cards, growth.json provenance).
GGUF files as SRC are tested on the real model (tests/test_real_model.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

import growlm.cli as cli
from growlm.io.model_card import front_matter
from growlm.io.resolve import hub_id, resolve_model

REV = "0123456789abcdef0123456789abcdef01234567"
TEXT = "To be, or not to be, that is the question. " * 40


@pytest.fixture(scope="module")
def tiny_with_tokenizer(tmp_path_factory) -> Path:
    """A tiny Llama with a 300-id tokenizer of its own, a licensed model card and a source
    config that still names where it came from (``_name_or_path``)."""
    from transformers import AutoModelForCausalLM, LlamaConfig

    from growlm.data.tokenizer import train_tokenizer

    root = tmp_path_factory.mktemp("hubsrc") / "model"
    tok = train_tokenizer([TEXT, "the quick brown fox " * 50], 300, root)
    config = LlamaConfig(
        vocab_size=tok.vocab_size,
        hidden_size=32,
        intermediate_size=48,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=128,
        eos_token_id=tok.eos_id,
        bos_token_id=tok.eos_id,
    )
    AutoModelForCausalLM.from_config(config).save_pretrained(str(root))
    cfg = json.loads((root / "config.json").read_text())
    (root / "config.json").write_text(json.dumps({**cfg, "_name_or_path": "org/tiny"}))
    (root / "README.md").write_text("---\nlicense: mit\ntags: [other]\n---\n# tiny\n")
    return root


@pytest.fixture
def hub(tmp_path, monkeypatch, tiny_with_tokenizer) -> Path:
    """A Hugging Face cache holding org/tiny at revision REV (refs/main), offline."""
    import shutil

    cache = tmp_path / "hf-cache"
    repo = cache / "models--org--tiny"
    shutil.copytree(tiny_with_tokenizer, repo / "snapshots" / REV)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(REV)
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return repo / "snapshots" / REV


def test_hub_id_syntax():
    assert hub_id("HuggingFaceTB/SmolLM2-135M") == ("HuggingFaceTB/SmolLM2-135M", None)
    assert hub_id("org/name@v1.0") == ("org/name", "v1.0")
    for not_hub in ("./small", "small", "runs/tiny/final", "/abs/x", "a/b c"):
        assert hub_id(not_hub) is None, not_hub


def test_existing_folder_wins_over_a_hub_id(tmp_path, monkeypatch, tiny_with_tokenizer):
    import shutil

    monkeypatch.chdir(tmp_path)
    shutil.copytree(tiny_with_tokenizer, tmp_path / "org" / "tiny")
    resolved = resolve_model("org/tiny")
    assert resolved.path == Path("org/tiny") and resolved.hub_id is None


@pytest.mark.parametrize("spec", ["org/tiny", f"org/tiny@{REV}"])
def test_grow_a_hub_id_from_the_cache(hub, tmp_path, spec, capsys):
    out = tmp_path / "big"
    assert cli.main(["grow", spec, str(out), "--op", "stack", "--factor", "2", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["src"] == str(hub) and report["out_layers"] == 4
    local = tmp_path / "big-local"
    assert cli.main(["grow", str(hub), str(local), "--op", "stack", "--factor", "2"]) == 0
    same = (out / "model.safetensors").read_bytes() == (local / "model.safetensors").read_bytes()
    assert same
    record = json.loads((out / "growth.json").read_text())
    assert record["source_hub_id"] == "org/tiny"
    assert record.get("source_revision") == (REV if "@" in spec else None)
    config = json.loads((out / "config.json").read_text())
    assert "_name_or_path" not in config
    card = (out / "README.md").read_text()
    meta = front_matter(card)
    assert meta == {
        "base_model": "org/tiny",
        "library_name": "transformers",
        "pipeline_tag": "text-generation",
        "license": "mit",
        "tags": ["growlm", "model-growth", "stack"],
    }
    assert "by the operator `stack` (factor=2, seed 0): 2 -> 4 layers" in card
    assert "layer map (source layer of each output layer): 0, 1, 0, 1" in card
    assert "check: not run" in card and 'from_pretrained("big")' in card
    # a local copy of a hub model still knows its base model: from config's _name_or_path
    assert front_matter((local / "README.md").read_text())["base_model"] == "org/tiny"


def test_check_result_goes_into_growth_json_and_card(hub, tmp_path):
    import growlm
    from growlm.grow import GrowOptions

    out = tmp_path / "deep"
    report = growlm.grow(
        "org/tiny", out, "zero-depth", {"num_layers": 3}, GrowOptions(check=True)
    ).to_json()
    record = json.loads((out / "growth.json").read_text())
    assert record["check"]["max_abs_logit_diff"] == report["max_abs_logit_diff"] < 1e-4
    card = (out / "README.md").read_text()
    assert f"max |logit diff| {report['max_abs_logit_diff']}" in card
    assert f"loss before {report['loss_before']}, after {report['loss_after']}" in card
    assert front_matter(card)["tags"] == ["growlm", "model-growth", "zero-depth"]


def test_card_without_known_source_has_no_base_model(tmp_path, tiny_dir):
    import growlm

    growlm.grow(tiny_dir("gpt2"), tmp_path / "g", "stack", {"factor": 2})
    meta = yaml.safe_load((tmp_path / "g" / "README.md").read_text().split("---")[1])
    assert "base_model" not in meta and "license" not in meta
    assert meta["library_name"] == "transformers" and "growlm" in meta["tags"]


def test_eval_a_hub_id(hub, tmp_path, capsys):
    data = tmp_path / "t.txt"
    data.write_text(TEXT)
    assert cli.main(["eval", "org/tiny", "--data", str(data), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["model"] == "org/tiny"


def test_plan_write_recipe_uses_the_models_tokenizer(hub, tmp_path, capsys):
    from growlm.train.recipe import load_recipe

    out = tmp_path / "r.yaml"
    argv = ["plan", "--model", "org/tiny", "--tokens", "1e6", "--growth-tokens", "2e5"]
    argv += ["--growth-factor", "2"]
    assert cli.main([*argv, "--write-recipe", str(out), "--json"]) == 0
    data = yaml.safe_load(out.read_text())["data"]
    assert data["tokenizer"] == str(hub) and "vocab_size" not in data
    assert load_recipe(out).data.tokenizer == str(hub)


def test_train_init_keeps_a_hub_id_and_resolves_it(hub, tmp_path):
    from growlm.train.model import init_folder, init_metadata
    from growlm.train.recipe import load_recipe

    tiny = Path(__file__).parents[1] / "recipes" / "tiny.yaml"
    recipe = load_recipe(tiny, ["model.init=org/tiny"])
    assert recipe.model.init == "org/tiny"
    init_folder.cache_clear()
    try:
        assert init_folder("org/tiny") == hub
        assert init_metadata("org/tiny") == {"base_model": "org/tiny", "license": "mit"}
    finally:
        init_folder.cache_clear()

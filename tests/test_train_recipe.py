"""Recipes: every shipped one parses and plans; bad ones fail up front with one clear line."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from growlm.errors import InvalidRecipe
from growlm.train.growth import check_growth
from growlm.train.model import build_config, param_count
from growlm.train.recipe import check_resumable, load_recipe, recipe_from_dict, recipe_to_dict
from growlm.train.schema import describe

RECIPES = sorted((Path(__file__).parents[1] / "recipes").glob("*.yaml"))
TINY = Path(__file__).parents[1] / "recipes" / "tiny.yaml"


def _tiny_raw() -> dict:
    return yaml.safe_load(TINY.read_text())


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: p.name)
def test_every_shipped_recipe_parses_and_its_growth_plans(path):
    recipe = load_recipe(path)
    config = build_config(recipe.model, 32000, 0)
    for index, stage in enumerate(recipe.stages):
        if stage.grow is not None:
            grown = check_growth(config, stage.grow, f"stages.{index}.grow")
            deeper = grown.num_hidden_layers > config.num_hidden_layers
            assert deeper or grown.model_type != config.model_type  # stacked or upcycled
            config = grown


def test_paper_recipe_matches_the_paper_setting():
    import torch

    from growlm.train.model import build_model

    recipe = load_recipe(TINY.parent / "paper-1.1b.yaml")
    base = build_config(recipe.model, 32000, 0)
    assert (base.num_hidden_layers, base.hidden_size) == (6, 2048)
    grown = check_growth(base, recipe.stages[1].grow, "g")
    assert (grown.num_hidden_layers, grown.hidden_size) == (24, 2048)
    with torch.device("meta"):
        assert 1.0e9 < param_count(build_model(grown)) < 1.25e9
    small, big = recipe.stage_optim(0), recipe.stage_optim(1)
    assert (small.lr, big.lr, small.warmup_steps, big.warmup_steps) == (1e-3, 3e-4, 3000, 3000)
    assert small.betas == (0.9, 0.95) and small.weight_decay == 0.1 and small.grad_clip == 1.0
    assert small.min_lr_ratio == 0.1
    assert small.micro_batch_size * small.grad_accum * 8 * recipe.data.seq_len == 2_097_152
    assert recipe.stages[0].tokens == 10_000_000_000


def test_yaml_scientific_notation_and_overrides():
    recipe = recipe_from_dict(
        _tiny_raw(),
        [
            "optim.lr=5e-4",
            "stages.grown.optim.lr=1e-4",
            "stages.0.tokens=1e5",
            "run.eval_every=7",
            "model.config.num_hidden_layers=3",
        ],
    )
    assert recipe.optim.lr == 5e-4
    assert recipe.stage_optim(1).lr == 1e-4 and recipe.stage_optim(0).lr == 5e-4
    assert recipe.stages[0].tokens == 100_000 and isinstance(recipe.stages[0].tokens, int)
    assert recipe.run.eval_every == 7
    assert recipe.model.config["num_hidden_layers"] == 3


def test_relative_data_paths_resolve_from_the_recipe_folder():
    recipe = load_recipe(TINY)
    assert Path(recipe.data.sources[0]) == (TINY.parent.parent / "tests/fixtures/shakespeare")


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["optim.lrr=1"], "optim.lrr: unknown key"),
        (["optim.lr=0"], "^optim.lr must be > 0"),  # the key set, not the stage it reaches
        (["stages.grown.optim.lr=-1"], "stages.1.optim.lr must be > 0"),
        (["stages.grown.optim.warmup=3"], "stages.1.optim.warmup: unknown key"),
        (["optim.betas=[0.9]"], "optim.betas: expected 2 values"),
        (["optim.micro_batch_size=2.5"], "optim.micro_batch_size: expected an integer"),
        (["run.precision=fp8"], "run.precision: 'fp8' is not one of"),
        (["stages.0.tokens=0"], "stages.0.tokens must be > 0"),
        (["stages.1.name=base"], "duplicate stage name 'base'"),
        (["stages.0.name=final"], "'final' is reserved"),
        (["stages.0.grow={op: stack, factor: 2}"], "first stage can only grow a model.init"),
        (["stages.base.optimizer_state=carry"], "'carry' needs a grow step"),
        (["data.sources=[]"], "data: give data.sources or data.prepared"),
        (["model.config.vocab_size=100"], "set by the tokenizer"),
        (["stages=[]"], "at least one stage"),
        (["stages.9.tokens=1"], "out of range"),
        (["nokey"], "expected key=value"),
    ],
)
def test_invalid_recipes_are_rejected_with_the_key(overrides, message):
    with pytest.raises(InvalidRecipe, match=message.replace("[", r"\[")):
        recipe_from_dict(_tiny_raw(), overrides)


def test_missing_data_section_is_rejected():
    raw = _tiny_raw()
    del raw["data"]
    with pytest.raises(InvalidRecipe, match="data: required section is missing"):
        recipe_from_dict(raw, [])


@pytest.mark.parametrize(
    ("grow", "message"),
    [
        ({"op": "nope"}, "stages.1.grow: unknown operator 'nope'"),
        ({"op": "layers", "layers": [0]}, "stages.1.grow: --layers lists 1 layers"),
        ({"op": "stack", "factor": 1}, "stages.1.grow: --factor must be an integer >= 2"),
    ],
)
def test_growth_that_cannot_run_or_shrinks_is_rejected_before_training(grow, message):
    recipe = recipe_from_dict(_tiny_raw(), [f"stages.1.grow={grow}"])
    config = build_config(recipe.model, 512, 0)
    with pytest.raises(InvalidRecipe, match=message):
        check_growth(config, recipe.stages[1].grow, "stages.1.grow")


def test_growth_that_does_not_enlarge_is_rejected(monkeypatch):
    import growlm.train.growth as growth

    # an operator that returns the model unchanged (the registry itself refuses such params)
    monkeypatch.setattr(growth, "grow_tensors", lambda cfg, tensors, *a, **k: (cfg, tensors, {}))
    recipe = recipe_from_dict(_tiny_raw(), [])
    config = build_config(recipe.model, 512, 0)
    with pytest.raises(
        InvalidRecipe,
        match=r"stages.1.grow: grows the model from .* a growth stage must make the model larger",
    ):
        check_growth(config, recipe.stages[1].grow, "stages.1.grow")


def test_unknown_model_config_key_is_rejected():
    recipe = recipe_from_dict(_tiny_raw(), ["model.config.hiden_size=32"])
    with pytest.raises(InvalidRecipe, match=r"model.config.hiden_size: not a llama config key"):
        build_config(recipe.model, 512, 0)
    recipe = recipe_from_dict(_tiny_raw(), ["model.type=not-a-model"])
    with pytest.raises(InvalidRecipe, match="unknown Hugging Face model type 'not-a-model'"):
        build_config(recipe.model, 512, 0)


def test_every_field_is_documented():
    from growlm.train.recipe import Recipe

    rows = describe(Recipe)
    assert {r[0] for r in rows} >= {"optim.lr", "run.parallel", "stages", "data.seq_len"}
    assert all(r[3] for r in rows), [r[0] for r in rows if not r[3]]


def test_docs_field_table_is_the_schema():
    """docs/train.md's table is generated (scripts/recipe_fields.py): it cannot drift."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "recipe_fields", Path(__file__).parents[1] / "scripts" / "recipe_fields.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    text = module.DOC.read_text()
    assert module.with_table(text) == text, "run scripts/recipe_fields.py"
    assert "| `run.on_nonfinite` |" in text and "| `run.spike_factor` |" in text


def test_precision_accepts_both_spellings():
    for spelling, meant in (("bfloat16", "bf16"), ("bf16", "bf16"), ("float32", "fp32")):
        assert recipe_from_dict(_tiny_raw(), [f"run.precision={spelling}"]).run.precision == meant
    with pytest.raises(InvalidRecipe, match=r"run\.precision: 'fp16' is not one of"):
        recipe_from_dict(_tiny_raw(), ["run.precision=fp16"])


def test_a_stage_override_is_named_as_the_stage_key():
    raw = _tiny_raw()
    raw["stages"][0]["optim"] = {"lr": -1}
    with pytest.raises(InvalidRecipe, match=r"^stages\.0\.optim\.lr must be > 0, got -1\.0$"):
        recipe_from_dict(raw, [])


def test_cli_reports_a_bad_recipe_in_one_line(tmp_path, capsys):
    from growlm.cli import main

    code = main(["train", str(TINY), "--out", str(tmp_path / "o"), "--set", "optim.lr=0"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert err == ["error: optim.lr must be > 0, got 0.0"]  # the key the user set
    assert not (tmp_path / "o").exists()


def test_recipe_to_dict_is_plain_data():
    raw = _tiny_raw()
    raw["stages"][1]["optim"]["betas"] = (0.8, 0.9)  # a tuple, as a caller may build one
    plain = recipe_to_dict(recipe_from_dict(raw, []))
    assert plain["optim"]["betas"] == [0.9, 0.95]
    assert plain["stages"][1]["optim"]["betas"] == [0.8, 0.9]
    assert yaml.safe_load(yaml.safe_dump(plain)) == plain


RESUMED = [  # (override, stage in the checkpoint, finished, error or None)
    ([], 1, False, None),
    (["stages.grown.optim.lr=1e-4"], 1, False, None),  # the stage in progress may change optim
    (["optim.lr=1e-4"], 0, False, None),  # ... also through the shared section
    (["stages.base.tokens=512"], 1, False, "stages: the stages already trained differ"),
    (["stages.grown.tokens=512"], 1, False, "stages: stage 'grown' in progress differs from"),
    (["stages.base.optim.lr=1e-4"], 0, True, "stages: the stages already trained differ"),
    (["optim.lr=1e-4"], 0, True, "optim: differs for stage 'base', already trained in 'OUT'"),
    (["optim.lr=1e-4"], 1, False, "optim: differs for stage 'base', already trained in 'OUT'"),
    (["seed=7"], 0, False, "seed: differs from the recipe of the run being resumed in 'OUT'"),
    (["data.seq_len=32"], 0, False, "data: differs"),
    (["model.config.hidden_size=128"], 0, False, "model: differs"),
]


@pytest.mark.parametrize("sets,stage,finished,error", RESUMED)
def test_resume_accepts_only_an_unchanged_past(sets, stage, finished, error):
    saved = recipe_to_dict(load_recipe(TINY))
    current = load_recipe(TINY, sets)
    if error is None:
        check_resumable(current, saved, stage, finished, "OUT")
        return
    with pytest.raises(InvalidRecipe, match="^" + re.escape(error)):
        check_resumable(current, saved, stage, finished, "OUT")


def test_resume_refuses_a_checkpoint_past_the_recipes_stages():
    raw = _tiny_raw()
    saved = recipe_to_dict(recipe_from_dict(raw, []))
    raw["stages"] = raw["stages"][:1]
    with pytest.raises(InvalidRecipe, match=r"^stages: the stages already trained differ"):
        check_resumable(recipe_from_dict(raw, []), saved, 1, False, "OUT")


def test_resume_reads_an_older_checkpoints_recipe_through_todays_schema():
    """A checkpoint written before a field existed (here model.templates, at its default) is
    resumable; a real difference beside it is still refused."""
    saved = recipe_to_dict(load_recipe(TINY))
    del saved["model"]["templates"]  # as recipes were saved before the field was added
    check_resumable(load_recipe(TINY), saved, 0, False, "OUT")
    with pytest.raises(InvalidRecipe, match=r"^model: differs"):
        check_resumable(load_recipe(TINY, ["model.config.hidden_size=128"]), saved, 0, False, "OUT")

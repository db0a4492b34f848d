"""Multi-stage recipes: gradual stacking and MIDAS (every parameter in the rebuilt optimizer and
updated after each growth), MSLT (frozen parameters do not move), MSG masks in training (ramp
logged, gone after it, exported model equals the trained one), and their bad inputs."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from safetensors.torch import load_file
from transformers import AutoConfig

from growlm.errors import InvalidRecipe
from growlm.train.checkpoint import list_checkpoints, load_checkpoint
from growlm.train.growth import grow_weights
from growlm.train.loop import train
from growlm.train.model import build_model
from growlm.train.recipe import GrowConfig, recipe_from_dict

RECIPES = Path(__file__).parents[1] / "recipes"
STEP_TOKENS = 8 * 64  # tiny.yaml: micro batch 8, seq 64


def _raw(stages: list[dict], **run) -> dict:
    raw = yaml.safe_load((RECIPES / "tiny.yaml").read_text())
    raw["model"]["config"]["num_hidden_layers"] = 1
    raw["stages"] = stages
    raw["run"].update({"eval_every": 0, "checkpoint_every": 0, "keep_checkpoints": 10, **run})
    return raw


def _train(raw: dict, out: Path, monkeypatch) -> list[dict]:
    monkeypatch.setenv("GROWLM_CACHE", str(out.parent / "cache"))
    recipe = recipe_from_dict(copy.deepcopy(raw), [], base_dir=RECIPES)
    train(recipe, out)
    lines = (out / "metrics.jsonl").read_text().splitlines()
    return [json.loads(line) for line in lines]


def _stage(out: Path, name: str):
    config = AutoConfig.from_pretrained(out / name)
    return config, load_file(str(out / name / "model.safetensors"))


def _grown_start(out: Path, prev: str, grow: GrowConfig, seed: int):
    """The weights a stage started from: the previous stage's export through its operator."""
    config, weights = _stage(out, prev)
    return grow_weights(config, weights, grow, seed)


GRADUAL = [
    {"name": "s1", "tokens": 6 * STEP_TOKENS},
    {"name": "s2", "tokens": 6 * STEP_TOKENS, "grow": {"op": "stack", "factor": 2}},
    {"name": "s3", "tokens": 6 * STEP_TOKENS, "grow": {"op": "top", "block": 1, "copies": 2}},
    {"name": "s4", "tokens": 6 * STEP_TOKENS, "grow": {"op": "midas", "block": 2}},
]


def test_gradual_stacking_and_midas_update_every_parameter(tmp_path, monkeypatch):
    raw = _raw(GRADUAL)
    _train(raw, tmp_path / "run", monkeypatch)
    out = tmp_path / "run"
    seed = raw["seed"]
    layers = [1, 2, 4, 6]
    checkpoints = list_checkpoints(out)
    for index in range(1, 4):
        stage = GRADUAL[index]
        grow = GrowConfig(op=stage["grow"]["op"], params={**stage["grow"], "op": None})
        grow.params.pop("op")
        config, start, _ = _grown_start(out, GRADUAL[index - 1]["name"], grow, seed + index)
        end_config, end = _stage(out, stage["name"])
        assert end_config.num_hidden_layers == config.num_hidden_layers == layers[index]
        assert set(end) == set(start)
        unchanged = [n for n in end if torch.equal(end[n], start[n])]
        assert unchanged == [], f"{stage['name']}: not updated: {unchanged}"
        # the optimizer rebuilt after the growth holds every parameter of the grown model
        ckpt = load_checkpoint(checkpoints[index])
        model_params = {n for n, _ in build_model(ckpt.config).named_parameters()}
        assert ckpt.config.num_hidden_layers == layers[index]
        assert set(ckpt.optimizer) == model_params


def test_midas_and_top_layer_maps():
    from growlm.ops.depth import midas, top

    assert [s.src for s in top(4, block=2, copies=2)] == [0, 1, 2, 3, 2, 3, 2, 3]
    assert [s.src for s in top(2)] == [0, 1, 0, 1]
    assert [s.src for s in midas(6, block=2)] == [0, 1, 2, 3, 2, 3, 4, 5]
    assert [s.src for s in midas(4)] == [0, 1, 2, 1, 2, 3]


MSLT = [
    {"name": "s1", "tokens": 6 * STEP_TOKENS},
    {
        "name": "s2",
        "tokens": 6 * STEP_TOKENS,
        "grow": {"op": "stack", "factor": 2},
        "trainable": "new",
    },
    {
        "name": "s3",
        "tokens": 6 * STEP_TOKENS,
        "grow": {"op": "top", "block": 1},
        "trainable": "new",
        "optimizer_state": "carry",
    },
    {"name": "s4", "tokens": 6 * STEP_TOKENS},
]


@pytest.mark.parametrize("tied", [False, True])
def test_mslt_trains_only_the_new_top_layers(tmp_path, monkeypatch, tied):
    raw = _raw(MSLT)
    raw["model"]["config"]["tie_word_embeddings"] = tied
    records = _train(raw, tmp_path / "run", monkeypatch)
    out, seed = tmp_path / "run", raw["seed"]
    # the head trains; a tied head is the embedding, so the embedding trains with it
    head = {"model.norm.weight", "model.embed_tokens.weight" if tied else "lm_head.weight"}
    for index, first_new in ((1, 1), (2, 2)):
        stage = MSLT[index]
        params = {k: v for k, v in stage["grow"].items() if k != "op"}
        grow = GrowConfig(op=stage["grow"]["op"], params=params)
        _, start, _ = _grown_start(out, MSLT[index - 1]["name"], grow, seed + index)
        _, end = _stage(out, stage["name"])
        for name in end:
            trainable = name in head or any(
                name.startswith(f"model.layers.{i}.") for i in range(first_new, 8)
            )
            moved = not torch.equal(end[name], start[name])
            assert moved == trainable, (stage["name"], name, moved)
    # the last stage trains everything again
    _, s3 = _stage(out, "s3")
    _, s4 = _stage(out, "s4")
    assert all(not torch.equal(s3[n], s4[n]) for n in s4)
    # FLOPs per token: 6N when all train; with frozen layers 2N forward + 2N_trainable weight
    # gradients + activation gradients down to the lowest trainable tensor (2N_trainable, or
    # 2N when a tied head makes the embedding trainable)
    s2 = [r for r in records if r["stage"] == "s2"]
    s4r = [r for r in records if r["stage"] == "s4"]
    d2 = (s2[1]["flops"] - s2[0]["flops"]) / STEP_TOKENS
    d4 = (s4r[1]["flops"] - s4r[0]["flops"]) / STEP_TOKENS
    config, _ = _stage(out, "s2")
    model = build_model(config)
    n2 = sum(p.numel() for p in model.parameters())
    trainable = sum(
        p.numel()
        for n, p in model.named_parameters()
        if n in head or n.startswith("model.layers.1.")
    )
    n4 = sum(p.numel() for p in build_model(_stage(out, "s4")[0]).parameters())
    assert d4 == pytest.approx(6 * n4)
    assert d2 == pytest.approx(2 * n2 + 2 * trainable + 2 * (n2 if tied else trainable))


FADE = [
    {"name": "s1", "tokens": 6 * STEP_TOKENS},
    {
        "name": "s2",
        "tokens": 8 * STEP_TOKENS,
        "grow": {"op": "random-depth", "num_layers": 3, "fade_steps": 4},
    },
]


def test_masked_growth_ramps_then_exports_a_plain_model(tmp_path, monkeypatch):
    raw = _raw(FADE, eval_every=1, eval_sequences=8)
    records = _train(raw, tmp_path / "run", monkeypatch)
    s2 = [r for r in records if r["stage"] == "s2"]
    assert [r.get("mask") for r in s2] == [0.0, 0.25, 0.5, 0.75, None, None, None, None]
    # growth was function-preserving: the first val loss after growth (m = 0 at step 1 ...)
    # is measured after one update; the masked model at step 0 equals the small one exactly
    # (tests/test_train_masks.py); here: the exported model is the trained one
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tmp_path / "run" / "final")
    ckpt = load_checkpoint(list_checkpoints(tmp_path / "run")[-1])
    assert ckpt.state["progress"]["fade"] is None
    for name, tensor in model.state_dict().items():
        assert torch.equal(tensor, ckpt.model[name]), name
    # the exported plain model scores the validation windows exactly as the trained model did
    # at its last evaluation (masks gone; same bf16 autocast)
    from growlm.data.sampler import TokenWindows
    from growlm.data.shards import open_shards
    from growlm.train.data import prepared_folder

    recipe = recipe_from_dict(copy.deepcopy(raw), [], base_dir=RECIPES)
    shards = open_shards(prepared_folder(recipe.data))
    val = TokenWindows(shards.splits["val"], recipe.data.seq_len)
    batch = val.batch(np.arange(min(val.count, 8)))
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        logits = model(input_ids=batch[:, :-1]).logits
    loss = torch.nn.functional.cross_entropy(logits.float().flatten(0, 1), batch[:, 1:].flatten())
    assert loss.item() == pytest.approx(s2[-1]["val_loss"], abs=1e-4)


def test_resume_inside_the_ramp_is_exact(tmp_path, monkeypatch):
    raw = _raw(FADE, checkpoint_every=8)  # step 8 = stage s2 step 2, masks half way
    full = tmp_path / "full"
    _train(raw, full, monkeypatch)
    part = tmp_path / "part"
    cut = copy.deepcopy(raw)
    _train(cut, part, monkeypatch)
    # drop everything after the mid-ramp checkpoint and resume from it
    import shutil

    for ck in list_checkpoints(part):
        if load_checkpoint(ck).state["progress"]["step"] != 8:
            shutil.rmtree(ck)
    for leftover in ("s2", "final"):
        shutil.rmtree(part / leftover)
    ckpt = load_checkpoint(list_checkpoints(part)[-1])
    assert ckpt.state["progress"]["fade"] is not None
    recipe = recipe_from_dict(copy.deepcopy(raw), [], base_dir=RECIPES)
    train(recipe, part, resume=True)
    a = load_file(str(full / "final" / "model.safetensors"))
    b = load_file(str(part / "final" / "model.safetensors"))
    assert set(a) == set(b) and all(torch.equal(a[n], b[n]) for n in a)


def test_resume_inside_the_ramp_refuses_a_stage_shorter_than_the_ramp(tmp_path, monkeypatch):
    """The ramp is checked against the stage's steps once, before training, also for the stage
    a checkpoint resumes in (a new micro-batch size there changes its step count)."""
    import shutil

    raw = _raw(FADE, checkpoint_every=8)  # step 8 = stage s2 step 2, masks half way
    out = tmp_path / "run"
    _train(raw, out, monkeypatch)
    for ck in list_checkpoints(out):
        if load_checkpoint(ck).state["progress"]["step"] != 8:
            shutil.rmtree(ck)
    shutil.rmtree(out / "final")
    recipe_before = (out / "recipe.yaml").read_text()
    shorter = copy.deepcopy(raw)
    shorter["stages"][1]["optim"] = {"micro_batch_size": 32}  # 8 steps of 8 -> 2 steps of 32
    recipe = recipe_from_dict(shorter, [], base_dir=RECIPES)
    message = r"^stages\.1\.grow\.fade_steps: 4 must be < the stage's 2 steps \(the masks"
    with pytest.raises(InvalidRecipe, match=message):
        train(recipe, out, resume=True)
    assert (out / "recipe.yaml").read_text() == recipe_before  # refused before any write
    assert not (out / "final").exists()


BAD = [
    ({"op": "random-depth", "num_layers": 3, "fade_steps": 0}, {}, "fade_steps must be"),
    ({"op": "stack", "factor": 2, "fade_steps": 3}, {}, "masks apply to random-depth"),
    ({"op": "random-width", "hidden_size": 96}, {"trainable": "new"}, "grows width"),
    ({"op": "interleave", "factor": 2}, {"trainable": "new"}, "places them otherwise"),
    ({"op": "random-depth", "num_layers": 4}, {"trainable": "new"}, "places them otherwise"),
    ({"op": "random-depth", "num_layers": 3, "fade_steps": 6}, {}, "must be < the stage's 6"),
    ({"op": "top", "blocks": 1}, {}, "--blocks does not apply to top"),
    ({"op": "midas", "block": 9}, {}, "--block must be an integer in 1..2"),
    ({"op": "learn-depth", "factor": 2, "steps": 1}, {"trainable": "new"}, "learns a map"),
]


@pytest.mark.parametrize("grow,extra,message", BAD)
def test_bad_growth_stages_fail_before_training(tmp_path, monkeypatch, grow, extra, message):
    stages = [
        {"name": "s1", "tokens": 6 * STEP_TOKENS},
        {"name": "s2", "tokens": 6 * STEP_TOKENS, "grow": grow, **extra},
    ]
    raw = _raw(stages)
    raw["model"]["config"]["num_hidden_layers"] = 2
    with pytest.raises(InvalidRecipe, match=message):
        _train(raw, tmp_path / "run", monkeypatch)
    assert not (tmp_path / "run" / "metrics.jsonl").exists()


@pytest.mark.parametrize("op", ["direct-width", "zero-width", "random-width"])
def test_width_growth_stages_plan_on_meta_tensors(op):
    """Recipes plan every growth on meta tensors before training (Net2Net's copy counts once
    lived on the CPU and broke this)."""
    from growlm.train.growth import check_growth
    from growlm.train.model import build_config
    from growlm.train.recipe import ModelConfig

    config = build_config(
        ModelConfig(type="llama", config={"hidden_size": 32, "intermediate_size": 48,
                                           "num_hidden_layers": 2, "num_attention_heads": 2,
                                           "num_key_value_heads": 2}),
        300,
        0,
    )  # fmt: skip
    grow = GrowConfig(op=op, params={"hidden_size": 64, "intermediate_size": 96, "num_heads": 4})
    new = check_growth(config, grow, "stages.1.grow")
    assert (new.hidden_size, new.intermediate_size, new.num_attention_heads) == (64, 96, 4)


def _learn_stages(grow: dict) -> list[dict]:
    return [
        {"name": "s1", "tokens": 4 * STEP_TOKENS},
        {"name": "s2", "tokens": 4 * STEP_TOKENS, "grow": grow},
    ]


def test_learn_depth_stage_with_zero_steps_trains_exactly_like_stack(tmp_path, monkeypatch):
    stack = _train(_raw(_learn_stages({"op": "stack", "factor": 2})), tmp_path / "a", monkeypatch)
    learn = _train(
        _raw(_learn_stages({"op": "learn-depth", "factor": 2, "steps": 0})),
        tmp_path / "b",
        monkeypatch,
    )
    assert [r["loss"] for r in learn] == [r["loss"] for r in stack]
    assert [r["flops"] for r in learn] == [r["flops"] for r in stack]


def test_learn_stage_trains_its_maps_and_counts_their_flops(tmp_path, monkeypatch):
    grow = {"op": "learn-depth+learn-width", "factor": 2, "hidden_size": 96, "steps": 3}
    records = _train(_raw(_learn_stages(grow)), tmp_path / "run", monkeypatch)
    out = tmp_path / "run"
    config, _ = _stage(out, "s2")
    assert (config.num_hidden_layers, config.hidden_size) == (2, 96)
    s1 = [r for r in records if r["stage"] == "s1"]
    s2 = [r for r in records if r["stage"] == "s2"]
    n_big = sum(t.numel() for t in _stage(out, "s2")[1].values())
    jump = s2[0]["flops"] - s1[-1]["flops"] - 6 * n_big * STEP_TOKENS
    # 3 LiGO steps of 8 x 64 tokens through the large model, plus composing the maps
    assert jump > 6 * n_big * 3 * STEP_TOKENS
    assert jump < 6 * n_big * 3 * STEP_TOKENS * 1.5


def test_masks_refuse_a_compiled_model(tmp_path, monkeypatch):
    stages = [
        {"name": "s1", "tokens": 6 * STEP_TOKENS},
        {"name": "s2", "tokens": 6 * STEP_TOKENS, "grow": FADE[1]["grow"]},
    ]
    with pytest.raises(InvalidRecipe, match=r"set run\.compile false"):
        _train(_raw(stages, compile=True), tmp_path / "run", monkeypatch)

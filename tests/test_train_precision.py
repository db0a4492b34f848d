"""``run.precision: auto``: the width rule (growlm/train/precision.py) and the loop using it per
stage. The crossover itself is measured in bench/small_model_speed.py, never timed here."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from transformers import GPT2Config, LlamaConfig

from growlm.train.loop import train
from growlm.train.precision import AUTO_BF16_MIN_WIDTH, autocast_dtype, resolve_precision
from growlm.train.recipe import load_recipe

TINY = Path(__file__).parents[1] / "recipes" / "tiny.yaml"


def test_auto_is_fp32_below_the_crossover_width_and_bf16_from_it():
    below = LlamaConfig(hidden_size=AUTO_BF16_MIN_WIDTH - 16, num_attention_heads=2)
    at = LlamaConfig(hidden_size=AUTO_BF16_MIN_WIDTH, num_attention_heads=2)
    wide = LlamaConfig(hidden_size=4096, num_attention_heads=32)
    assert resolve_precision("auto", below) == "fp32"
    assert resolve_precision("auto", at) == "bf16"
    assert resolve_precision("auto", wide) == "bf16"
    assert resolve_precision("auto", GPT2Config(n_embd=32, n_head=2)) == "fp32"  # n_embd
    assert resolve_precision("auto", below, device_type="cuda") == "bf16"
    assert resolve_precision("bf16", below) == "bf16"  # an explicit choice is kept
    assert resolve_precision("fp32", at) == "fp32"
    assert autocast_dtype("auto", at) is torch.bfloat16 and autocast_dtype("auto", below) is None


def _losses(tmp_path: Path, precision: str, name: str) -> list[float]:
    recipe = load_recipe(
        TINY,
        [
            "stages.base.tokens=1536",
            "stages.grown.tokens=1536",
            f"run.precision={precision}",
            "run.eval_every=0",
            "run.checkpoint_every=0",
            "run.eval_sequences=2",
            "run.threads=1",
        ],
    )
    train(recipe, tmp_path / name)
    rows = (tmp_path / name / "metrics.jsonl").read_text().splitlines()
    return [json.loads(r)["loss"] for r in rows]


def test_loop_trains_auto_as_the_rule_says(tmp_path, monkeypatch):
    """tiny.yaml is 64 wide: auto trains exactly as fp32 while 64 is below the crossover, and
    exactly as bf16 once the crossover is moved below 64."""
    monkeypatch.setenv("GROWLM_CACHE", str(tmp_path / "cache"))
    fp32 = _losses(tmp_path, "fp32", "fp32")
    bf16 = _losses(tmp_path, "bf16", "bf16")
    assert fp32 != bf16
    assert _losses(tmp_path, "auto", "auto-fp32") == fp32
    monkeypatch.setattr("growlm.train.precision.AUTO_BF16_MIN_WIDTH", 32)
    assert _losses(tmp_path, "auto", "auto-bf16") == bf16
    assert AUTO_BF16_MIN_WIDTH > 64, "the test assumes tiny.yaml's width is below the crossover"


@pytest.mark.parametrize("bad", ["fp16", "AUTO"])
def test_unknown_precision_is_refused(bad):
    with pytest.raises(Exception, match=f"run.precision: '{bad}' is not one of"):
        load_recipe(TINY, [f"run.precision={bad}"])

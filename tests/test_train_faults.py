"""A non-finite loss stops the run with one line naming the step; the weights are not touched
and the last good checkpoint stays resumable."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file

from growlm.errors import NumericalFault
from growlm.train.loop import train
from growlm.train.recipe import load_recipe

TINY = Path(__file__).parents[1] / "recipes" / "tiny.yaml"


def test_nan_loss_stops_at_the_step_and_keeps_the_last_checkpoint(tmp_path, monkeypatch):
    monkeypatch.setenv("GROWLM_CACHE", str(tmp_path / "cache"))
    real = _poison(monkeypatch, {6}, float("nan"))
    sets = [
        "stages.base.tokens=4096",
        "stages.grown.tokens=4096",
        "run.checkpoint_every=2",
        "run.eval_every=0",
        "run.eval_sequences=8",
    ]
    recipe = load_recipe(TINY, sets)
    out = tmp_path / "run"
    with pytest.raises(NumericalFault) as err:
        train(recipe, out)
    message = str(err.value)
    assert "non-finite loss at step 6 (stage 'base'" in message
    assert "step-00000004" in message and "\n" not in message
    steps = [json.loads(x)["step"] for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3, 4, 5]  # the faulty step is not logged
    weights = load_file(str(out / "checkpoints" / "step-00000004" / "model.safetensors"))
    assert all(torch.isfinite(t).all() for t in weights.values())
    # recovery: resume the stage in progress with a lower lr (allowed), and finish the run
    monkeypatch.setattr(F, "cross_entropy", real)
    train(load_recipe(TINY, [*sets, "stages.base.optim.lr=1e-3"]), out, resume=True)
    assert (out / "final" / "model.safetensors").exists()
    steps = [json.loads(x)["step"] for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert steps == list(range(1, 17))


def _poison(monkeypatch, bad_calls: set[int], factor: float = float("inf")):
    """Make the training loss non-finite (times ``factor``) on the given training calls;
    evaluation (reduction="sum") is left alone. Returns the real cross_entropy."""
    real = F.cross_entropy
    calls = {"train": 0}

    def poisoned(logits, targets, *args, **kwargs):
        out = real(logits, targets, *args, **kwargs)
        if kwargs.get("reduction", "mean") == "mean":
            calls["train"] += 1
            if calls["train"] in bad_calls:
                return out * factor
        return out

    monkeypatch.setattr(F, "cross_entropy", poisoned)
    return real


SKIP = [
    "stages.base.tokens=4096",
    "stages.grown.tokens=4096",
    "run.eval_every=0",
    "run.eval_sequences=8",
    "run.on_nonfinite=skip",
    "run.skip_lr_factor=0.5",
]


def test_skip_policy_drops_the_batch_and_halves_the_lr(tmp_path, monkeypatch):
    monkeypatch.setenv("GROWLM_CACHE", str(tmp_path / "cache"))
    _poison(monkeypatch, {3})
    out = tmp_path / "run"
    train(load_recipe(TINY, [*SKIP, "run.max_skipped_steps=2"]), out)
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == list(range(1, 17))
    assert rows[2]["event"] == "skipped_nonfinite" and rows[2]["loss"] is None
    assert all("event" not in r for i, r in enumerate(rows) if i != 2)
    # the schedule goes on at half the lr from the skipped step (the tiny recipe warms up 5
    # steps to 3e-3): step 4 would have had 3e-3 * 4/5
    assert rows[3]["lr"] == pytest.approx(0.5 * 3e-3 * 4 / 5)
    assert (out / "final" / "model.safetensors").exists()


def test_skip_policy_stops_past_its_limit(tmp_path, monkeypatch):
    monkeypatch.setenv("GROWLM_CACHE", str(tmp_path / "cache"))
    _poison(monkeypatch, {2, 4})
    with pytest.raises(NumericalFault, match="non-finite loss at step 4"):
        train(load_recipe(TINY, [*SKIP, "run.max_skipped_steps=1"]), tmp_path / "run")

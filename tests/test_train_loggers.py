"""TensorBoard and W&B hooks of the metrics logger, with stand-in modules (neither package is a
dependency): what is logged, at which step, and the one-line error when a package is missing."""

from __future__ import annotations

import sys
import types
from typing import ClassVar

import pytest

from growlm.errors import InvalidRecipe
from growlm.train.metrics import MetricsLogger, read_metrics

RECORDS = [
    {"step": 1, "stage": "base", "loss": 5.0, "lr": 1e-4, "tokens": 512},
    {"step": 2, "stage": "base", "loss": 4.5, "lr": 2e-4, "tokens": 1024, "val_loss": 4.7},
]


class FakeWriter:
    instances: ClassVar[list[FakeWriter]] = []

    def __init__(self, logdir: str):
        self.logdir, self.scalars, self.closed = logdir, [], False
        FakeWriter.instances.append(self)

    def add_scalar(self, key, value, step):
        self.scalars.append((key, value, step))

    def close(self):
        self.closed = True


def test_tensorboard_gets_every_number_at_its_step(tmp_path, monkeypatch):
    fake = types.ModuleType("torch.utils.tensorboard")
    fake.SummaryWriter = FakeWriter  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", fake)
    log = MetricsLogger(tmp_path, True, 2, 0, progress=False, tensorboard=True)
    for r in RECORDS:
        log.log(r)
    log.close()
    writer = FakeWriter.instances[-1]
    assert writer.logdir == str(tmp_path / "tensorboard") and writer.closed
    assert ("loss", 4.5, 2) in writer.scalars and ("val_loss", 4.7, 2) in writer.scalars
    assert not any(key == "stage" for key, _, _ in writer.scalars)  # strings are not scalars
    assert read_metrics(tmp_path / "metrics.jsonl") == RECORDS


def test_wandb_run_is_named_configured_and_finished(tmp_path, monkeypatch):
    calls: list[tuple] = []

    class Run:
        def log(self, numbers, step):
            calls.append(("log", numbers, step))

        def finish(self):
            calls.append(("finish",))

    fake = types.ModuleType("wandb")
    fake.init = lambda **kw: calls.append(("init", kw)) or Run()  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "wandb", fake)
    log = MetricsLogger(
        tmp_path, True, 2, 0, False, wandb_project="proj", run_name="r1", config={"seed": 3}
    )
    for r in RECORDS:
        log.log(r)
    log.close()
    assert calls[0] == (
        "init",
        {"project": "proj", "name": "r1", "config": {"seed": 3}, "resume": "allow"},
    )
    assert calls[2] == ("log", {"loss": 4.5, "lr": 2e-4, "tokens": 1024, "val_loss": 4.7}, 2)
    assert calls[-1] == ("finish",)


def test_missing_packages_fail_with_one_line(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "wandb", None)  # import raises ImportError
    with pytest.raises(InvalidRecipe, match=r"run.wandb_project: needs wandb \(pip install"):
        MetricsLogger(tmp_path, True, 2, 0, False, wandb_project="p")
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)
    with pytest.raises(InvalidRecipe, match=r"run\.tensorboard: needs the tensorboard package"):
        MetricsLogger(tmp_path, True, 2, 0, False, tensorboard=True)

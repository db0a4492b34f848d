"""Growing a transformers.Trainer checkpoint mid-run: train 2 steps, grow the checkpoint-2
folder with G_stack, resume the Trainer from the grown folder for 2 more steps."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import pytest
import torch
from tiny_models import V, save_model

import growlm

pytest.importorskip("accelerate")


class _Windows(torch.utils.data.Dataset):
    """Seeded random token windows (labels = inputs: the model shifts them)."""

    def __init__(self, n: int = 16, length: int = 16):
        gen = torch.Generator().manual_seed(0)
        self.ids = torch.randint(3, V, (n, length), generator=gen)

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {"input_ids": self.ids[i], "labels": self.ids[i]}


def _trainer(model_dir: Path, out: Path, max_steps: int):
    from transformers import AutoModelForCausalLM, Trainer, TrainingArguments

    args = TrainingArguments(
        output_dir=str(out),
        max_steps=max_steps,
        per_device_train_batch_size=4,
        learning_rate=1e-3,
        weight_decay=0.1,
        warmup_steps=1,
        save_steps=2,
        save_strategy="steps",
        logging_steps=1,
        report_to=[],
        use_cpu=True,
        seed=0,
        disable_tqdm=True,
    )
    model = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=torch.float32)
    return Trainer(model=model, args=args, train_dataset=_Windows())


def _moments(path: Path) -> dict[int, dict[str, torch.Tensor]]:
    return torch.load(path / "optimizer.pt", weights_only=True)["state"]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    """checkpoint-2 of a 4-step Trainer run of a tied 3-layer Llama (grown mid-run)."""
    root = tmp_path_factory.mktemp("trainer")
    src = save_model("llama-tied", root / "small")
    _trainer(src, root / "run", max_steps=4).train()
    ckpt = root / "run" / "checkpoint-2"
    assert (ckpt / "optimizer.pt").is_file()
    return ckpt


def test_trainer_checkpoint_grows_and_resumes(tmp_path, checkpoint):
    from growlm.train.hf_trainer import group_names

    ckpt = checkpoint

    out = tmp_path / "checkpoint-grown"
    report = growlm.grow(ckpt, out, "stack", {"factor": 2}).to_json()
    assert report["out_layers"] == 6

    cfg_src = json.loads((ckpt / "config.json").read_text())
    cfg_out = json.loads((out / "config.json").read_text())
    src_names = [n for g in group_names(cfg_src) for n in g]
    out_names = [n for g in group_names(cfg_out) for n in g]
    old, new = _moments(ckpt), _moments(out)
    old_by_name = {n: old[i] for i, n in enumerate(src_names)}
    new_by_name = {n: new[i] for i, n in enumerate(out_names)}
    assert len(new_by_name) == len(out_names) and len(out_names) > len(src_names)
    # layer 3 + i of the grown model is a copy of layer i: its moments are the same tensors
    for name, entry in new_by_name.items():
        src_name = name
        if name.startswith("model.layers."):
            i = int(name.split(".")[2])
            src_name = name.replace(f"model.layers.{i}.", f"model.layers.{i % 3}.", 1)
        for key in ("exp_avg", "exp_avg_sq", "step"):
            assert torch.equal(entry[key], old_by_name[src_name][key]), (name, key)
    for f in ("scheduler.pt", "trainer_state.json", "rng_state.pth"):
        assert (out / f).read_bytes() == (ckpt / f).read_bytes()
    record = json.loads((out / "growth.json").read_text())
    assert "rng_state.pth" in record["trainer_checkpoint"]["carried"]

    trainer = _trainer(out, tmp_path / "run2", max_steps=4)
    trainer.train(resume_from_checkpoint=str(out))
    assert trainer.state.global_step == 4
    logged = [(e["step"], e["loss"]) for e in trainer.state.log_history if "loss" in e]
    assert [step for step, _ in logged] == [1, 2, 3, 4]  # steps 1-2 carried, 3-4 after growth
    assert all(math.isfinite(loss) for _, loss in logged)
    assert trainer.model.config.num_hidden_layers == 6
    # the optimizer really resumed from the grown moments (step 2 -> 4 on every parameter)
    steps = {float(s["step"]) for s in trainer.optimizer.state_dict()["state"].values()}
    assert steps == {4.0}


def test_custom_optimizer_groups_refused(tmp_path, checkpoint):
    ckpt = tmp_path / "checkpoint-2"
    shutil.copytree(checkpoint, ckpt)
    state = torch.load(ckpt / "optimizer.pt", weights_only=True)
    groups = state["param_groups"]
    merged = [{**groups[0], "params": [p for g in groups for p in g["params"]]}]
    torch.save({**state, "param_groups": merged}, ckpt / "optimizer.pt")
    with pytest.raises(growlm.errors.InvalidGrowth, match="default AdamW groups"):
        growlm.grow(ckpt, tmp_path / "out", "stack", {"factor": 2})
    assert not (tmp_path / "out").exists()

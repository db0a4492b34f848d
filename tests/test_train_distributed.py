"""torchrun with 2 CPU processes (gloo), DDP and FSDP2, reaches the same losses as one process
with the same global batch (micro 4 x 2 processes vs micro 4 x 2 accumulation steps), through
a growth stage that carries AdamW's moments through the operator. fp32 so the only difference
is summation order: tolerance 1e-4 absolute on losses and final weights."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

TINY = Path(__file__).parents[1] / "recipes" / "tiny.yaml"
SETS = [
    "stages.base.tokens=2048",  # 4 steps of 8 sequences x 64 tokens
    "stages.grown.tokens=2048",
    "run.precision=fp32",
    "optim.micro_batch_size=4",
    "run.eval_every=2",
    "run.eval_sequences=16",
    "run.checkpoint_every=0",
    "stages.grown.optimizer_state=carry",  # AdamW moments grown and re-sharded (FSDP2: DTensor)
]
TOL = 1e-4


def _train(
    out: Path, cache: Path, nproc: int, extra: list[str], resume: bool = False
) -> list[dict]:
    args = ["train", str(TINY), "--out", str(out), *(["--resume"] if resume else [])]
    for item in SETS + extra:
        args += ["--set", item]
    if nproc == 1:
        cmd = [sys.executable, "-m", "growlm.cli", *args]
    else:
        torchrun = shutil.which("torchrun", path=str(Path(sys.executable).parent)) or "torchrun"
        cmd = [torchrun, "--standalone", "--nproc_per_node", str(nproc), "-m", "growlm.cli", *args]
    env = {**os.environ, "GROWLM_CACHE": str(cache), "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    result = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-4000:]
    return [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def single(tmp_path_factory) -> tuple[Path, Path, list[dict]]:
    root = tmp_path_factory.mktemp("dist")
    records = _train(root / "one", root / "cache", 1, ["optim.grad_accum=2", "run.threads=1"])
    return root, root / "one", records


@pytest.mark.slow
@pytest.mark.parametrize("parallel", ["ddp", "fsdp"])
def test_two_processes_match_one(single, parallel):
    root, one_dir, one = single
    out = root / parallel
    two = _train(out, root / "cache", 2, [f"run.parallel={parallel}", "run.threads=1"])
    assert [r["step"] for r in two] == [r["step"] for r in one] == list(range(1, 9))
    assert [r["tokens"] for r in two] == [r["tokens"] for r in one]
    for a, b in zip(one, two, strict=True):
        assert b["loss"] == pytest.approx(a["loss"], abs=TOL), (parallel, a["step"])
        assert b["grad_norm"] == pytest.approx(a["grad_norm"], rel=1e-3)
        assert b.get("val_loss", 0.0) == pytest.approx(a.get("val_loss", 0.0), abs=TOL)
    # the checkpoint written by rank 0 holds the full (gathered) grown model
    ref = load_file(one_dir / "final" / "model.safetensors")
    got = load_file(out / "final" / "model.safetensors")
    assert ref.keys() == got.keys()
    assert got["model.embed_tokens.weight"].shape == ref["model.embed_tokens.weight"].shape
    worst = max((ref[k] - got[k]).abs().max().item() for k in ref)
    assert worst < 1e-4
    assert "model.layers.3.mlp.down_proj.weight" in got
    assert torch.isfinite(got["lm_head.weight"]).all()


@pytest.mark.slow
def test_fsdp_resume_from_a_mid_stage_checkpoint_is_exact(tmp_path):
    """2-process FSDP2 run with checkpoints every 2 steps; then the same run resumed from its
    checkpoint at step 6 (inside the grown stage, carried moments sharded as DTensors) ends
    with bitwise the same weights."""
    cache = tmp_path / "cache"
    extra = ["run.parallel=fsdp", "run.threads=1", "run.checkpoint_every=2"]
    extra.append("run.keep_checkpoints=10")
    full = tmp_path / "full"
    records = _train(full, cache, 2, extra)
    resumed = tmp_path / "resumed"
    shutil.copytree(full, resumed)
    for ckpt in sorted((resumed / "checkpoints").iterdir()):
        if int(ckpt.name.split("-")[1]) > 6:
            shutil.rmtree(ckpt)
    for folder in ("grown", "final"):
        shutil.rmtree(resumed / folder)
    again = _train(resumed, cache, 2, extra, resume=True)
    assert [r["step"] for r in again] == [r["step"] for r in records]
    a = load_file(full / "final" / "model.safetensors")
    b = load_file(resumed / "final" / "model.safetensors")
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)

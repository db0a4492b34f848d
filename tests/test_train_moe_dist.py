"""An MoE run (dense Llama, then upcycled to a 4-expert top-2 Mixtral with AdamW's moments
carried) under torchrun with 2 CPU processes (gloo), DDP and FSDP2, and through kills and
resumes. fp32, so the only difference between process counts is summation order: tolerance
1e-4 absolute on losses, router losses and final weights; the expert load (a count of top-k
assignments) is exact."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import crash_child
import pytest
import torch
import yaml
from safetensors.torch import load_file

RECIPES = Path(__file__).parents[1] / "recipes"
TOL = 1e-4
# 2 dense steps, then 4 MoE steps, of 8 sequences x 32 tokens
SETS = [
    "stages.dense.tokens=512",
    "stages.moe.tokens=1024",
    "data.seq_len=32",
    "optim.micro_batch_size=4",
    "run.eval_every=2",  # evaluations between MoE steps: no router statistics
    "run.eval_sequences=8",
    "run.threads=1",
]
STEPS = 6


@pytest.fixture(scope="module")
def recipe(tmp_path_factory) -> Path:
    """recipes/stack-upcycle.yaml without its stack stage: dense -> upcycle (4 experts, top-2,
    random router, moments carried) -> train with the load-balancing and z-losses."""
    raw = yaml.safe_load((RECIPES / "stack-upcycle.yaml").read_text())
    raw["data"]["sources"] = [str((RECIPES / src).resolve()) for src in raw["data"]["sources"]]
    raw["stages"] = [s for s in raw["stages"] if s["name"] != "stacked"]
    assert [s["name"] for s in raw["stages"]] == ["dense", "moe"]
    path = tmp_path_factory.mktemp("recipe") / "moe.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def _args(recipe: Path, out: Path, extra: list[str], resume: bool) -> list[str]:
    """growlm's arguments for the run (one process: crash_child.run forks it)."""
    args = ["train", str(recipe), "--out", str(out), *(["--resume"] if resume else [])]
    for item in SETS + extra:
        args += ["--set", item]
    return args


def _torchrun(args: list[str], nproc: int) -> list[str]:
    torchrun = shutil.which("torchrun", path=str(Path(sys.executable).parent)) or "torchrun"
    return [torchrun, "--standalone", "--nproc_per_node", str(nproc), "-m", "growlm.cli", *args]


def _env(cache: Path, **more: str) -> dict[str, str]:
    return {
        **os.environ,
        "GROWLM_CACHE": str(cache),
        "HF_HUB_OFFLINE": "1",
        "OMP_NUM_THREADS": "1",
        **more,
    }


def _train(
    recipe: Path, out: Path, cache: Path, nproc: int, extra: list[str], resume: bool = False
) -> list[dict]:
    """One process: forked from crash_child's pre-imported server (no torch import to pay)."""
    args = _args(recipe, out, extra, resume)
    if nproc == 1:
        log = out.parent / f"{out.name}-{'resume' if resume else 'run'}.log"
        code = crash_child.run(args, _env(cache), log)
        assert code == 0, log.read_text()[-4000:]
        return _metrics(out)
    cmd = _torchrun(args, nproc)
    result = subprocess.run(cmd, env=_env(cache), capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-4000:]
    return _metrics(out)


def _metrics(out: Path) -> list[dict]:
    return [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]


def _same_final(a_dir: Path, b_dir: Path) -> None:
    a = load_file(a_dir / "final" / "model.safetensors")
    b = load_file(b_dir / "final" / "model.safetensors")
    assert a.keys() == b.keys() and "model.layers.1.block_sparse_moe.experts.3.w1.weight" in a
    assert [k for k in a if not torch.equal(a[k], b[k])] == []


def _same_records(a: list[dict], b: list[dict]) -> None:
    """Bitwise the same run: every logged number but the timings."""
    assert [r["step"] for r in b] == [r["step"] for r in a] == list(range(1, STEPS + 1))
    keys = ("loss", "val_loss", "grad_norm", "lr", "tokens", "flops")
    for key in (*keys, "aux_loss", "z_loss", "expert_load"):
        assert [r.get(key) for r in b] == [r.get(key) for r in a], key


KILLED = ["optim.grad_accum=2", "run.checkpoint_every=2", "run.keep_checkpoints=2"]
SHARDED = [
    "run.parallel=fsdp",
    "run.checkpoint_every=2",
    "run.keep_checkpoints=10",
    "run.checkpoint_format=sharded",
]


@pytest.fixture(scope="module")
def single(tmp_path_factory, recipe) -> tuple[Path, Path, list[dict]]:
    """One process, the global batch of 8 as 2 accumulated micro-batches of 4, a checkpoint
    every 2 steps: the reference of the 2-process run and of the killed one (KILLED)."""
    root = tmp_path_factory.mktemp("moe-dist")
    records = _train(recipe, root / "one", root / "cache", 1, KILLED)
    return root, root / "one", records


@pytest.fixture(scope="module")
def fsdp_sharded(tmp_path_factory, recipe) -> tuple[Path, Path, list[dict]]:
    """2-process FSDP2 with sharded checkpoints every 2 steps (SHARDED): (cache, run folder,
    metrics); test_two_processes_match_one's FSDP2 run and the resume test's reference."""
    root = tmp_path_factory.mktemp("moe-fsdp")
    return root / "cache", root / "full", _train(recipe, root / "full", root / "cache", 2, SHARDED)


@pytest.mark.slow
def test_two_processes_match_one_under_fsdp2(recipe, single, fsdp_sharded):
    """FSDP2 shards the experts (DDP: the dense tests). The FSDP2 run is fsdp_sharded's
    (sharded checkpoints every 2 steps, which the resume test below needs): one launch for
    both tests."""
    _, one_dir, one = single
    _, two_dir, two = fsdp_sharded
    assert [r["step"] for r in two] == [r["step"] for r in one] == list(range(1, STEPS + 1))
    assert [r["stage"] for r in two] == ["dense"] * 2 + ["moe"] * 4
    assert [r["flops"] for r in two] == [r["flops"] for r in one]
    for a, b in zip(one, two, strict=True):
        assert b["loss"] == pytest.approx(a["loss"], abs=TOL), a["step"]
        assert b["grad_norm"] == pytest.approx(a["grad_norm"], rel=1e-3)
        assert b.get("val_loss", 0.0) == pytest.approx(a.get("val_loss", 0.0), abs=TOL)
        if a["stage"] == "moe":
            # router statistics over the whole global batch: both micro-batches of one
            # process, the one micro-batch of each of two
            assert b["aux_loss"] == pytest.approx(a["aux_loss"], abs=TOL)
            assert b["z_loss"] == pytest.approx(a["z_loss"], abs=TOL)
            assert b["expert_load"] == a["expert_load"]
            assert len(b["expert_load"]) == 2 and all(len(x) == 4 for x in b["expert_load"])
        else:
            assert "aux_loss" not in b
    ref = load_file(one_dir / "final" / "model.safetensors")
    got = load_file(two_dir / "final" / "model.safetensors")
    assert ref.keys() == got.keys()
    assert got["model.layers.1.block_sparse_moe.experts.3.w1.weight"].shape == (176, 64)
    assert max((ref[k] - got[k]).abs().max().item() for k in ref) < TOL


@pytest.mark.slow
def test_fsdp_sharded_resume_is_exact(recipe, fsdp_sharded, tmp_path):
    """2-process FSDP2 with sharded checkpoints (each rank writes its half of the experts),
    resumed from a checkpoint inside the MoE stage (step 4) and from the dense stage's end
    (step 2: the upcycle runs again on the gathered shards): bitwise the same run."""
    cache, full, records = fsdp_sharded
    extra = SHARDED
    shard = load_file(
        full / "checkpoints" / "step-00000004" / "model-rank00001-of-00002.safetensors"
    )
    assert shard["model.layers.1.mlp.experts.gate_up_proj"].shape[0] == 2  # 2 of the 4 experts
    for cut in (4, 2):
        resumed = tmp_path / f"resumed-{cut}"
        shutil.copytree(full, resumed)
        for ckpt in (resumed / "checkpoints").iterdir():
            if int(ckpt.name.split("-")[1]) > cut:
                shutil.rmtree(ckpt)
        for folder in ("moe", "final"):
            shutil.rmtree(resumed / folder)
        again = _train(recipe, resumed, cache, 2, extra, resume=True)
        _same_records(records, again)
        _same_final(full, resumed)


@pytest.fixture(scope="module")
def uninterrupted(single) -> tuple[Path, Path, list[dict]]:
    """The one-process run of test_two_processes_match_one (its settings are KILLED)."""
    root, one_dir, records = single
    return root / "cache", one_dir, records


@pytest.mark.slow
@pytest.mark.parametrize(
    "kill_at",
    [
        "checkpoint.optimizer@2",  # inside the MoE stage's first checkpoint (step 4)
    ],
)
def test_sigkill_and_resume_is_bitwise_identical(recipe, uninterrupted, tmp_path, kill_at):
    """One process killed (SIGKILL, growlm/io/faults.py) inside a write, then resumed with the
    same command: the run ends bitwise equal to an uninterrupted one, router statistics too."""
    cache, ref, records = uninterrupted
    cut, log = tmp_path / "cut", tmp_path / "killed.log"
    argv = _args(recipe, cut, KILLED, resume=False)  # forked, as _train's one-process runs
    code = crash_child.run(argv, _env(cache, GROWLM_TEST_KILL_AT=kill_at), log)
    assert code == -9, log.read_text()[-3000:]
    assert not (cut / "final").exists()
    again = _train(recipe, cut, cache, 1, KILLED, resume=True)
    _same_records(records, again)
    _same_final(ref, cut)
    assert list(cut.rglob(".tmp-*")) == []

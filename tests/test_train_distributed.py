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
from dataclasses import dataclass
from pathlib import Path

import crash_child
import pytest
import torch
from safetensors.torch import load_file
from tiny_models import TOKENFORMER_SETS

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


def _args(out: Path, extra: list[str], resume: bool = False) -> list[str]:
    """``growlm train`` tiny.yaml's arguments with SETS + ``extra``."""
    args = ["train", str(TINY), "--out", str(out), *(["--resume"] if resume else [])]
    for item in SETS + extra:
        args += ["--set", item]
    return args


def _env(cache: Path, **more: str) -> dict[str, str]:
    return {
        **os.environ, "GROWLM_CACHE": str(cache), "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1",
        **more,
    }  # fmt: skip


def _torchrun(args: list[str], nproc: int, env: dict[str, str], *opts: str, timeout: float = 300):
    """``torchrun --standalone --nproc_per_node N [opts] -m growlm.cli ARGS``, run to its end."""
    torchrun = shutil.which("torchrun", path=str(Path(sys.executable).parent)) or "torchrun"
    cmd = [torchrun, "--standalone", "--nproc_per_node", str(nproc), *opts, "-m", "growlm.cli"]
    return subprocess.run([*cmd, *args], env=env, capture_output=True, text=True, timeout=timeout)


def _train(
    out: Path, cache: Path, nproc: int, extra: list[str], resume: bool = False
) -> list[dict]:
    """One process: forked from crash_child's pre-imported server (no torch import to pay)."""
    args, env = _args(out, extra, resume), _env(cache)
    if nproc == 1:
        log = out.parent / f"{out.name}-{'resume' if resume else 'run'}.log"
        code = crash_child.run(args, env, log)
        assert code == 0, log.read_text()[-4000:]
    else:
        result = _torchrun(args, nproc, env)
        assert result.returncode == 0, result.stderr[-4000:]
    return [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]


# per family: its --set items and a tensor only the grown model has (name, shape or None)
FAMILY_RUNS = {
    "llama": ([], "model.layers.3.mlp.down_proj.weight", None),  # stack x2: 4 layers
    "tokenformer": (TOKENFORMER_SETS, "model.layers.1.mlp.key_param_tokens", (32 + 8, 32)),
}


@pytest.fixture(scope="module")
def single(tmp_path_factory):
    """single(family) -> (root, run folder, metrics) of its one-process run (built once)."""
    root = tmp_path_factory.mktemp("dist")
    runs: dict[str, tuple[Path, Path, list[dict]]] = {}

    def get(family: str) -> tuple[Path, Path, list[dict]]:
        if family not in runs:
            one_dir = root / family / "one"
            extra = [*FAMILY_RUNS[family][0], "optim.grad_accum=2", "run.threads=1"]
            runs[family] = (root / family, one_dir, _train(one_dir, root / "cache", 1, extra))
        return runs[family]

    return get


@pytest.mark.slow
@pytest.mark.parametrize(
    ("parallel", "family"),
    [("ddp", "llama"), ("fsdp", "llama"), ("fsdp", "tokenformer")],  # FSDP2 shards the grown rows
)
def test_two_processes_match_one(single, fsdp_runs, parallel, family):
    """TokenFormer grows by param-tokens: its carried moments gain rows, sharded under FSDP2.
    FSDP2 Llama: the 2-process run is fsdp_runs' full-format one (the same settings plus a
    checkpoint every 2 steps, restarted once after a failed first checkpoint), which the
    resume and disk-full tests below also use: one launch fewer."""
    sets, grown_name, grown_shape = FAMILY_RUNS[family]
    root, one_dir, one = single(family)
    if (parallel, family) == ("fsdp", "llama"):
        run = fsdp_runs("full")
        out, two = run.out, run.records
    else:
        out = root / parallel
        extra = [*sets, f"run.parallel={parallel}", "run.threads=1"]
        two = _train(out, root.parent / "cache", 2, extra)
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
    assert grown_name in got
    if grown_shape is not None:
        assert tuple(got[grown_name].shape) == grown_shape
    assert torch.isfinite(got["lm_head.weight"]).all()


def _resume_copy(src: Path, dst: Path, keep_until: int) -> None:
    """``src`` as if the run had been killed right after its checkpoint at ``keep_until``."""
    shutil.copytree(src, dst)
    for ckpt in sorted((dst / "checkpoints").iterdir()):
        if int(ckpt.name.split("-")[1]) > keep_until:
            shutil.rmtree(ckpt)
    for folder in ("grown", "final"):
        shutil.rmtree(dst / folder, ignore_errors=True)


def _same_final(a_dir: Path, b_dir: Path) -> None:
    a = load_file(a_dir / "final" / "model.safetensors")
    b = load_file(b_dir / "final" / "model.safetensors")
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)


FSDP = ["run.parallel=fsdp", "run.threads=1", "run.checkpoint_every=2", "run.keep_checkpoints=10"]


# per checkpoint format: the fault point of its disk-full case and the rank it fails on
DISK_FULL = {"full": ("checkpoint.model", "0"), "sharded": ("checkpoint.shards", "1")}


@dataclass(frozen=True)
class FsdpRun:
    out: Path
    records: list[dict]  # the resumed run's metrics, steps 1 to 8
    failed: subprocess.CompletedProcess  # the first job, ENOSPC at its step-2 checkpoint
    step2_after_failure: bool  # whether a step-2 checkpoint existed after it


@pytest.fixture(scope="module")
def fsdp_runs(tmp_path_factory):
    """2-process FSDP2 runs, one per checkpoint format (built on demand): each first fails
    at its step-2 checkpoint with ENOSPC on one rank (DISK_FULL; torchrun polls every 5 s, so
    it kills no rank still waiting), then the same command with --resume, which starts afresh
    (no checkpoint), runs to the end."""
    root = tmp_path_factory.mktemp("fsdp")
    runs: dict[str, FsdpRun] = {}

    def get(fmt: str) -> FsdpRun:
        if fmt not in runs:
            out, cache = root / fmt, root / "cache"
            extra = [*FSDP, f"run.checkpoint_format={fmt}"]
            point, rank = DISK_FULL[fmt]
            fail = {"GROWLM_TEST_FAIL_AT": f"{point}@1", "GROWLM_TEST_FAIL_RANK": rank}
            failed = _torchrun(
                _args(out, extra), 2, _env(cache, **fail), "--monitor-interval", "5", timeout=240
            )
            step2 = (out / "checkpoints" / "step-00000002").exists()
            records = _train(out, cache, 2, extra, resume=True)
            runs[fmt] = FsdpRun(out, records, failed, step2)
        return runs[fmt]

    return get


@pytest.mark.slow
@pytest.mark.parametrize("fmt", ["full", "sharded"])
def test_fsdp_resume_is_exact(tmp_path, fsdp_runs, fmt):
    """2-process FSDP2 run with a checkpoint every 2 steps, resumed from its checkpoint at step
    6 (inside the grown stage: carried moments sharded as DTensors) and, sharded, from the
    stage-end checkpoint at step 4 (the next stage grows the gathered shards): bitwise the same
    final weights. Sharded checkpoints hold one file per rank and nothing gathered."""
    cache = tmp_path / "cache"
    extra = [*FSDP, f"run.checkpoint_format={fmt}"]
    run = fsdp_runs(fmt)
    full, records = run.out, run.records
    step6 = full / "checkpoints" / "step-00000006"
    names = sorted(p.name for p in step6.iterdir())
    if fmt == "sharded":
        assert names == [
            "config.json",
            "model-rank00000-of-00002.safetensors",
            "model-rank00001-of-00002.safetensors",
            "optimizer-rank00000-of-00002.safetensors",
            "optimizer-rank00001-of-00002.safetensors",
            "rng.safetensors",
            "state.json",
        ]
        shard = load_file(step6 / "model-rank00001-of-00002.safetensors")
        whole = load_file(full / "grown" / "model.safetensors")
        name = "model.layers.3.mlp.down_proj.weight"
        assert 0 < shard[name].shape[0] < whole[name].shape[0]  # only this rank's rows
    else:
        assert "model.safetensors" in names
    cuts = [6, 4] if fmt == "sharded" else [6]
    for cut in cuts:
        resumed = tmp_path / f"resumed-{cut}"
        _resume_copy(full, resumed, cut)
        again = _train(resumed, cache, 2, extra, resume=True)
        assert [r["step"] for r in again] == [r["step"] for r in records]
        _same_final(full, resumed)


@pytest.mark.slow
def test_sharded_checkpoint_needs_the_same_process_count(tmp_path, fsdp_runs):
    cache = tmp_path / "cache"
    extra = [*FSDP, "run.checkpoint_format=sharded"]
    full = fsdp_runs("sharded").out
    _resume_copy(full, tmp_path / "one", 6)
    args = _args(tmp_path / "one", extra, resume=True)
    env = {**os.environ, "GROWLM_CACHE": str(cache), "HF_HUB_OFFLINE": "1"}
    log = tmp_path / "one.log"  # the forked run's stdout and stderr
    assert crash_child.run(args, env, log) == 2
    lines = log.read_text().strip().splitlines()
    assert len(lines) == 1 and "is sharded over 2 processes but this run has 1" in lines[0]


def _agree_on_failure(rank: int, folder: str) -> None:
    """A 2-process gloo group in which rank 1's write fails inside ``all_or_none``."""
    import torch.distributed as dist

    from growlm.train.distributed import DistContext, all_or_none

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=os.environ["TEST_PORT"])
    dist.init_process_group("gloo", rank=rank, world_size=2)
    outcome = "ok"
    try:
        with all_or_none(DistContext(rank=rank, world_size=2), "checkpoint step 6"):
            if rank == 1:
                raise OSError(28, "No space left on device")
    except Exception as exc:  # recorded for the parent to check
        outcome = f"{type(exc).__name__}: {exc}"
    dist.barrier()  # both ranks are past the agreement: the group is still usable
    Path(folder, f"rank{rank}").write_text(outcome)
    dist.destroy_process_group()


def test_a_failed_write_stops_every_rank(tmp_path, monkeypatch):
    import socket

    import torch.multiprocessing as mp

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        monkeypatch.setenv("TEST_PORT", str(s.getsockname()[1]))
    mp.spawn(_agree_on_failure, args=(str(tmp_path),), nprocs=2)
    assert (tmp_path / "rank1").read_text() == "OSError: [Errno 28] No space left on device"
    assert (tmp_path / "rank0").read_text() == (
        "PeerFailed: checkpoint step 6 failed on rank 1 (its error is in its log); every rank "
        "stopped: fix that, then run the same command with --resume"
    )


@pytest.mark.slow
@pytest.mark.parametrize("fmt", ["full", "sharded"])
def test_disk_full_on_one_rank_ends_the_job(fsdp_runs, fmt):
    """ENOSPC injected on one rank in the checkpoint at step 2 (DISK_FULL: the full model on
    rank 0, the shards on rank 1; the job runs in fsdp_runs): the failing rank prints the
    one-line disk-full error, the other one the PeerFailed line, both exit by themselves
    (torchrun polls every 5 s here, so it kills no one that is still waiting), no step-2
    checkpoint exists, and the same command with --resume then finishes the run."""
    run = fsdp_runs(fmt)
    result, rank = run.failed, DISK_FULL[fmt][1]
    assert result.returncode != 0
    assert "error: disk full" in result.stderr, result.stderr[-3000:]
    assert f"error: checkpoint step 2 failed on rank {rank} (its error is in its log)" in (
        result.stderr
    )
    assert "SIGTERM" not in result.stderr  # no rank had to be killed
    # torchrun prints its own traceback when a worker fails; none of growlm's frames appear
    assert f'File "{Path(__file__).parents[1] / "growlm"}' not in result.stderr
    assert not run.step2_after_failure
    assert [r["step"] for r in run.records][-1] == 8


def test_one_launched_process_runs_fsdp2_and_matches_plain(tmp_path, monkeypatch):
    """``torchrun --nproc_per_node 1`` with ``run.parallel: fsdp`` (bench/gpu_check.py's FSDP2
    check on one GPU) shards the model with FSDP2 (DTensor parameters, through growth with the
    moments carried) and trains like the plain process; run in-process with torchrun's env."""
    import socket

    import torch.distributed as dist
    from torch.distributed.tensor import DTensor

    from growlm.train import distributed
    from growlm.train.loop import train
    from growlm.train.metrics import read_metrics
    from growlm.train.recipe import load_recipe

    monkeypatch.setenv("GROWLM_CACHE", str(tmp_path / "cache"))
    plain = load_recipe(TINY, [*SETS, "run.threads=1"])
    train(plain, tmp_path / "plain")
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    for key, value in dict(
        WORLD_SIZE="1", RANK="0", LOCAL_RANK="0", MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port)
    ).items():
        monkeypatch.setenv(key, value)
    sharded: list[bool] = []
    real_wrap = distributed.wrap

    def spy(model, ctx):
        wrapped = real_wrap(model, ctx)
        sharded.append(all(isinstance(p, DTensor) for p in wrapped.parameters()))
        return wrapped

    monkeypatch.setattr(distributed, "wrap", spy)
    try:
        train(load_recipe(TINY, [*SETS, "run.threads=1", "run.parallel=fsdp"]), tmp_path / "fsdp")
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()
    assert sharded == [True, True]  # the base model and the grown one
    ones = read_metrics(tmp_path / "plain" / "metrics.jsonl")
    fsdp = read_metrics(tmp_path / "fsdp" / "metrics.jsonl")
    assert len(ones) == len(fsdp) == 16  # 8 steps of 4 x 64 tokens per stage
    for a, b in zip(ones, fsdp, strict=True):
        assert abs(a["loss"] - b["loss"]) <= TOL

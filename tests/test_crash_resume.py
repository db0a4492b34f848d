"""Crash and resume, many times: ``growlm train`` (two stages with stack growth) and
``growlm grow`` are SIGKILLed at seeded random moments and, through the GROWLM_TEST_KILL_AT hook
(growlm/io/faults.py), inside every step of their writes: between the files of a checkpoint,
after its rename, while old checkpoints are deleted, inside a stage export, between the tensors
and shards of a grown model.

After every kill: each visible checkpoint and model folder is complete and loads (nothing
half-written), and OUT of ``grow`` is absent, the old folder or the new one. Every resume
succeeds, and the finished run's weights (each stage export and final) equal those of an
uninterrupted run bitwise. Runs fork from a pre-imported server (crash_child.py), so a restart
costs milliseconds, not the seconds of importing torch. docs/reliability.md reports the numbers.
"""

from __future__ import annotations

import json
import random
import re
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

import crash_child
import pytest
import torch
from safetensors.torch import load_file

TINY = Path(__file__).parents[1] / "recipes" / "tiny.yaml"
# 6 + 6 optimizer steps of 4 x 32 tokens in fp32 (bf16 autocast is slow on CPU); growth
# between; checkpoints at 2, 4, 6 (stage end), 8, 10, 12; evaluations at 3, 6, 9, 12
SETS = [
    "stages.base.tokens=768",
    "stages.grown.tokens=768",
    "data.seq_len=32",
    "optim.micro_batch_size=4",
    "run.precision=fp32",
    "run.checkpoint_every=2",
    "run.eval_every=3",
    "run.eval_sequences=4",
    "run.keep_checkpoints=2",
    "run.progress=false",
]
STEPS = 12
EXPORTS = ("base", "grown", "final")
CKPT_FILES = {
    "model.safetensors",
    "config.json",
    "optimizer.safetensors",
    "rng.safetensors",
    "state.json",
}
RUN_ENTRIES = {"checkpoints", "metrics.jsonl", "recipe.yaml", *EXPORTS}
TRAIN_POINTS = (
    "checkpoint.begin",
    "checkpoint.model",
    "checkpoint.optimizer",
    "checkpoint.state",
    "checkpoint.renamed",
    "checkpoint.pruned",
    "export.model",
    "export.files",
    "export.renamed",
)
SEED = 20240607
MIN_TRAIN_KILLS = 24
MIN_GROW_KILLS = 12


@dataclass
class Tally:
    kills: int = 0
    hook_kills: dict[str, int] = field(default_factory=dict)
    random_kills: int = 0
    mid_write: int = 0  # kills that left a new temporary folder behind: they hit a write
    random_mid_write: int = 0  # ... of them, randomly timed kills
    resumes: int = 0
    finished_runs: int = 0


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """The fork server, started (torch, transformers, growlm imported) before any timing."""
    ctx = crash_child.context()
    log = tmp_path_factory.mktemp("server") / "ops.log"
    assert _run(ctx, ["ops"], {}, log) == 0, log.read_text()
    return ctx


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    """The tiny corpus prepared once, in this process (the runs find it in the cache)."""
    import os

    from growlm.train.data import prepared_folder
    from growlm.train.recipe import load_recipe

    root = tmp_path_factory.mktemp("cache")
    old = os.environ.get("GROWLM_CACHE")
    os.environ["GROWLM_CACHE"] = str(root)
    try:
        prepared_folder(load_recipe(TINY, SETS).data)
    finally:
        if old is None:
            del os.environ["GROWLM_CACHE"]
        else:
            os.environ["GROWLM_CACHE"] = old
    return root


def _train_argv(out: Path) -> list[str]:
    argv = ["train", str(TINY), "--out", str(out), "--resume"]
    for item in SETS:
        argv += ["--set", item]
    return argv


def _run(server, argv, env, log: Path, kill_after: float | None = None, timeout: float = 120):
    """Start a forked run; SIGKILL it after ``kill_after`` seconds (if still running).
    Returns the exit code (-9: killed)."""
    proc = crash_child.start(server, argv, env, log)
    if kill_after is not None:
        proc.join(kill_after)
        if proc.exitcode is None:
            proc.kill()
    proc.join(timeout)
    if proc.exitcode is None:
        proc.kill()
        proc.join()
        pytest.fail(f"{argv[0]} hung; log: {log.read_text()[-2000:]}")
    return proc.exitcode


def _tensors(path: Path) -> dict[str, torch.Tensor]:
    return load_file(str(path))  # raises on a truncated or corrupt file


def _check_run_folder(out: Path) -> None:
    """Every visible checkpoint and export is complete; hidden entries are temporary."""
    if not out.exists():
        return
    visible = {p.name for p in out.iterdir() if not p.name.startswith(".")}
    assert visible <= RUN_ENTRIES, visible
    root = out / "checkpoints"
    if root.is_dir():
        for ckpt in root.iterdir():
            if ckpt.name.startswith("."):
                continue  # .tmp-step-* (unfinished) or .step-*.old-* (being deleted)
            assert re.fullmatch(r"step-\d{8}", ckpt.name), ckpt
            assert {p.name for p in ckpt.iterdir()} == CKPT_FILES, ckpt
            for name in ("model.safetensors", "optimizer.safetensors", "rng.safetensors"):
                assert _tensors(ckpt / name), (ckpt, name)
            state = json.loads((ckpt / "state.json").read_text())
            assert state["progress"]["step"] == int(ckpt.name[5:])
            assert json.loads((ckpt / "config.json").read_text())["model_type"] == "llama"
    for name in EXPORTS:
        folder = out / name
        if folder.exists():
            files = {p.name for p in folder.iterdir()}
            assert {"model.safetensors", "config.json", "tokenizer.json"} <= files, folder
            assert _tensors(folder / "model.safetensors")
            json.loads((folder / "config.json").read_text())
    if (out / "recipe.yaml").exists():
        import yaml

        assert yaml.safe_load((out / "recipe.yaml").read_text())["name"] == "tiny"


def _debris(out: Path) -> set[str]:
    """Temporary folders of unfinished writes (.tmp-*) and of unfinished deletions (.*.old-*)."""
    return {str(p) for p in out.rglob(".*") if p.is_dir()} if out.exists() else set()


def _metrics(out: Path) -> list[dict]:
    return [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]


def _assert_same_run(ref: Path, got: Path) -> None:
    for name in EXPORTS:
        a = _tensors(ref / name / "model.safetensors")
        b = _tensors(got / name / "model.safetensors")
        assert a.keys() == b.keys() and len(a) > 10, name
        assert [k for k in a if not torch.equal(a[k], b[k])] == [], name
    rows_ref, rows = _metrics(ref), _metrics(got)
    assert [r["step"] for r in rows] == list(range(1, STEPS + 1))
    for key in ("loss", "val_loss", "lr", "grad_norm", "tokens", "flops", "stage"):
        assert [r.get(key) for r in rows] == [r.get(key) for r in rows_ref], key
    leftovers = list(got.rglob(".tmp-*"))
    assert leftovers == [], leftovers  # every unfinished write was cleared by a later one


@pytest.mark.slow
def test_train_survives_sigkill_anywhere(server, cache, tmp_path):
    env = {"GROWLM_CACHE": str(cache), "HF_HUB_OFFLINE": "1"}
    ref = tmp_path / "ref"
    t0 = time.perf_counter()
    assert _run(server, _train_argv(ref), env, tmp_path / "ref.log") == 0
    full = time.perf_counter() - t0
    _check_run_folder(ref)
    assert sorted(p.name for p in (ref / "checkpoints").iterdir()) == [
        "step-00000010",
        "step-00000012",
    ]

    rng = random.Random(SEED)
    tally = Tally()
    points = list(TRAIN_POINTS)
    for round_no in range(5):
        if tally.kills >= MIN_TRAIN_KILLS and len(tally.hook_kills) == len(TRAIN_POINTS):
            break
        out = tmp_path / f"run{round_no}"
        for attempt in range(40):
            log = tmp_path / f"run{round_no}-{attempt}.log"
            debris = _debris(out)
            if attempt % 3 < 2:  # inside a write, at a named point (each point in turn)
                point = points[len(tally.hook_kills) % len(points)]
                point = rng.choice(points) if point in tally.hook_kills else point
                nth = rng.choice([1, 1, 2])
                run_env = {**env, "GROWLM_TEST_KILL_AT": f"{point}@{nth}"}
                code = _run(server, _train_argv(out), run_env, log)
            else:  # at a random moment, with writes slowed so kills often land inside one
                point = None
                run_env = {**env, "GROWLM_TEST_SLOW_WRITE": "0.01"}
                code = _run(server, _train_argv(out), run_env, log, rng.uniform(0.1, 0.6 * full))
            tally.resumes += attempt > 0
            assert code in (0, -9), f"run failed ({code}): {log.read_text()[-3000:]}"
            _check_run_folder(out)
            if code == 0:
                break
            tally.kills += 1
            hit_write = bool(_debris(out) - debris)
            tally.mid_write += hit_write
            if point is None:
                tally.random_kills += 1
                tally.random_mid_write += hit_write
            else:
                tally.hook_kills[point] = tally.hook_kills.get(point, 0) + 1
        else:
            pytest.fail("a round did not finish in 40 attempts")
        tally.finished_runs += 1
        _assert_same_run(ref, out)
        shutil.rmtree(out)  # keep tmp small; the next round starts afresh

    print(f"\ntrain crash harness: {tally} (uninterrupted run {full:.2f}s)")
    assert tally.kills >= MIN_TRAIN_KILLS
    # every named point inside checkpoint and export writes was hit by at least one kill
    assert sorted(tally.hook_kills) == sorted(TRAIN_POINTS), tally.hook_kills
    assert tally.mid_write >= 3, tally  # (a re-created temporary folder of the same name is
    # not counted; the named points above are the guarantee)


def _grow_argv(src: Path, out: Path, op: str, force: bool = False) -> list[str]:
    argv = ["grow", str(src), str(out), "--op", op, "--factor", "2", "--shard-size", "4KB"]
    return argv + (["--force"] if force else [])


def _files(folder: Path) -> dict[str, bytes]:
    out = {p.name: p.read_bytes() for p in folder.iterdir()}
    record = json.loads(out.pop("growth.json"))  # holds a timestamp; the rest is exact
    record.pop("created")
    out["growth.json"] = json.dumps(record, sort_keys=True).encode()
    if "README.md" in out:  # the model card's loading example names the folder it was written to
        card = re.sub(rb'from_pretrained\("[^"]*"\)', b"OUT", out["README.md"])
        out["README.md"] = re.sub(rb"(?m)^# .*$", b"# OUT", card)  # and its title
    return out


@pytest.mark.slow
def test_grow_out_is_absent_or_complete(server, tiny_dir, tmp_path):
    src = tmp_path / "src"
    shutil.copytree(tiny_dir("llama"), src)
    env = {"HF_HUB_OFFLINE": "1"}
    ref, old = tmp_path / "ref", tmp_path / "old"
    t0 = time.perf_counter()
    assert _run(server, _grow_argv(src, ref, "stack"), env, tmp_path / "ref.log") == 0
    full = time.perf_counter() - t0
    assert _run(server, _grow_argv(src, old, "interleave"), env, tmp_path / "old.log") == 0
    want, before = _files(ref), _files(old)
    shards = sorted(n for n in want if n.endswith(".safetensors"))
    assert len(shards) > 3 and "model.safetensors.index.json" in want
    tensors = len(json.loads(want["model.safetensors.index.json"])["weight_map"])

    rng = random.Random(SEED)
    kills = {"hook": 0, "random": 0, "late": 0}
    slow = {**env, "GROWLM_TEST_SLOW_WRITE": "0.005"}
    # OUT absent before: after any kill it is absent or complete. With --force over an old
    # OUT: absent (between the two renames), the old folder or the new one.
    for force in (False, True):
        out = tmp_path / f"out-{force}"
        if force:
            shutil.copytree(old, out)
        for attempt in range(MIN_GROW_KILLS // 2 + 2):
            log = tmp_path / f"grow-{force}-{attempt}.log"
            hook = (
                f"grow.tensor@{rng.randint(1, tensors)}",
                f"grow.shard@{rng.randint(1, len(shards))}",
                "grow.written",
                "",  # a random moment
                "",
            )[attempt % 5]
            run_env = {**env, "GROWLM_TEST_KILL_AT": hook} if hook else slow
            delay = None if hook else rng.uniform(0.0, full + 0.3)
            code = _run(server, _grow_argv(src, out, "stack", force), run_env, log, delay)
            assert code in (0, -9), log.read_text()[-3000:]
            if code == 0:  # the random kill came after the end: start this attempt over
                assert _files(out) == want
                kills["late"] += 1
                shutil.rmtree(out)
                if force:
                    shutil.copytree(old, out)
                continue
            kills["hook" if hook else "random"] += 1
            if out.exists():
                assert _files(out) in ((before, want) if force else (want,)), "half-written OUT"
        assert _run(server, _grow_argv(src, out, "stack", force), env, tmp_path / "end.log") == 0
        assert _files(out) == want
        # the temporary folders of killed writers were cleared by the run that finished
        debris = [p.name for p in tmp_path.iterdir() if p.name.startswith(".")]
        assert debris == []
    print(f"\ngrow crash harness: kills {kills} (uninterrupted grow {full:.2f}s)")
    assert kills["hook"] + kills["random"] >= MIN_GROW_KILLS

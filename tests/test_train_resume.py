"""Exact resume: a run killed with SIGKILL (twice: mid-stage, and just after the stage end that
precedes growth) and resumed with --resume ends bitwise equal to an uninterrupted run. Every
``growlm train`` is its own process forked from the crash tests' pre-imported server
(crash_child.py): a start costs milliseconds, not the seconds of importing torch."""

from __future__ import annotations

import json
import math
import os
import signal
import time
from collections.abc import Sequence
from pathlib import Path

import crash_child
import pytest
import torch
from safetensors.torch import load_file
from test_train_distributed import _resume_copy, _same_final
from tiny_models import TOKENFORMER_SETS

TINY = Path(__file__).parents[1] / "recipes" / "tiny.yaml"
SETS = [
    "stages.base.tokens=6144",  # 12 steps of 8 x 64
    "stages.grown.tokens=6144",
    "run.checkpoint_every=5",  # checkpoints at 5, 10, 12 (stage end), 15, 20, 24
    "run.eval_every=6",
    "run.eval_sequences=16",
    "run.keep_checkpoints=3",
]


def _argv(out: Path, resume: bool, extra: Sequence[str] = ()) -> list[str]:
    argv = ["train", str(TINY), "--out", str(out)]
    for item in [*SETS, *extra]:
        argv += ["--set", item]
    return argv + (["--resume"] if resume else [])


def _env(cache: Path) -> dict[str, str]:
    return {"GROWLM_CACHE": str(cache), "HF_HUB_OFFLINE": "1"}


def _last_step(out: Path) -> int:
    path = out / "metrics.jsonl"
    if not path.exists():
        return 0
    lines = path.read_text().splitlines()
    for line in reversed(lines):
        try:
            return int(json.loads(line)["step"])
        except (json.JSONDecodeError, KeyError):
            continue
    return 0


def _run_and_kill(out: Path, cache: Path, resume: bool, kill_at: int) -> list[str]:
    """Start a run, SIGKILL it once metrics reach ``kill_at``; the checkpoints present then."""
    log = out.parent / f"{out.name}-{kill_at}.log"
    proc = crash_child.start(crash_child.context(), _argv(out, resume), _env(cache), log)
    deadline = time.monotonic() + 300
    try:
        while _last_step(out) < kill_at:
            assert proc.exitcode is None, log.read_text()[-3000:]
            assert time.monotonic() < deadline, "run did not reach the kill step"
            time.sleep(0.005)
        os.kill(proc.pid, signal.SIGKILL)
        proc.join()
    finally:
        if proc.exitcode is None:
            proc.kill()
            proc.join()
    return sorted(p.name for p in (out / "checkpoints").iterdir() if p.name.startswith("step-"))


def _finish(out: Path, cache: Path, resume: bool, extra: Sequence[str] = ()) -> None:
    log = out.parent / f"{out.name}-finish.log"
    code = crash_child.run(_argv(out, resume, extra), _env(cache), log)
    assert code == 0, log.read_text()[-3000:]


@pytest.mark.slow
def test_sigkill_and_resume_is_bitwise_identical(tmp_path):
    cache = tmp_path / "cache"
    reference, interrupted = tmp_path / "ref", tmp_path / "cut"
    _finish(reference, cache, resume=False)

    first = _run_and_kill(interrupted, cache, resume=False, kill_at=7)
    # where the kill lands depends on scheduling: the asserts accept the likely checkpoints
    assert first[-1] in ("step-00000005", "step-00000010", "step-00000012")  # mid-stage
    second = _run_and_kill(interrupted, cache, resume=True, kill_at=13)
    # 12: stage end, before growth (the usual case); later ones still resume after growth
    assert second[-1] in ("step-00000012", "step-00000015", "step-00000020")
    _finish(interrupted, cache, resume=True)

    ref = load_file(reference / "final" / "model.safetensors")
    got = load_file(interrupted / "final" / "model.safetensors")
    assert ref.keys() == got.keys() and len(ref) > 20
    differing = [k for k in ref if not torch.equal(ref[k], got[k])]
    assert differing == []
    ref_log = [json.loads(x) for x in (reference / "metrics.jsonl").read_text().splitlines()]
    got_log = [json.loads(x) for x in (interrupted / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in got_log] == list(range(1, 25))
    assert [r["loss"] for r in got_log] == [r["loss"] for r in ref_log]
    assert [r.get("val_loss") for r in got_log] == [r.get("val_loss") for r in ref_log]
    assert got_log[-1]["flops"] == ref_log[-1]["flops"]


@pytest.mark.slow
def test_tokenformer_resumes_bitwise(tmp_path):
    """A 2-layer TokenFormer in bf16 whose second stage grows by param-tokens with AdamW's
    moments carried, stopped right after its checkpoint at the stage end (step 12: growth
    happens on resume) or inside the grown stage (step 15) and resumed with --resume: bitwise
    the same final weights and losses as the uninterrupted run."""
    cache = tmp_path / "cache"
    extra = [
        *TOKENFORMER_SETS,
        "stages.grown.optimizer_state=carry",
        "run.keep_checkpoints=10",
        "run.precision=bf16",
    ]
    reference = tmp_path / "ref"
    _finish(reference, cache, resume=False, extra=extra)
    ref_log = [json.loads(x) for x in (reference / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in ref_log] == list(range(1, 25))
    assert all(math.isfinite(r["loss"]) for r in ref_log)
    for cut in (12, 15):
        resumed = tmp_path / f"resumed-{cut}"
        _resume_copy(reference, resumed, cut)
        _finish(resumed, cache, resume=True, extra=extra)
        _same_final(reference, resumed)
        got_log = [json.loads(x) for x in (resumed / "metrics.jsonl").read_text().splitlines()]
        assert [r["loss"] for r in got_log] == [r["loss"] for r in ref_log]
    grown = load_file(reference / "final" / "model.safetensors")
    assert grown["model.layers.0.attention.query.key_param_tokens"].shape == (16 + 8, 32)

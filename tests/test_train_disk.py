"""Disk and resources in ``growlm train``: a disk that fills up in the middle of a checkpoint
write gives one line, leaves the previous checkpoint intact and resumable (and the resumed run
equals an uninterrupted one bitwise); a disk that obviously cannot hold a checkpoint is refused
before any work."""

from __future__ import annotations

import errno
import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import growlm.train.checkpoint as checkpoint
from growlm.cli import main

TINY = Path(__file__).parents[1] / "recipes" / "tiny.yaml"
SETS = [
    "stages.base.tokens=768",  # 6 + 6 steps of 4 x 32 tokens, checkpoints every 2 steps
    "stages.grown.tokens=768",
    "data.seq_len=32",
    "optim.micro_batch_size=4",
    "run.precision=fp32",
    "run.checkpoint_every=2",
    "run.eval_every=0",
    "run.eval_sequences=4",
    "run.progress=false",
]


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    """One prepared-corpus cache for the module (the tokenizer is trained once)."""
    return tmp_path_factory.mktemp("cache")


def _train(out: Path, *extra: str) -> int:
    argv = ["train", str(TINY), "--out", str(out), *extra]
    for item in SETS:
        argv += ["--set", item]
    return main(argv)


def _one_line(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err and "Traceback" not in err, err
    return err


def test_disk_full_mid_checkpoint_keeps_the_previous_one(tmp_path, monkeypatch, capsys, cache):
    monkeypatch.setenv("GROWLM_CACHE", str(cache))
    ref, out = tmp_path / "ref", tmp_path / "run"
    assert _train(ref) == 0
    real = checkpoint.save_file
    calls: list[str] = []

    def full_disk(tensors, filename, *args, **kwargs):
        calls.append(filename)
        if "step-00000004" in filename and filename.endswith("optimizer.safetensors"):
            real(tensors, filename, *args, **kwargs)  # half a file lands, then the disk is full
            with open(filename, "r+b") as f:
                f.truncate(100)
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(tensors, filename, *args, **kwargs)

    monkeypatch.setattr(checkpoint, "save_file", full_disk)
    assert _train(out) == 2
    err = _one_line(capsys)
    assert err.startswith("error: disk full while writing checkpoint step-00000004 in "), err
    assert "step-00000002 is intact: free space, then run the same command again" in err
    assert "with --resume" in err
    assert any(c.endswith("step-00000004/model.safetensors") for c in calls)  # it was midway
    # the previous checkpoint is complete; nothing of the failed one is left
    root = out / "checkpoints"
    assert sorted(p.name for p in root.iterdir()) == ["step-00000002"]
    step2 = checkpoint.load_checkpoint(root / "step-00000002")
    assert step2.state["progress"]["step"] == 2
    # space is back: the run resumes from step 2 and ends where an uninterrupted run ends
    monkeypatch.setattr(checkpoint, "save_file", real)
    assert _train(out, "--resume") == 0
    for name in ("base", "grown", "final"):
        a = load_file(str(ref / name / "model.safetensors"))
        b = load_file(str(out / name / "model.safetensors"))
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), name
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == list(range(1, 13))


def test_disk_full_in_stage_export_names_what_is_kept(tmp_path, monkeypatch, capsys, cache):
    monkeypatch.setenv("GROWLM_CACHE", str(cache))
    real = checkpoint.save_file

    def full_disk(tensors, filename, *args, **kwargs):
        if "/.tmp-base/" in filename:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(tensors, filename, *args, **kwargs)

    monkeypatch.setattr(checkpoint, "save_file", full_disk)
    out = tmp_path / "run"
    assert _train(out) == 2
    err = _one_line(capsys)
    assert "disk full while writing model folder" in err and "/base'" in err, err
    assert "the training checkpoints are intact" in err
    assert not (out / "base").exists() and not (out / ".tmp-base").exists()
    # the stage-end checkpoint was written before the export: resume writes the export
    monkeypatch.setattr(checkpoint, "save_file", real)
    assert _train(out, "--resume") == 0
    assert load_file(str(out / "base" / "model.safetensors"))


# the grown (4-layer) model of the tiny recipe: embedding and untied head 512 x 64, per layer
# attention 4 x 64 x 64, MLP 3 x 64 x 176 and two norms, the final norm
GROWN_PARAMS = 2 * 512 * 64 + 4 * (4 * 64 * 64 + 3 * 64 * 176 + 2 * 64) + 64


@pytest.mark.parametrize("short", [1, 2**20])
def test_train_refused_when_the_disk_cannot_hold_a_checkpoint(
    tmp_path, monkeypatch, capsys, cache, short
):
    monkeypatch.setenv("GROWLM_CACHE", str(cache))
    need = GROWN_PARAMS * 12  # fp32 weights + two fp32 AdamW moments
    usage = shutil.disk_usage(tmp_path)
    monkeypatch.setattr(shutil, "disk_usage", lambda p: usage._replace(free=need - short))
    out = tmp_path / "run"
    assert _train(out) == 2
    err = _one_line(capsys)
    assert err.startswith(
        f"error: not enough disk for a training checkpoint of the {GROWN_PARAMS:,}-parameter "
        f"model in '{out}': needs about 3.05 MiB, "
    ), err
    assert err.endswith("free; free space or choose another --out")
    assert not out.exists()  # refused before anything was written


def test_train_starts_when_the_checkpoint_fits(tmp_path, monkeypatch, cache):
    """The estimate is a floor, not a guess: exactly one checkpoint's bytes free is enough to
    start (the check passes and the first checkpoint is written)."""
    monkeypatch.setenv("GROWLM_CACHE", str(cache))
    usage = shutil.disk_usage(tmp_path)
    monkeypatch.setattr(shutil, "disk_usage", lambda p: usage._replace(free=GROWN_PARAMS * 12))
    out = tmp_path / "run"
    assert _train(out) == 0
    assert (out / "final" / "model.safetensors").exists()

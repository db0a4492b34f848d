"""Outputs that never cost the user data: signals, concurrent writers, debris, long names,
--check verdicts from numbers, and every OS or allocation failure as one line."""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from tiny_models import make_model

import growlm.cli as cli
from growlm.errors import OutputBusy

REPO = Path(__file__).parents[1]


def _siblings(parent: Path) -> list[str]:
    return sorted(p.name for p in parent.iterdir() if p.name.startswith("."))


def _one_line(err: str, *needles: str) -> None:
    assert err.startswith("error: ") and "\n" not in err.strip() and "Traceback" not in err, err
    for n in needles:
        assert n in err, (n, err)


def _slow_grow(src: Path, out: Path) -> subprocess.Popen:
    """``growlm grow`` that sleeps 0.3 s at every write point (many small shards)."""
    env = dict(os.environ, GROWLM_TEST_SLOW_WRITE="0.3", PYTHONPATH=str(REPO))
    argv = [sys.executable, "-m", "growlm.cli", "grow", str(src), str(out)]
    argv += ["--op", "stack", "--factor", "2", "--shard-size", "4KB"]
    return subprocess.Popen(argv, env=env, stderr=subprocess.PIPE, text=True)


def _wait_for_staging(parent: Path, proc: subprocess.Popen, timeout: float = 120) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if any(".tmp-" in n for n in _siblings(parent)):
            return
        assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
        time.sleep(0.05)
    raise AssertionError("the grow never started writing")


def test_sigterm_mid_write_and_a_second_writer(tiny_dir, tmp_path, capsys):
    src = tiny_dir("llama")
    out = tmp_path / "out"
    proc = _slow_grow(src, out)
    try:
        _wait_for_staging(tmp_path, proc)
        # a second grow into the same OUT refuses at once while the first one writes
        code = cli.main(["grow", str(src), str(out), "--op", "stack", "--factor", "3"])
        assert code == 2
        _one_line(capsys.readouterr().err, "being written by another growlm process", "pid")
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 143, err
    _one_line(err, "terminated (SIGTERM)", "nothing half-written")
    assert not out.exists() and _siblings(tmp_path) == []


def test_debris_of_a_killed_writer_is_removed(tiny_dir, tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)  # fmt: skip
    pid = int(dead.stdout)
    for tag in ("tmp", "old"):
        stale = tmp_path / f".out.{tag}-{pid}"
        stale.mkdir()
        (stale / "model.safetensors").write_bytes(b"half")
    assert cli.main(["grow", str(tiny_dir("llama")), str(tmp_path / "out"), "--op", "stack",
                     "--factor", "2"]) == 0  # fmt: skip
    assert _siblings(tmp_path) == []


def test_long_out_name(tiny_dir, tmp_path):
    """A legal 250-character OUT: hidden temporary names stay short enough."""
    from transformers import AutoModelForCausalLM

    out = tmp_path / ("m" * 250)
    assert cli.main(["grow", str(tiny_dir("llama")), str(out), "--op", "stack", "--factor", "2",
                     "--force"]) == 0  # fmt: skip
    assert AutoModelForCausalLM.from_pretrained(str(out)).config.num_hidden_layers == 6
    assert _siblings(tmp_path) == []


def test_zero_width_from_bf16_to_float32_is_exact(tmp_path, capsys):
    """Norm rescaling from a bf16 source is computed in fp32 and rounded once: exact in fp32."""
    model = make_model("llama")
    model.to(torch.bfloat16).save_pretrained(str(tmp_path / "src"))
    argv = ["grow", str(tmp_path / "src"), str(tmp_path / "wide"), "--op", "zero-width",
            "--hidden-size", "64", "--check", "--json"]  # fmt: skip
    assert cli.main([*argv, "--dtype", "float32"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["check_dtype"] == "float32" and report["check_within_tolerance"]
    assert report["max_abs_logit_diff"] <= 1e-4 * 2 and report["function_preserving"] is True
    # stored in bf16 the verdict uses bf16's tolerance and reports the measured difference
    assert cli.main([*argv[:2], str(tmp_path / "wide16"), *argv[3:]]) == 0
    report16 = json.loads(capsys.readouterr().out)
    assert report16["check_dtype"] == "bfloat16"
    assert report16["max_abs_logit_diff"] > report["max_abs_logit_diff"]
    assert report16["function_preserving"] is report16["check_within_tolerance"]


def test_check_verdict_comes_from_the_numbers(tiny_dir, tmp_path):
    """A model whose logits differ by more than the tolerance is not called preserving."""
    from growlm.check import compare_logits

    other = tmp_path / "other"
    make_model("llama", seed=1).save_pretrained(str(other))
    same = compare_logits(tiny_dir("llama"), tiny_dir("llama"))
    assert same["max_abs_logit_diff"] == 0.0 and same["check_within_tolerance"] is True
    result = compare_logits(tiny_dir("llama"), other)
    assert result["max_abs_logit_diff"] > result["check_tolerance"]
    assert result["check_within_tolerance"] is False


@pytest.mark.parametrize(
    ("exc", "needles"),
    [
        (OSError(errno.ENAMETOOLONG, "File name too long", "/x/" + "n" * 300), ("path too long",)),
        (OSError(errno.ENOTDIR, "Not a directory", "/a/b"), ("cannot access /a/b", "Not a dir")),
        (OSError(errno.EIO, "Input/output error", "/dev/x"), ("cannot access /dev/x",)),
        (
            RuntimeError(
                "DefaultCPUAllocator: can't allocate memory: you tried to allocate "
                "1073741824000 bytes. Error code 12"
            ),
            ("out of memory", "1000.00 GiB", "grow less"),
        ),
        (MemoryError(), ("out of memory", "--dtype bfloat16")),
    ],
)
def test_os_and_allocation_failures_are_one_line(exc, needles, monkeypatch, capsys, tiny_dir):
    def fail(*args, **kwargs):
        raise exc

    monkeypatch.setattr(sys.modules["growlm.grow"], "grow", fail)
    code = cli.main(["grow", str(tiny_dir("llama")), "out", "--op", "stack", "--factor", "2"])
    assert code == 2
    _one_line(capsys.readouterr().err, *needles)


def test_other_runtime_errors_are_not_hidden(monkeypatch, tiny_dir):
    def fail(*args, **kwargs):
        raise RuntimeError("a bug")

    monkeypatch.setattr(sys.modules["growlm.grow"], "grow", fail)
    with pytest.raises(RuntimeError, match="a bug"):
        cli.main(["grow", str(tiny_dir("llama")), "out", "--op", "stack", "--factor", "2"])


def test_sigterm_in_train_hints_resume(monkeypatch, capsys, tmp_path):
    import growlm.train.loop
    from growlm.errors import Terminated

    def stop(*args, **kwargs):
        raise Terminated()

    monkeypatch.setattr(growlm.train.loop, "train", stop)
    code = cli.main(["train", str(REPO / "recipes" / "tiny.yaml"), "--out", str(tmp_path / "r")])
    assert code == 143
    _one_line(capsys.readouterr().err, "terminated (SIGTERM)", "--resume")


def test_lock_is_released_and_reusable(tmp_path):
    from growlm.io.output import output_lock

    out = tmp_path / "out"
    with (
        output_lock(out),
        pytest.raises(OutputBusy, match="another growlm process"),
        output_lock(out),
    ):
        pass
    with output_lock(out):  # released: taken again
        pass
    assert _siblings(tmp_path) == []


def test_one_mapping_of_os_errors_to_user_errors():
    """growlm.errors.os_error: the CLI's last resort and the writers that know what they wrote."""
    from growlm.errors import DiskFull, OutputNotWritable, os_error

    full = OSError(errno.ENOSPC, "No space left on device", "/r/x")
    e = os_error(full)
    assert isinstance(e, DiskFull)
    assert str(e) == "disk full while writing /r/x: free space, then run the same command again"
    e = os_error(full, "checkpoint step-2", "step-1 is intact", "resume")
    assert (
        str(e)
        == "disk full while writing checkpoint step-2; step-1 is intact: free space, then resume"
    )
    rust = RuntimeError("Error while serializing: IoError(Os { code: 28, kind: StorageFull })")
    assert isinstance(os_error(rust, "a folder"), DiskFull)
    denied = OSError(errno.EACCES, "Permission denied", "/r/x")
    e = os_error(denied)
    assert isinstance(e, OutputNotWritable)
    assert str(e) == (
        "cannot access /r/x: Permission denied; fix the path or its permissions, or choose "
        "another path"
    )
    e = os_error(denied, "model folder '/r'", "the checkpoints are intact")
    assert str(e) == (
        "cannot write model folder '/r': Permission denied; the checkpoints are intact: fix the "
        "output location, then run the same command again"
    )

"""bench/gpu_check.py on the CPU, so it does not rot before a GPU runs it: its arithmetic (peak
table, FLOPs, MFU, arm order, batch probe, budget) exactly, the skip lines and JSON without a
GPU, and its jobs (bench/gpu_jobs.py) run in-process on tiny shapes."""

from __future__ import annotations

import ast
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))

import gpu_check as gc  # noqa: E402
import gpu_jobs as jobs  # noqa: E402

TINY = gc.SMOKE_MODEL


@pytest.mark.parametrize(
    ("name", "peak"),
    [
        ("NVIDIA H200", 989e12),
        ("NVIDIA H200 NVL", 835e12),
        ("NVIDIA GH200 480GB", 989e12),
        ("NVIDIA H100 80GB HBM3", 989e12),
        ("NVIDIA H100 PCIe", 756e12),
        ("NVIDIA A100-SXM4-80GB", 312e12),
        ("NVIDIA L40S", 362e12),
        ("NVIDIA L4", 121e12),
        ("NVIDIA A10", 125e12),
    ],
)
def test_peak_table(name, peak):
    found, source = gc.peak_for(name)
    assert found == peak
    assert "datasheet" in source


def test_unknown_gpu_has_no_peak():
    assert gc.peak_for("Tesla T4") == (
        None,
        "no datasheet peak for 'Tesla T4' in PEAKS: pass --peak-flops",
    )


def _llama(**model):
    from transformers import AutoConfig

    return AutoConfig.for_model("llama", vocab_size=32000, **model)


def test_flops_count_every_matmul_once():
    """1.1B (TinyLlama's shape): per layer q, o (h x h), k, v (h x kv), gate, up, down
    (h x ffn); plus the untied head; the input embedding is a lookup, not a matmul."""
    h, kv, ffn, layers, vocab = 2048, 256, 5632, 22, 32000
    config = _llama(**gc.MODEL_1B, tie_word_embeddings=False)
    matmul = layers * (2 * h * h + 2 * h * kv + 3 * h * ffn) + vocab * h
    assert gc.matmul_params(config) == matmul == 1_034_420_224
    assert gc.flops_per_token(config, 2048) == 6 * matmul + 12 * layers * 2048 * 32 * 64


def test_mfu_and_throughput_arithmetic():
    assert gc.mfu(1000.0, 6e9, 989e12) == 1000.0 * 6e9 / 989e12
    assert gc.mfu(1000.0, 6e9, None) is None
    # step ends at 1, 2, 3, 5 s; one warm-up step: 3 steps of 100 tokens from t=1 to t=5
    stats = gc.throughput([1.0, 2.0, 3.0, 5.0], 1, 100)
    assert stats == {"tokens_per_s": 75.0, "median_step_s": 1.0, "timed_steps": 3}
    with pytest.raises(ValueError, match="need more than 3 step times"):
        gc.throughput([1.0, 2.0, 3.0], 3, 100)


def test_arms_alternate_abba():
    assert gc.arm_schedule(["growlm", "trainer"], 3) == [
        "growlm",
        "trainer",
        "trainer",
        "growlm",
        "growlm",
        "trainer",
    ]


def test_probe_doubles_then_bisects():
    calls: list[int] = []

    def fits_upto(limit):
        def fits(batch):
            calls.append(batch)
            return batch <= limit

        return fits

    assert gc.probe_batch(fits_upto(23), 64) == 23
    assert calls == [1, 2, 4, 8, 16, 32, 24, 20, 22, 23]
    calls.clear()
    assert gc.probe_batch(fits_upto(1000), 48) == 48  # capped: 32 fits, 64 is never tried
    assert calls == [1, 2, 4, 8, 16, 32, 40, 44, 46, 47, 48]
    assert gc.probe_batch(fits_upto(0), 64) == 0


def test_probe_job_treats_out_of_memory_as_no_fit(monkeypatch):
    """The probe's real step on a tiny model; the loss raises torch's OOM error above batch 3."""
    from growlm.train import loss

    real = loss.token_loss

    def loss_or_oom(logits, targets, reduction="mean"):
        if logits.shape[0] > 3:
            raise torch.OutOfMemoryError("CUDA out of memory (fake)")
        return real(logits, targets, reduction)

    monkeypatch.setattr(loss, "token_loss", loss_or_oom)
    job = {
        "device": "cpu",
        "model": TINY,
        "seq_len": 16,
        "vocab_size": 128,
        "max_batch": 8,
        "headroom": 0.9,
    }
    result = jobs.job_probe(job)
    assert result["batch"] == 3
    assert [(t["batch"], t["fits"]) for t in result["tried"]] == [
        (1, True),
        (2, True),
        (4, False),
        (3, True),
    ]


def test_budget_shares_pass_unused_time_on():
    now = [0.0]
    budget = gc.Budget(480.0, clock=lambda: now[0])
    assert budget.section("correctness") == 480.0 * 0.2
    now[0] = 50.0  # correctness used 50 of its 96 s
    assert budget.section("throughput") == 430.0 * 0.6 / 0.8
    now[0] = 400.0
    assert budget.section("fsdp") == 80.0
    now[0] = 500.0
    assert budget.left() == 0.0


def test_arms_compared_only_at_the_final_batch():
    runs = [
        {"arm": "growlm", "batch": 32, "tokens_per_s": 999.0, "mfu": 0.9},
        {"arm": "trainer", "batch": 32, "error": "exit 1: torch.OutOfMemoryError"},
        {"arm": "trainer", "batch": 16, "tokens_per_s": 100.0, "mfu": 0.30},
        {"arm": "growlm", "batch": 16, "tokens_per_s": 130.0, "mfu": 0.5},
        {"arm": "growlm", "batch": 16, "tokens_per_s": 150.0, "mfu": 0.75},
    ]
    summary = gc.summarise_arms(runs, 16)
    assert summary["arms"]["growlm"] == {
        "runs": 2,
        "tokens_per_s_median": 140.0,
        "mfu_median": 0.625,
    }
    assert summary["ratio_growlm_over_trainer"] == 1.4
    assert summary["targets"] == {
        "growlm MFU >= 0.4": True,
        "growlm tokens/s >= 1.1x Trainer": True,
    }
    assert gc.summarise_arms(runs[:2], 32)["status"] == "failed"


def test_without_a_gpu_every_section_skips_with_one_line(tmp_path):
    out = tmp_path / "gpu_check.json"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "CUDA_VISIBLE_DEVICES": ""}
    cmd = [sys.executable, str(ROOT / "bench" / "gpu_check.py"), "--out", str(out)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert len(lines) == 3
    for line, title in zip(lines, gc.SECTION_TITLES.values(), strict=True):
        assert line.startswith(f"{title}: skipped: torch.cuda.is_available() is False")
    result = json.loads(out.read_text())
    assert set(result) >= {"command", "date", "git", "source_sha256", "machine", "sections"}
    assert result["machine"]["torch"] == torch.__version__
    assert "transformers" in result["machine"]
    assert {s["status"] for s in result["sections"].values()} == {"skipped"}
    assert all("no GPU" in s["reason"] for s in result["sections"].values())


def test_a_run_without_gpu_never_overwrites_measured_results(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    out = tmp_path / "gpu_check.json"
    measured = {"sections": {"correctness": {"status": "passed"}, "fsdp": {"status": "skipped"}}}
    out.write_text(json.dumps(measured))
    assert gc.main(["--out", str(out)]) == 0
    assert json.loads(out.read_text()) == measured
    assert (
        capsys.readouterr().out.splitlines()[-1] == f"{out} holds measured results: left as it is"
    )
    out.write_text(json.dumps({"sections": {"fsdp": {"status": "skipped"}}}))
    assert gc.main(["--out", str(out)]) == 0
    assert set(json.loads(out.read_text())["sections"]) == set(gc.SECTIONS)  # replaced


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return jobs.job_data(
        {"root": str(tmp_path_factory.mktemp("data")), "vocab_size": 128, "random_tokens": 4096}
    )


def _arm_job(data, root):
    """A throughput arm on the CPU: tiny model, batch 2 x 16 tokens, 1 warm-up + 2 steps."""
    return {
        "device": "cpu",
        "model": TINY,
        "seq_len": 16,
        "batch": 2,
        "steps": 2,
        "warmup": 1,
        "compile": False,
        "data": data["random"],
        "root": str(root),
    }


def test_random_data_and_growlm_arm(data, tmp_path):
    """The growlm arm's trainer (no checkpoint or export) trains exactly as ``growlm train``."""
    from growlm.data.shards import open_shards

    shards = open_shards(data["random"])
    assert shards.vocab_size == 128 and shards.tokens("train") == 4096
    assert shards.splits["val"] == []
    arm = jobs.job_growlm(_arm_job(data, tmp_path / "arm"))
    assert len(arm["step_end_s"]) == 3 and arm["step_end_s"] == sorted(arm["step_end_s"])
    assert not (tmp_path / "arm" / "final").exists()
    raw = {
        "name": "throughput",
        "seed": 0,
        "data": {"prepared": data["random"], "seq_len": 16},
        "model": {"type": "llama", "config": dict(TINY)},
        "optim": {"lr": 3e-4, "warmup_steps": 2, "micro_batch_size": 2},
        "run": {"device": "cpu", "precision": "bf16", "eval_every": 0, "progress": False},
        "stages": [{"name": "s", "tokens": 3 * 2 * 16}],
    }
    assert jobs.train_losses(raw, tmp_path / "plain") == arm["losses"]


def test_trainer_arm(data, tmp_path):
    pytest.importorskip("accelerate")
    ends = jobs.job_trainer(_arm_job(data, tmp_path / "trainer"))["step_end_s"]
    assert len(ends) == 3 and ends == sorted(ends)


def test_correctness_job_on_cpu(data, tmp_path):
    """bf16 on the CPU stands in for the device: within TOL_BF16 of fp32; resume exact."""
    job = {
        "device": "cpu",
        "data": data["text"],
        "root": str(tmp_path),
        "checks": ["bf16", "resume"],
    }
    result = jobs.job_correctness(job)
    names = [c["check"] for c in result["checks"]]
    assert names == [
        "bf16 on device vs fp32 on cpu",
        "resume at step 3 on device vs uninterrupted",
        "device checkpoint resumed on cpu vs uninterrupted on device",
    ]
    assert result["passed"], result
    bf16, resumed, moved = result["checks"]
    assert 0 < bf16["max_abs_loss_diff"] <= jobs.TOL_BF16 and len(bf16["losses"]) == 6
    assert resumed["bitwise_equal"] and moved["bitwise_equal"]  # CPU: deterministic
    assert all(math.isfinite(x) for x in bf16["losses"])


ALLOWED = {"torch", "transformers", "safetensors", "tokenizers", "numpy", "yaml", "tqdm"}


def test_gpu_path_needs_nothing_beyond_the_allowed_packages():
    """Every growlm module, and the GPU check's two scripts, import at module level only the
    standard library and the packages a GPU box already has (lazy imports inside functions are
    for options the check does not use: parquet, hub datasets, W&B, TensorBoard, plots)."""
    outside: dict[str, str] = {}
    files = [*sorted((ROOT / "growlm").rglob("*.py")), ROOT / "bench" / "gpu_check.py"]
    for file in [*files, ROOT / "bench" / "gpu_jobs.py"]:
        for node in ast.parse(file.read_text()).body:  # module level: what import runs
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            for top in (n.split(".")[0] for n in names):
                if top not in sys.stdlib_module_names and top not in {"growlm", "gpu_check"}:
                    outside.setdefault(top, str(file.relative_to(ROOT)))
    assert set(outside) <= ALLOWED, {k: v for k, v in outside.items() if k not in ALLOWED}

"""GPU check (issue 18): growlm's CUDA path measured on one GPU, in one command and one JSON.

    PYTHONPATH=$PWD python3 bench/gpu_check.py --out bench/results/gpu_check.json

Sections, each with a share of ``--budget-s`` (default 480 s) and written to the JSON as it ends:

a. correctness: growlm train on a tiny Llama on the GPU (fp32, bf16, compiled bf16, growth with
   the AdamW moments carried, resume from a checkpoint, and that checkpoint resumed on the CPU)
   agrees with CPU fp32 runs within stated tolerances (bench/gpu_jobs.py: TOL_*);
b. throughput and MFU: growlm train vs transformers.Trainer, both bf16 with fp32 master weights,
   SDPA (flash), fused AdamW and torch.compile, on a 1.1B Llama (TinyLlama's shape) at sequence
   2048 with the largest batch that fits (probed), arms alternating (ABBA); MFU against the
   GPU's dense bf16 peak (PEAKS: datasheet figures) with the FLOPs of every matmul;
c. FSDP2 on one GPU: ``torchrun --nproc_per_node 1`` with ``run.parallel: fsdp`` against the
   plain run: the same losses (tolerance stated) and both memory peaks.

Without a GPU every section is skipped with one line and the JSON says why. ``--cpu-smoke``
runs the same sections on the CPU with tiny shapes (tests/test_gpu_check.py): plumbing only, no
measurement. Needs only torch, transformers (Trainer: accelerate), safetensors, tokenizers,
numpy and PyYAML; data are generated or come from the repository.
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import itertools
import json
import os
import platform
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
JOBS = Path(__file__).resolve().parent / "gpu_jobs.py"
DEFAULT_OUT = ROOT / "bench" / "results" / "gpu_check.json"
SMOKE_OUT = "bench/work/gpu_check-smoke.json"  # git-ignored: a smoke run is not a result
CHECKS = ("fp32", "bf16", "grow", "resume", "compiled")  # gpu_jobs.CHECKS (torch-free here)

# Dense (no sparsity) bf16 tensor-core peaks, FLOP/s, from NVIDIA's datasheets, which quote the
# sparse figure: dense is half of it. First pattern that matches torch's device name wins.
PEAKS: list[tuple[str, float, str]] = [
    (r"\bGH200\b", 989e12, "NVIDIA GH200 datasheet: 1,979 TFLOPS BF16 with sparsity"),
    (r"\bH200 NVL\b", 835e12, "NVIDIA H200 NVL datasheet: 1,671 TFLOPS BF16 with sparsity"),
    (r"\bH200\b", 989e12, "NVIDIA H200 SXM datasheet: 1,979 TFLOPS BF16 with sparsity"),
    (r"\bH100 PCIe\b", 756e12, "NVIDIA H100 PCIe datasheet: 1,513 TFLOPS BF16 with sparsity"),
    (r"\bH100 NVL\b", 835e12, "NVIDIA H100 NVL datasheet: 1,671 TFLOPS BF16 with sparsity"),
    (r"\bH100\b", 989e12, "NVIDIA H100 SXM datasheet: 1,979 TFLOPS BF16 with sparsity"),
    (r"\bA100\b", 312e12, "NVIDIA A100 datasheet: 312 TFLOPS BF16 dense (624 with sparsity)"),
    (r"\bL40S\b", 362e12, "NVIDIA L40S datasheet: 733 TFLOPS BF16 with sparsity"),
    (r"\bL4\b", 121e12, "NVIDIA L4 datasheet: 242 TFLOPS BF16 with sparsity"),
    (r"\bA10\b", 125e12, "NVIDIA A10 datasheet: 250 TFLOPS BF16 with sparsity"),
]

# Section b's model: TinyLlama-1.1B's shape (22 layers, hidden 2048, GQA 32/4, vocab 32000).
MODEL_1B: dict[str, Any] = {
    "hidden_size": 2048,
    "intermediate_size": 5632,
    "num_hidden_layers": 22,
    "num_attention_heads": 32,
    "num_key_value_heads": 4,
    "max_position_embeddings": 2048,
}
VOCAB = 32000
SEQ = 2048
# Section c's model: 8 layers, hidden 1024, on the Shakespeare fixture (vocab 512), seq 1024.
MODEL_FSDP: dict[str, Any] = {
    "hidden_size": 1024,
    "intermediate_size": 2816,
    "num_hidden_layers": 8,
    "num_attention_heads": 16,
    "num_key_value_heads": 16,
    "max_position_embeddings": 1024,
}
# --cpu-smoke's model for sections b and c (GQA, as the 1.1B)
SMOKE_MODEL: dict[str, Any] = {
    "hidden_size": 32,
    "intermediate_size": 64,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "max_position_embeddings": 64,
}
TOL_FSDP = 1e-3  # max |loss diff| plain vs FSDP2 (fused vs foreach AdamW, same math)
TARGET_MFU = 0.40
TARGET_RATIO = 1.1
SHARES = {"correctness": 0.2, "throughput": 0.6, "fsdp": 0.2}
SECTION_TITLES = {
    "correctness": "a. correctness on the GPU vs CPU fp32",
    "throughput": "b. throughput and MFU, growlm vs transformers.Trainer",
    "fsdp": "c. FSDP2 on one GPU through torchrun vs the plain run",
}


# ---- arithmetic (tested exactly on CPU) ----------------------------------------------------
def peak_for(device_name: str) -> tuple[float | None, str]:
    """(dense bf16 peak FLOP/s, its source) for a CUDA device name; (None, why) if unknown."""
    for pattern, flops, source in PEAKS:
        if re.search(pattern, device_name):
            return flops, source
    return None, f"no datasheet peak for {device_name!r} in PEAKS: pass --peak-flops"


def matmul_params(config: Any) -> int:
    """Weights that take part in a matmul for every token: every nn.Linear of the model (the
    head included, the input embedding's lookup and the norms not). Built on the meta device."""
    import torch
    from transformers import AutoModelForCausalLM

    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    return sum(m.weight.numel() for m in model.modules() if isinstance(m, torch.nn.Linear))


def flops_per_token(config: Any, seq_len: int) -> float:
    """Training FLOPs per token, forward + backward: 6 per matmul weight, plus attention's
    score and value products, 12 * layers * seq_len * heads * head_dim (PaLM appendix B; no
    causal discount, as most MFU figures are quoted)."""
    heads = int(config.num_attention_heads)
    head_dim = int(getattr(config, "head_dim", None) or config.hidden_size // heads)
    attention = 12.0 * int(config.num_hidden_layers) * seq_len * heads * head_dim
    return 6.0 * matmul_params(config) + attention


def mfu(tokens_per_s: float, flops_tok: float, peak: float | None) -> float | None:
    """Model FLOPs utilisation: achieved model FLOP/s over the peak."""
    return None if not peak else tokens_per_s * flops_tok / peak


def arm_schedule(arms: list[str], repeats: int) -> list[str]:
    """Arms alternating, ABBA: each repeat reverses the order, so a drift over the run (clocks,
    heat, caches warming) falls on every arm alike."""
    order: list[str] = []
    for r in range(repeats):
        order += arms if r % 2 == 0 else arms[::-1]
    return order


def probe_batch(fits: Callable[[int], bool], max_batch: int) -> int:
    """Largest batch in [1, max_batch] for which ``fits`` holds, assuming it holds below any
    batch that fits: doubling from 1, then bisection between the last fit and the first miss.
    0 if even 1 does not fit."""
    good, batch = 0, 1
    while batch <= max_batch and fits(batch):
        good, batch = batch, batch * 2
    if good == 0:
        return 0
    bad = min(batch, max_batch + 1)  # the first miss, or just past the range
    while bad - good > 1:
        mid = (good + bad) // 2
        if fits(mid):
            good = mid
        else:
            bad = mid
    return good


def throughput(step_end_s: list[float], warmup: int, tokens_per_step: int) -> dict[str, Any]:
    """Tokens/s over the steps after ``warmup`` (from the end of step ``warmup`` to the end of
    the last step: everything the loop does between steps counts), and the per-step times."""
    if len(step_end_s) <= warmup or warmup < 1:
        raise ValueError(f"need more than {warmup} step times (and warmup >= 1)")
    steps = step_end_s[warmup - 1 :]
    seconds = [b - a for a, b in itertools.pairwise(steps)]
    span = steps[-1] - steps[0]
    return {
        "tokens_per_s": tokens_per_step * len(seconds) / span,
        "median_step_s": statistics.median(seconds),
        "timed_steps": len(seconds),
    }


class Budget:
    """The run's time: each section gets its share of what is left (unused time flows on)."""

    def __init__(self, total_s: float, clock: Callable[[], float] = time.monotonic):
        self.clock = clock
        self.deadline = clock() + total_s

    def left(self) -> float:
        return max(0.0, self.deadline - self.clock())

    def section(self, name: str) -> float:
        names = list(SHARES)
        rest = sum(SHARES[n] for n in names[names.index(name) :])
        return self.left() * SHARES[name] / rest


# ---- running jobs --------------------------------------------------------------------------
class JobFailed(Exception):
    """A job that exited non-zero or ran out of time; ``partial`` is what it saved before."""

    def __init__(self, message: str, partial: dict[str, Any] | None = None):
        super().__init__(message)
        self.partial = partial


def _env(cache: Path) -> dict[str, str]:
    path = os.environ.get("PYTHONPATH")
    return {
        **os.environ,
        "PYTHONPATH": str(ROOT) + (os.pathsep + path if path else ""),
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_VERBOSITY": "error",
        "TOKENIZERS_PARALLELISM": "false",
        "GROWLM_CACHE": str(cache),
        # fewer fragmentation failures near the memory limit; the same for every arm
        "PYTORCH_CUDA_ALLOC_CONF": os.environ.get(
            "PYTORCH_CUDA_ALLOC_CONF", "expandable_segments:True"
        ),
    }


def run_command(cmd: list[str], timeout: float, env: dict[str, str], log: Path) -> None:
    """Run ``cmd`` in its own process group (killed whole on timeout); output to ``log``."""
    if timeout < 5:
        raise JobFailed("no time left in the section's budget")
    with log.open("w") as out:
        proc = subprocess.Popen(
            cmd, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            raise JobFailed(f"timed out after {timeout:.0f} s (budget)") from None
    if proc.returncode != 0:
        tail = log.read_text(errors="replace").strip().splitlines()[-3:]
        raise JobFailed(f"exit {proc.returncode}: " + " | ".join(tail))


def run_job(job: dict[str, Any], work: Path, timeout: float) -> dict[str, Any]:
    """One bench/gpu_jobs.py job in a fresh process; its result dict."""
    name = f"{job['job']}-{len(list(work.glob('*.job.json')))}"
    spec, result = work / f"{name}.job.json", work / f"{name}.result.json"
    spec.write_text(json.dumps(job))
    cmd = [sys.executable, str(JOBS), str(spec), str(result)]
    try:
        run_command(cmd, timeout, _env(work / "cache"), work / f"{name}.log")
    except JobFailed as exc:
        saved = json.loads(result.read_text()) if result.is_file() else None
        raise JobFailed(str(exc), saved) from None
    loaded: dict[str, Any] = json.loads(result.read_text())
    return loaded


# ---- sections ------------------------------------------------------------------------------
def section_correctness(opts: argparse.Namespace, data: dict[str, str], budget: float) -> dict:
    job = {
        "job": "correctness",
        "device": opts.device,
        "data": data["text"],
        "root": str(opts.work / "correctness"),
        "checks": [c for c in CHECKS if not (opts.cpu_smoke and c == "compiled")],
        "threads": opts.threads,
    }
    try:
        result = run_job(job, opts.work, budget)
    except JobFailed as exc:
        return {"status": "error", "error": str(exc), **(exc.partial or {})}
    return {"status": "passed" if result["passed"] else "failed", **result}


def section_throughput(opts: argparse.Namespace, data: dict[str, str], budget: float) -> dict:
    from transformers import AutoConfig

    ends = time.monotonic() + budget
    model = opts.model
    config = AutoConfig.for_model("llama", vocab_size=opts.vocab, **model)
    flops_tok = flops_per_token(config, opts.seq)
    peak, peak_source = (opts.peak_flops, "--peak-flops") if opts.peak_flops else opts.peak
    common = {"device": opts.device, "model": model, "seq_len": opts.seq, "threads": opts.threads}
    probe = run_job(
        {
            **common,
            "job": "probe",
            "vocab_size": opts.vocab,
            "max_batch": opts.max_batch,
            "headroom": 0.9,
        },
        opts.work,
        ends - time.monotonic(),
    )
    batch = int(probe["batch"])
    out: dict[str, Any] = {
        "model": {"type": "llama", **model, "vocab_size": opts.vocab},
        "seq_len": opts.seq,
        "matmul_params": matmul_params(config),
        "flops_per_token": flops_tok,
        "flops_convention": "6 x matmul weights + 12 x layers x seq x heads x head_dim",
        "peak_flops": peak,
        "peak_source": peak_source,
        "probe": {
            k: probe[k] for k in ("batch", "tried", "memory_limit_bytes", "flash_only_forward")
        },
        "settings": {
            "both": "bf16 autocast, fp32 master weights, SDPA, fused AdamW, torch.compile",
            "growlm": "growlm train (per-block compile, compiled loss); stage-end checkpoint "
            "and export skipped",
            "trainer": "Trainer(bf16, optim=adamw_torch_fused, torch_compile=True, "
            "pinned-memory loader in the main process)",
            "timing": f"{opts.warmup} warm-up steps, then {opts.steps} timed steps, from the end "
            "of the last warm-up step to the end of the last step, after a CUDA synchronize",
        },
        "runs": [],
    }
    if batch < 1:
        out["status"] = "failed"
        out["error"] = "not even batch 1 fits"
        return out
    estimate: dict[str, float] = {}
    for arm in arm_schedule(["growlm", "trainer"], opts.repeats):
        left = ends - time.monotonic()
        if estimate.get(arm, 0.0) > left:
            out["runs"].append({"arm": arm, "skipped": f"{left:.0f} s left, last run took longer"})
            continue
        started = time.monotonic()
        job = {
            **common,
            "job": arm,
            "data": data["random"],
            "batch": batch,
            "steps": opts.steps,
            "warmup": opts.warmup,
            "compile": not opts.cpu_smoke,
            "root": str(opts.work / f"{arm}-{len(out['runs'])}"),
        }
        run: dict[str, Any] = {"arm": arm, "batch": batch}
        try:
            raw = run_job(job, opts.work, left)
            stats = throughput(raw["step_end_s"], opts.warmup, batch * opts.seq)
            run.update(stats, mfu=mfu(stats["tokens_per_s"], flops_tok, peak))
            run["cuda_mem_peak_gib"] = raw.get("cuda_mem_peak_gib")
        except JobFailed as exc:
            run["error"] = str(exc)
            if "OutOfMemory" in str(exc) and batch > 1:
                batch //= 2  # later runs (both arms) at half the batch; compared alike
        run["wall_s"] = round(time.monotonic() - started, 1)
        estimate[arm] = run["wall_s"]
        out["runs"].append(run)
    out.update(summarise_arms(out["runs"], batch))
    return out


def summarise_arms(runs: list[dict[str, Any]], batch: int) -> dict[str, Any]:
    """Median tokens/s and MFU per arm over the runs at the final ``batch``; the ratio and the
    issue's targets."""
    arms: dict[str, Any] = {}
    for arm in ("growlm", "trainer"):
        done = [r for r in runs if r["arm"] == arm and "tokens_per_s" in r and r["batch"] == batch]
        if done:
            tps = statistics.median(r["tokens_per_s"] for r in done)
            mfus = [r["mfu"] for r in done if r.get("mfu") is not None]
            arms[arm] = {
                "runs": len(done),
                "tokens_per_s_median": tps,
                "mfu_median": statistics.median(mfus) if mfus else None,
            }
    result: dict[str, Any] = {"batch": batch, "arms": arms}
    if len(arms) < 2:
        result["status"] = "failed"
        result["error"] = "an arm has no completed run at the final batch"
        return result
    ratio = arms["growlm"]["tokens_per_s_median"] / arms["trainer"]["tokens_per_s_median"]
    growlm_mfu = arms["growlm"]["mfu_median"]
    result["ratio_growlm_over_trainer"] = ratio
    result["targets"] = {
        f"growlm MFU >= {TARGET_MFU}": None if growlm_mfu is None else growlm_mfu >= TARGET_MFU,
        f"growlm tokens/s >= {TARGET_RATIO}x Trainer": ratio >= TARGET_RATIO,
    }
    result["status"] = "measured"
    return result


def fsdp_recipe(opts: argparse.Namespace, data: str) -> dict[str, Any]:
    micro, seq, steps = opts.fsdp_batch, opts.fsdp_seq, opts.fsdp_steps
    return {
        "name": "fsdp-check",
        "seed": 3,
        "data": {"prepared": data, "seq_len": seq},
        "model": {"type": "llama", "config": dict(opts.fsdp_model)},
        "optim": {"lr": 1e-3, "warmup_steps": 2, "micro_batch_size": micro},
        "run": {
            "device": opts.device,
            "precision": "bf16",
            "eval_every": 0,
            "eval_sequences": micro,
            "checkpoint_every": 0,
            "progress": False,
            "threads": opts.threads,
        },
        "stages": [{"name": "s", "tokens": steps * micro * seq}],
    }


def section_fsdp(opts: argparse.Namespace, data: dict[str, str], budget: float) -> dict:
    import yaml

    ends = time.monotonic() + budget
    folder = opts.work / "fsdp"
    folder.mkdir()
    recipe = folder / "recipe.yaml"
    recipe.write_text(yaml.safe_dump(fsdp_recipe(opts, data["text"])))
    train = ["-m", "growlm.cli", "train", str(recipe)]
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
    commands = {
        "plain": [sys.executable, *train, "--out", str(folder / "plain")],
        "fsdp": [
            *torchrun,
            "--nproc_per_node",
            "1",
            *train,
            "--out",
            str(folder / "fsdp"),
            "--set",
            "run.parallel=fsdp",
        ],
    }
    runs: dict[str, Any] = {}
    for name, cmd in commands.items():
        env = _env(opts.work / "cache")
        run_command(cmd, ends - time.monotonic(), env, folder / f"{name}.log")
        lines = (folder / name / "metrics.jsonl").read_text().splitlines()
        records = [json.loads(line) for line in lines]
        runs[name] = {
            "command": " ".join(["python3", *cmd[1:]]),
            "losses": [r["loss"] for r in records],
            "cuda_mem_peak_gib": records[-1].get("cuda_mem_peak_gib"),
        }
    plain, fsdp = runs["plain"]["losses"], runs["fsdp"]["losses"]
    diff = max(abs(a - b) for a, b in zip(plain, fsdp, strict=True))
    return {
        "status": "passed" if diff <= TOL_FSDP else "failed",
        "model": {"type": "llama", **opts.fsdp_model},
        "runs": runs,
        "max_abs_loss_diff": diff,
        "tolerance": TOL_FSDP,
        "note": "one process: FSDP2 shards nothing, so its memory peak is the wrapper's cost",
    }


SECTIONS: dict[str, Callable[[argparse.Namespace, dict[str, str], float], dict]] = {
    "correctness": section_correctness,
    "throughput": section_throughput,
    "fsdp": section_fsdp,
}


# ---- the run -------------------------------------------------------------------------------
def machine(device: str) -> dict[str, Any]:
    import torch
    import transformers

    info: dict[str, Any] = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "cuda_runtime": torch.version.cuda,
        "cpu_cores": os.cpu_count(),
        "platform": platform.platform(),
    }
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                info["cpu"] = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    if device == "cuda":
        props = torch.cuda.get_device_properties(0)
        info.update(
            gpu=torch.cuda.get_device_name(0),
            gpu_count=torch.cuda.device_count(),
            gpu_memory_gib=round(props.total_memory / 2**30, 1),
            compute_capability=f"{props.major}.{props.minor}",
            cudnn=torch.backends.cudnn.version(),
            flash_sdp_enabled=torch.backends.cuda.flash_sdp_enabled(),
        )
    return info


def source_digest() -> str:
    """sha256 over growlm/ and these two scripts: ties results to code without git."""
    digest = hashlib.sha256()
    files = [*sorted(ROOT.glob("growlm/**/*.py")), Path(__file__).resolve(), JOBS]
    for file in files:
        digest.update(str(file.relative_to(ROOT)).encode() + b"\0" + file.read_bytes())
    return digest.hexdigest()


def git_revision() -> str | None:
    """HEAD, with ``+dirty`` when the tree has changes; None without git or a .git folder."""
    try:
        head, status = (
            subprocess.run(
                ["git", *args], cwd=ROOT, capture_output=True, text=True, check=False
            ).stdout.strip()
            for args in (["rev-parse", "HEAD"], ["status", "--porcelain", "--untracked-files=no"])
        )
    except OSError:
        return None
    return (head + ("+dirty" if status else "")) if head else None


def keep_logs(work: Path, to: Path) -> None:
    """Every job's output next to the JSON (the scratch folder is deleted)."""
    logs = sorted(work.rglob("*.log"))
    if logs:
        to.mkdir(parents=True, exist_ok=True)
        for log in logs:
            shutil.copyfile(log, to / str(log.relative_to(work)).replace(os.sep, "_"))


def measured(path: Path) -> bool:
    """Whether ``path`` holds a result with a section that ran (never overwritten by skips)."""
    try:
        sections = json.loads(path.read_text()).get("sections", {})
    except (OSError, ValueError, AttributeError):
        return False
    return any(s.get("status") != "skipped" for s in sections.values())


def write_json(path: Path, data: dict[str, Any]) -> None:
    """Atomically (a partial file after each section, never a torn one)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n")
    os.replace(tmp, path)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    doc = __doc__ or ""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument(
        "--out",
        type=Path,
        help=f"result JSON (default {DEFAULT_OUT.relative_to(ROOT)}; --cpu-smoke: {SMOKE_OUT})",
    )
    parser.add_argument("--budget-s", type=float, default=480.0, help="wall-clock budget")
    parser.add_argument(
        "--sections",
        default=",".join(SECTIONS),
        help="comma-separated subset of " + ",".join(SECTIONS),
    )
    parser.add_argument("--cpu-smoke", action="store_true", help="tiny shapes on the CPU")
    parser.add_argument("--peak-flops", type=float, help="override the datasheet peak (FLOP/s)")
    parser.add_argument("--max-batch", type=int, default=64, help="largest batch probed")
    parser.add_argument("--repeats", type=int, default=2, help="runs per throughput arm")
    parser.add_argument("--steps", type=int, default=10, help="timed steps per run")
    parser.add_argument("--warmup", type=int, default=3, help="untimed first steps per run")
    parser.add_argument("--git-rev", help="revision to record when the tree has no .git")
    parser.add_argument("--keep-work", action="store_true", help="keep the scratch folder")
    opts = parser.parse_args(argv)
    if opts.out is None:
        opts.out = ROOT / SMOKE_OUT if opts.cpu_smoke else DEFAULT_OUT
    unknown = set(opts.sections.split(",")) - set(SECTIONS)
    if unknown:
        parser.error(f"--sections: unknown {', '.join(sorted(unknown))}")
    opts.threads = None
    opts.model, opts.vocab, opts.seq = MODEL_1B, VOCAB, SEQ
    opts.fsdp_model, opts.fsdp_seq, opts.fsdp_batch, opts.fsdp_steps = MODEL_FSDP, 1024, 8, 8
    if opts.cpu_smoke:  # tiny everything: the plumbing, not a measurement
        opts.threads = 1
        tiny = SMOKE_MODEL
        opts.model, opts.vocab, opts.seq = tiny, 512, 32
        opts.fsdp_model, opts.fsdp_seq, opts.fsdp_batch, opts.fsdp_steps = tiny, 32, 2, 3
        opts.max_batch = min(opts.max_batch, 4)
        opts.repeats, opts.steps, opts.warmup = min(opts.repeats, 2), 2, 1
    return opts


def main(argv: list[str] | None = None) -> int:
    opts = parse_args(argv)
    budget = Budget(opts.budget_s)
    import torch

    cuda = torch.cuda.is_available()
    opts.device = "cuda" if cuda else "cpu"
    opts.peak = peak_for(torch.cuda.get_device_name(0)) if cuda else (None, "no GPU")
    if opts.cpu_smoke:
        opts.device, opts.peak = "cpu", (None, "cpu smoke run: no peak")
    result: dict[str, Any] = {
        "command": " ".join(["python3", "bench/gpu_check.py", *(argv or sys.argv[1:])]),
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "git": opts.git_rev or git_revision(),
        "source_sha256": source_digest(),
        "machine": machine(opts.device),
        "cpu_smoke": opts.cpu_smoke,
        "budget_s": opts.budget_s,
        "sections": {},
    }
    wanted = opts.sections.split(",")
    if not cuda and not opts.cpu_smoke:
        for name in SECTIONS:
            reason = "torch.cuda.is_available() is False: no GPU; run this on a GPU machine"
            result["sections"][name] = {"status": "skipped", "reason": reason}
            print(f"{SECTION_TITLES[name]}: skipped: {reason}", flush=True)
        if measured(opts.out):
            print(f"{opts.out} holds measured results: left as it is")
        else:
            write_json(opts.out, result)
        return 0
    opts.work = Path(tempfile.mkdtemp(prefix="gpu_check-"))
    failed = False
    try:
        data = run_job(
            {
                "job": "data",
                "root": str(opts.work / "data"),
                "vocab_size": opts.vocab,
                "random_tokens": max(64, opts.max_batch) * (opts.seq + 1),
            },
            opts.work,
            budget.left(),
        )
        for name in SECTIONS:
            if name not in wanted:
                result["sections"][name] = {"status": "skipped", "reason": "not in --sections"}
                continue
            share = budget.section(name)
            started = time.monotonic()
            try:
                section = SECTIONS[name](opts, data, share)
            except Exception as exc:  # recorded; the next section still runs
                section = {"status": "error", "error": f"{type(exc).__name__}: {exc}"}
            section["budget_s"] = round(share, 1)
            section["wall_s"] = round(time.monotonic() - started, 1)
            failed |= section["status"] in ("failed", "error")
            result["sections"][name] = section
            write_json(opts.out, result)
            print(
                f"{SECTION_TITLES[name]}: {section['status']} ({section['wall_s']} s)", flush=True
            )
    finally:
        result["wall_s"] = round(opts.budget_s - budget.left(), 1)
        write_json(opts.out, result)
        keep_logs(opts.work, opts.out.with_name(opts.out.stem + "-logs"))
        if opts.keep_work:
            print(f"scratch kept in {opts.work}")
        else:
            shutil.rmtree(opts.work, ignore_errors=True)
    print(f"wrote {opts.out}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

"""The jobs of bench/gpu_check.py, each run in its own process (a clean GPU, its own memory peak,
a timeout that can kill it): ``python bench/gpu_jobs.py JOB.json RESULT.json``.

Jobs: ``data`` (prepared token folders), ``correctness`` (growlm train on the device against
CPU fp32), ``probe`` (largest batch that fits), ``growlm`` and ``trainer`` (one throughput arm).
Everything they need is generated here or shipped in the repository: no network, no hub.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

SHAKESPEARE = ROOT / "tests" / "fixtures" / "shakespeare"  # 212 KB of plays, in the repo
SAMPLE = ROOT / "growlm" / "assets" / "sample.txt"

# Tolerances of the correctness section (max |loss difference| over every step of a run).
# bf16 autocast vs fp32 on the tiny Llama below, 6 AdamW steps at lr 3e-3: on the CPU the two
# differ by 1.2e-4 (2.5e-4 with the growth stage; `gpu_check.py --cpu-smoke`, 2026-12-02). The
# bound leaves ~100x for the GPU's other bf16 kernels; a broken mask or a lost gradient moves
# the loss by more than that within these steps.
TOL_BF16 = 0.02
TOL_FP32 = 1e-3  # fp32 on the GPU vs fp32 on the CPU: kernel summation order only
TOL_RESUME = 1e-3  # a resumed bf16 run vs the uninterrupted one (bitwise equality reported too)


# ---- data ----------------------------------------------------------------------------------
def text_data(folder: Path, vocab_size: int = 512) -> Path:
    """The repo's Shakespeare fixture as a prepared folder with a trained byte-level BPE."""
    from growlm.data.prepare import PrepareOptions, prepare

    options = PrepareOptions(
        sources=[str(SHAKESPEARE)], vocab_size=vocab_size, val_fraction=0.05, block_tokens=512
    )
    return prepare(options, folder)


def random_data(folder: Path, vocab_size: int, tokens: int, seed: int = 0) -> Path:
    """A prepared folder of uniformly random token ids (throughput only: the content does not
    matter) with no validation split, and a small tokenizer trained on growlm's sample text so
    the folder is complete."""
    from growlm.data.shards import FORMAT, SplitWriter, dtype_for_vocab, write_manifest
    from growlm.data.tokenizer import train_tokenizer

    folder.mkdir(parents=True)
    tokenizer = train_tokenizer([SAMPLE.read_text()], 300, folder / "tokenizer")
    dtype = dtype_for_vocab(vocab_size)
    writer = SplitWriter(folder, "train", dtype, shard_tokens=tokens)
    writer.write(np.random.default_rng(seed).integers(0, vocab_size, tokens, dtype=np.int64))
    records = writer.finish()
    write_manifest(
        folder,
        {
            "format": FORMAT,
            "dtype": dtype.name,
            "vocab_size": vocab_size,
            "eos_id": tokenizer.eos_id,
            "tokenizer": "tokenizer",
            "documents": 1,
            "options": {"random_tokens": True, "seed": seed},
            "splits": {
                "train": {"tokens": tokens, "shards": [r.__dict__ for r in records]},
                "val": {"tokens": 0, "shards": []},
            },
        },
    )
    return folder


def job_data(job: dict[str, Any]) -> dict[str, Any]:
    root = Path(job["root"])
    text = text_data(root / "text")
    rand = random_data(root / "random", int(job["vocab_size"]), int(job["random_tokens"]), seed=0)
    return {"text": str(text), "random": str(rand)}


# ---- correctness ---------------------------------------------------------------------------
TINY = {
    "hidden_size": 64,
    "intermediate_size": 176,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "max_position_embeddings": 256,
}


def tiny_recipe(data: Path, device: str, precision: str, **over: Any) -> dict[str, Any]:
    """A 2-layer Llama (hidden 64, GQA), 8 x 64 tokens per step, 6 steps, one stage."""
    steps = over.pop("steps", 6)
    raw: dict[str, Any] = {
        "name": "check",
        "seed": 7,
        "data": {"prepared": str(data), "seq_len": 64},
        "model": {"type": "llama", "config": dict(TINY)},
        "optim": {"lr": 3e-3, "warmup_steps": 2, "micro_batch_size": 8},
        "run": {
            "device": device,
            "precision": precision,
            "compile": False,
            "eval_every": 0,
            "eval_sequences": 16,
            "checkpoint_every": 0,
            "progress": False,
        },
        "stages": [{"name": "base", "tokens": steps * 8 * 64}],
    }
    for key, value in over.items():
        section, _, name = key.partition(".")
        raw[section][name] = value
    return raw


def train_losses(raw: dict[str, Any], out: Path, resume: bool = False) -> list[float]:
    from growlm.train.loop import train
    from growlm.train.metrics import read_metrics
    from growlm.train.recipe import recipe_from_dict

    train(recipe_from_dict(json.loads(json.dumps(raw)), []), out, resume=resume)
    return [float(r["loss"]) for r in read_metrics(out / "metrics.jsonl")]


def compare(name: str, got: list[float], ref: list[float], tol: float) -> dict[str, Any]:
    """One check: the step losses of a run against a reference run."""
    diff = max((abs(a - b) for a, b in zip(got, ref, strict=True)), default=float("inf"))
    return {
        "check": name,
        "passed": len(got) == len(ref) > 0 and diff <= tol,
        "max_abs_loss_diff": diff,
        "tolerance": tol,
        "bitwise_equal": got == ref,
        "losses": got,
        "reference_losses": ref,
    }


def _interrupted_copy(run: Path, to: Path, keep_step: int) -> Path:
    """A copy of a finished run as if killed right after its checkpoint at ``keep_step``."""
    shutil.copytree(run, to)
    for ckpt in (to / "checkpoints").iterdir():
        if ckpt.name != f"step-{keep_step:08d}":
            shutil.rmtree(ckpt)
    for done in ("base", "grown", "final"):
        shutil.rmtree(to / done, ignore_errors=True)
    return to


CHECKS = ("fp32", "bf16", "grow", "resume", "compiled")  # cheap first: partial results


def job_correctness(job: dict[str, Any]) -> dict[str, Any]:
    """growlm train on ``device`` against CPU fp32 runs: fp32, bf16, compiled bf16, growth
    carrying the AdamW moments, resume from a checkpoint (on the device, and on the CPU)."""
    device, data, root = job["device"], Path(job["data"]), Path(job["root"])
    wanted = job.get("checks", CHECKS)
    checks: list[dict[str, Any]] = []
    save = job.get("_save", lambda result: None)

    def result() -> dict[str, Any]:
        out = {"checks": checks, "passed": all(c["passed"] for c in checks)}
        save(out)  # what is done so far survives a timeout
        return out

    ref = train_losses(tiny_recipe(data, "cpu", "fp32"), root / "ref")
    if "fp32" in wanted:
        fp32 = train_losses(tiny_recipe(data, device, "fp32"), root / "fp32")
        checks.append(compare("fp32 on device vs fp32 on cpu", fp32, ref, TOL_FP32))
        result()
    if "bf16" in wanted:
        bf16 = train_losses(tiny_recipe(data, device, "bf16"), root / "bf16")
        checks.append(compare("bf16 on device vs fp32 on cpu", bf16, ref, TOL_BF16))
        result()
    if "grow" in wanted:
        checks.append(_grow_check(data, device, root))
        result()
    if "resume" in wanted:
        checks.extend(_resume_checks(data, device, root))
        result()
    if "compiled" in wanted:
        raw = tiny_recipe(data, device, "bf16", **{"run.compile": True})
        compiled = train_losses(raw, root / "compiled")
        checks.append(compare("bf16 compiled on device vs fp32 on cpu", compiled, ref, TOL_BF16))
    return result()


def _grow_check(data: Path, device: str, root: Path) -> dict[str, Any]:
    """Two stages, the second grown by stack x2 with the AdamW moments carried through it."""

    grow = {
        "stages": [
            {"name": "base", "tokens": 4 * 8 * 64},
            {
                "name": "grown",
                "tokens": 4 * 8 * 64,
                "grow": {"op": "stack", "params": {"factor": 2}},
                "optimizer_state": "carry",
                "optim": {"lr": 1.5e-3, "warmup_steps": 1},
            },
        ]
    }
    grow_ref = train_losses({**tiny_recipe(data, "cpu", "fp32"), **grow}, root / "grow_ref")
    grown = train_losses({**tiny_recipe(data, device, "bf16"), **grow}, root / "grow")
    name = "grow (stack x2, moments carried) bf16 on device vs fp32 on cpu"
    check = compare(name, grown, grow_ref, TOL_BF16)
    layers = json.loads((root / "grow" / "final" / "config.json").read_text())["num_hidden_layers"]
    check["final_layers"] = layers
    check["passed"] = check["passed"] and layers == 2 * TINY["num_hidden_layers"]
    return check


def _resume_checks(data: Path, device: str, root: Path) -> list[dict[str, Any]]:
    """A bf16 run on the device resumed from its step-3 checkpoint, on the device and on the
    CPU (checkpoints are device-agnostic), against the uninterrupted run."""
    checks = []
    whole = tiny_recipe(data, device, "bf16", **{"run.checkpoint_every": 3})
    full = train_losses(whole, root / "whole")
    resumed = train_losses(whole, _interrupted_copy(root / "whole", root / "resumed", 3), True)
    checks.append(compare("resume at step 3 on device vs uninterrupted", resumed, full, TOL_RESUME))
    on_cpu = {**whole, "run": {**whole["run"], "device": "cpu"}}
    moved = train_losses(on_cpu, _interrupted_copy(root / "whole", root / "moved", 3), True)
    checks.append(
        compare(
            "device checkpoint resumed on cpu vs uninterrupted on device", moved, full, TOL_BF16
        )
    )
    return checks


# ---- throughput ----------------------------------------------------------------------------
def llama_config(model: dict[str, Any], vocab_size: int) -> Any:
    from transformers import AutoConfig

    return AutoConfig.for_model(
        "llama", vocab_size=vocab_size, use_cache=False, tie_word_embeddings=False, **model
    )


def job_probe(job: dict[str, Any]) -> dict[str, Any]:
    """Largest micro-batch whose full bf16 training step (fused AdamW, fp32 master weights,
    eager SDPA) fits in ``headroom`` of the device's memory (bench/gpu_check.probe_batch)."""
    from gpu_check import probe_batch

    from growlm.train.loss import token_loss
    from growlm.train.model import build_model

    device = torch.device(job["device"])
    seq, vocab = int(job["seq_len"]), int(job["vocab_size"])
    torch.manual_seed(0)
    model = build_model(llama_config(job["model"], vocab), "sdpa", device).to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=True)
    limit = None
    if device.type == "cuda":
        limit = float(job["headroom"]) * torch.cuda.get_device_properties(device).total_memory
    tried: list[dict[str, Any]] = []

    def fits(batch: int) -> bool:
        ids = torch.randint(0, vocab, (batch, seq + 1), device=device)
        ok, peak = True, None
        try:
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(device)
            with torch.autocast(device.type, dtype=torch.bfloat16):
                logits = model(input_ids=ids[:, :-1]).logits
            token_loss(logits, ids[:, 1:]).backward()
            del logits
            optimizer.step()
            if device.type == "cuda":
                torch.cuda.synchronize(device)
                peak = torch.cuda.max_memory_allocated(device)
                ok = limit is None or peak <= limit
        except torch.OutOfMemoryError:
            ok = False
        optimizer.zero_grad(set_to_none=True)
        if device.type == "cuda":
            torch.cuda.empty_cache()
        tried.append({"batch": batch, "fits": ok, "peak_bytes": peak})
        return ok

    best = probe_batch(fits, int(job["max_batch"]))
    return {
        "batch": best,
        "tried": tried,
        "memory_limit_bytes": limit,
        "flash_only_forward": _flash_only(model, vocab, seq, device),
    }


def _flash_only(model: torch.nn.Module, vocab: int, seq: int, device: torch.device) -> str:
    """Whether the model's attention calls run with SDPA restricted to the flash kernel ("ok",
    or the error): both arms call SDPA the same way, through transformers."""
    if device.type != "cuda":
        return "not on CUDA"
    from torch.nn.attention import SDPBackend, sdpa_kernel

    ids = torch.randint(0, vocab, (1, seq), device=device)
    try:
        flash = sdpa_kernel([SDPBackend.FLASH_ATTENTION])
        with torch.no_grad(), flash, torch.autocast("cuda", dtype=torch.bfloat16):
            model(input_ids=ids)
    except RuntimeError as exc:
        return f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}"
    return "ok"


def _cuda_sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def job_growlm(job: dict[str, Any]) -> dict[str, Any]:
    """``growlm train`` (its Trainer, in this process) for warm-up + timed steps; the stage-end
    checkpoint and export are skipped (untimed anyway; a 1B model's would cost ~20 s of the
    budget). Step end times are the loop's own ``elapsed`` (taken after a CUDA synchronize)."""
    from growlm.train import distributed, loop
    from growlm.train.data import open_training_data
    from growlm.train.loop import Trainer
    from growlm.train.metrics import read_metrics
    from growlm.train.recipe import recipe_from_dict

    class NoWrites(Trainer):
        def _save_checkpoint(self, *args: Any, **kwargs: Any) -> None:
            return None

        def _export(self, *args: Any, **kwargs: Any) -> None:
            return None

    batch, seq, steps = int(job["batch"]), int(job["seq_len"]), job["warmup"] + job["steps"]
    raw = {
        "name": "throughput",
        "seed": 0,
        "data": {"prepared": job["data"], "seq_len": seq},
        "model": {"type": "llama", "config": dict(job["model"])},
        "optim": {"lr": 3e-4, "warmup_steps": 2, "micro_batch_size": batch},
        "run": {
            "device": job["device"],
            "precision": "bf16",
            "compile": bool(job["compile"]),
            "eval_every": 0,
            "checkpoint_every": 0,
            "progress": False,
        },
        "stages": [{"name": "s", "tokens": steps * batch * seq}],
    }
    recipe = recipe_from_dict(raw, [])
    out = Path(job["root"])
    room = loop.require_checkpoint_room
    loop.require_checkpoint_room = lambda *args: None  # nothing is written: no disk needed
    try:  # the jobs also run in-process (tests): the real check is put back afterwards
        ctx = distributed.init(recipe.run.device, recipe.run.parallel)
        NoWrites(recipe, out, ctx, open_training_data(recipe.data, ctx)).run(False)
    finally:
        loop.require_checkpoint_room = room
    records = read_metrics(out / "metrics.jsonl")
    return {
        "step_end_s": [float(r["elapsed"]) for r in records],
        "losses": [float(r["loss"]) for r in records],
        "cuda_mem_peak_gib": records[-1].get("cuda_mem_peak_gib"),
    }


def job_trainer(job: dict[str, Any]) -> dict[str, Any]:
    """``transformers.Trainer`` with its best settings for this model: bf16, SDPA, fused AdamW,
    ``torch_compile``, pinned-memory loader; step end times after a CUDA synchronize. The loader
    runs in the main process (a batch is B rows copied from a memmap: well under 1% of a step;
    no worker processes forked from a CUDA process)."""
    from transformers import AutoModelForCausalLM, Trainer, TrainerCallback, TrainingArguments

    from growlm.data.sampler import TokenWindows
    from growlm.data.shards import open_shards

    batch, seq = int(job["batch"]), int(job["seq_len"])
    shards = open_shards(job["data"])
    windows = TokenWindows(shards.splits["train"], seq)

    class Windows(torch.utils.data.Dataset):  # type: ignore[type-arg]
        def __len__(self) -> int:
            return windows.count

        def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
            row = windows.batch(np.asarray([index]))[0, :-1]
            return {"input_ids": row, "labels": row}

    class Clock(TrainerCallback):
        def __init__(self) -> None:
            self.ends: list[float] = []
            self.start = 0.0

        def on_train_begin(self, *args: Any, **kwargs: Any) -> None:
            self.start = time.perf_counter()

        def on_step_end(self, *args: Any, **kwargs: Any) -> None:
            _cuda_sync()
            self.ends.append(time.perf_counter() - self.start)

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(
        llama_config(job["model"], shards.vocab_size), attn_implementation="sdpa"
    )
    clock = Clock()
    cuda = job["device"] == "cuda"
    args = TrainingArguments(
        output_dir=str(job["root"]),
        per_device_train_batch_size=batch,
        max_steps=job["warmup"] + job["steps"],
        learning_rate=3e-4,
        warmup_steps=2,
        lr_scheduler_type="cosine",
        weight_decay=0.1,
        adam_beta1=0.9,
        adam_beta2=0.95,
        max_grad_norm=1.0,
        bf16=True,
        optim="adamw_torch_fused",
        torch_compile=bool(job["compile"]),
        use_cpu=not cuda,
        dataloader_pin_memory=cuda,
        dataloader_num_workers=0,
        logging_steps=10_000,
        save_strategy="no",
        report_to=[],
        disable_tqdm=True,
        seed=0,
    )
    trainer = Trainer(model=model, args=args, train_dataset=Windows(), callbacks=[clock])
    trainer.train()
    peak = torch.cuda.max_memory_allocated() / 2**30 if cuda else None
    return {"step_end_s": clock.ends, "cuda_mem_peak_gib": peak}


JOBS: dict[str, Callable[[dict[str, Any]], dict[str, Any]]] = {
    "data": job_data,
    "correctness": job_correctness,
    "probe": job_probe,
    "growlm": job_growlm,
    "trainer": job_trainer,
}


def main() -> int:
    job = json.loads(Path(sys.argv[1]).read_text())
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    if job.get("threads"):
        torch.set_num_threads(int(job["threads"]))
    started = time.perf_counter()
    out = Path(sys.argv[2])

    def save(result: dict[str, Any]) -> None:
        result["job_wall_s"] = round(time.perf_counter() - started, 2)
        tmp = out.with_name(out.name + ".tmp")
        tmp.write_text(json.dumps(result, indent=1) + "\n")
        os.replace(tmp, out)

    job["_save"] = lambda result: save({**result, "partial": True})
    save(JOBS[job["job"]](job))
    return 0


if __name__ == "__main__":
    sys.exit(main())

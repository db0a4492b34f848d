"""Training throughput on this machine: ``growlm train`` vs ``transformers.Trainer``.

Same model (Llama, 12 layers, hidden 512, seq 256), same batch, same token windows (the
embedded Shakespeare corpus, tokenized once with an 8192-token byte-level BPE), bf16 autocast
with fp32 master weights, AdamW (0.9, 0.95), clip 1.0, cosine schedule. Each side runs its own
defaults: the Trainer with SDPA attention and (compiled arms) ``torch_compile=True`` on the whole
model; growlm with ``model.attn_implementation: auto`` (SDPA eager; compiled: per-block compile
and growlm's CPU attention, flash forward + recomputing backward) and a compiled loss. The arms
run one after the other in this process; each is timed per optimizer step (wall clock from step
start to end), skipping warm-up steps, and reported as tokens/s and MFU against the bf16 matmul
peak that the benchmark measures first (square bf16 matmuls, best of several runs).

    python bench/train_throughput.py                  # eager arms, ~3 minutes on 2 cores
    python bench/train_throughput.py --compile        # add torch.compile arms (slower start)
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from record import header, write_result  # bench/record.py (bench/ is on sys.path)

ROOT = Path(__file__).resolve().parents[1]
MODEL = dict(
    hidden_size=512,
    intermediate_size=1376,
    num_hidden_layers=12,
    num_attention_heads=8,
    num_key_value_heads=8,
    max_position_embeddings=512,
)
SEQ = 256
VOCAB = 8192


def measure_peak(dtype: torch.dtype = torch.bfloat16, n: int = 2048, iters: int = 8) -> float:
    """Best achieved FLOP/s of an n x n x n matmul in ``dtype`` (the MFU denominator); best of
    several rounds so a busy moment on a shared machine does not lower the peak."""
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    for _ in range(3):
        a @ b
    best = float("inf")
    for _ in range(15):
        start = time.perf_counter()
        for _ in range(iters):
            a @ b
        best = min(best, (time.perf_counter() - start) / iters)
    return 2 * n**3 / best


def prepared_data() -> Path:
    from growlm.data.prepare import PrepareOptions, prepare_cached

    return prepare_cached(PrepareOptions(sources=["default"], vocab_size=VOCAB, val_fraction=0.01))


def flops_per_token(n_params: int) -> float:
    from growlm.train.flops import attention_flops_per_token, model_flops_per_token
    from growlm.train.model import build_config
    from growlm.train.recipe import ModelConfig

    config = build_config(ModelConfig(config=dict(MODEL)), VOCAB, 0)
    return model_flops_per_token(n_params) + attention_flops_per_token(config, SEQ)


def growlm_arm(data: Path, batch: int, steps: int, warmup: int, compile_: bool) -> dict[str, Any]:
    from growlm.train.loop import train
    from growlm.train.metrics import read_metrics
    from growlm.train.recipe import recipe_from_dict

    raw = {
        "name": "bench",
        "seed": 0,
        "data": {"prepared": str(data), "seq_len": SEQ},
        "model": {"type": "llama", "config": dict(MODEL)},
        "optim": {"lr": 1e-3, "warmup_steps": 2, "micro_batch_size": batch, "grad_accum": 1},
        "run": {
            "precision": "bf16",
            "compile": compile_,
            "eval_every": 0,
            "eval_sequences": batch,
            "checkpoint_every": 0,
            "progress": False,
        },
        "stages": [{"name": "s", "tokens": (warmup + steps) * batch * SEQ}],
    }
    with tempfile.TemporaryDirectory() as tmp:
        train(recipe_from_dict(raw, []), Path(tmp) / "out")
        records = read_metrics(Path(tmp) / "out" / "metrics.jsonl")
    seconds = [batch * SEQ / r["tokens_per_s"] for r in records[warmup:]]
    return {"step_seconds": seconds, "losses": [r["loss"] for r in records]}


def trainer_arm(data: Path, batch: int, steps: int, warmup: int, compile_: bool) -> dict[str, Any]:
    from transformers import (
        AutoConfig,
        AutoModelForCausalLM,
        Trainer,
        TrainerCallback,
        TrainingArguments,
    )

    from growlm.data.sampler import TokenWindows
    from growlm.data.shards import open_shards

    shards = open_shards(data)
    windows = TokenWindows(shards.splits["train"], SEQ)

    class Windows(torch.utils.data.Dataset):  # type: ignore[type-arg]
        def __len__(self) -> int:
            return windows.count

        def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
            row = windows.batch(torch.tensor([index]).numpy())[0, :-1]
            return {"input_ids": row, "labels": row}

    class Timer(TrainerCallback):
        def __init__(self) -> None:
            self.seconds: list[float] = []
            self.losses: list[float] = []
            self._start = 0.0

        def on_step_begin(self, *args: Any, **kwargs: Any) -> None:
            self._start = time.perf_counter()

        def on_step_end(self, *args: Any, **kwargs: Any) -> None:
            self.seconds.append(time.perf_counter() - self._start)

    torch.manual_seed(0)
    config = AutoConfig.for_model(
        "llama", vocab_size=shards.vocab_size, use_cache=False, tie_word_embeddings=False, **MODEL
    )
    model = AutoModelForCausalLM.from_config(config, attn_implementation="sdpa")
    timer = Timer()
    with tempfile.TemporaryDirectory() as tmp:
        args = TrainingArguments(
            output_dir=tmp,
            per_device_train_batch_size=batch,
            max_steps=warmup + steps,
            learning_rate=1e-3,
            warmup_steps=2,
            lr_scheduler_type="cosine",
            weight_decay=0.1,
            adam_beta1=0.9,
            adam_beta2=0.95,
            max_grad_norm=1.0,
            bf16=True,
            use_cpu=True,
            logging_steps=10_000,
            save_strategy="no",
            report_to=[],
            dataloader_num_workers=0,
            torch_compile=compile_,
            disable_tqdm=True,
            seed=0,
        )
        Trainer(model=model, args=args, train_dataset=Windows(), callbacks=[timer]).train()
    return {"step_seconds": timer.seconds[warmup:]}


def summarise(arm: dict[str, Any], tokens_per_step: int, flops_tok: float, peak: float) -> dict:
    seconds = arm["step_seconds"]
    mean = sum(seconds) / len(seconds)
    tps = tokens_per_step / mean
    return {
        "tokens_per_s": round(tps, 1),
        "median_step_s": round(statistics.median(seconds), 4),
        "mean_step_s": round(mean, 4),
        "mfu": round(tps * flops_tok / peak, 4),
        "steps_timed": len(seconds),
    }


def machine() -> dict[str, Any]:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "transformers": __import__("transformers").__version__,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=12, help="timed steps per arm")
    parser.add_argument("--warmup", type=int, default=3, help="untimed first steps per arm")
    parser.add_argument("--batch", type=int, default=8, help="sequences per step")
    parser.add_argument("--compile", action="store_true", help="also run torch.compile arms")
    parser.add_argument(
        "--repeats",
        type=int,
        default=1,
        help="run the arm sequence this many times, alternating; best run counts",
    )
    parser.add_argument("--out", type=Path, default=ROOT / "bench/results/train_throughput.json")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

    peak = measure_peak()
    data = prepared_data()
    peak = max(peak, measure_peak())
    tokens_per_step = args.batch * SEQ
    arms: dict[str, dict[str, Any]] = {}
    plan = [("trainer", False), ("growlm", False)]
    if args.compile:
        plan += [("trainer+compile", True), ("growlm+compile", True)]
    plan = plan * args.repeats
    runs: dict[str, list[dict[str, Any]]] = {}
    n_params = 0
    for name, compile_ in plan:
        run = trainer_arm if name.startswith("trainer") else growlm_arm
        started = time.perf_counter()
        raw = run(data, args.batch, args.steps, args.warmup, compile_)
        if not n_params:
            from growlm.train.model import build_config, build_model, param_count
            from growlm.train.recipe import ModelConfig

            with torch.device("meta"):
                n_params = param_count(
                    build_model(build_config(ModelConfig(config=dict(MODEL)), VOCAB, 0))
                )
        summary = summarise(raw, tokens_per_step, flops_per_token(n_params), peak)
        summary["arm_wall_s"] = round(time.perf_counter() - started, 1)
        runs.setdefault(name, []).append(summary)
        print(name, summary, flush=True)
    for name, results in runs.items():
        arms[name] = {**max(results, key=lambda r: r["tokens_per_s"]), "runs": results}
    best = {
        k: max((v["tokens_per_s"] for n, v in arms.items() if n.startswith(k)))
        for k in ("growlm", "trainer")
    }
    result = {
        **header(),
        "machine": machine(),
        "git": _git_rev(),
        "setup": {
            "model": {"type": "llama", **MODEL, "vocab_size": VOCAB},
            "params": n_params,
            "seq_len": SEQ,
            "batch": args.batch,
            "tokens_per_step": tokens_per_step,
            "precision": "bf16 autocast, fp32 master weights",
            "attention": {
                "trainer": "sdpa (eager and compiled)",
                "growlm": "sdpa (eager); growlm_cpu (compiled, per-block compile)",
            },
            "warmup_steps_skipped": args.warmup,
            "timed_steps": args.steps,
        },
        "peak_bf16_matmul_flops": peak,
        "arms": arms,
        "speedup_best_growlm_over_best_trainer": round(best["growlm"] / best["trainer"], 3),
    }
    write_result(args.out, result)
    print(
        json.dumps(
            {
                k: result[k]
                for k in ("peak_bf16_matmul_flops", "speedup_best_growlm_over_best_trainer")
            }
        )
    )
    return 0


def _git_rev() -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=False,
        )
    except OSError:
        return None
    return out.stdout.strip() or None


if __name__ == "__main__":
    sys.exit(main())

"""Upcycling at equal *active* training FLOPs: dense continued vs upcycled (r = 0, r = 0.5) vs
the same MoE from scratch, after a shared dense stage, on the embedded Shakespeare corpus.

Per seed: train a dense Llama for DENSE_TOKENS; then four arms, each given the same budget of
active training FLOPs (6 x active parameters x tokens; an MoE's active parameters count top-k of
its experts plus the router):
  dense      the dense model, trained on (its share of FLOPs)
  upcycle    growlm grow --op upcycle --experts E --top-k K (function preserving), trained on
  drop-0.5   the same with --drop-ratio 0.5 (Drop-Upcycling)
  scratch    the same Mixtral config, randomly initialised
Each arm's validation loss vs FLOPs is written to bench/results/upcycle.json (with the command,
date, git revision and machine) and plotted to bench/results/upcycle.png; the summary gives per
arm the mean final validation loss over seeds, the spread and a 95% t-interval.

    python bench/upcycle.py --quick             # tiny: 1 seed, seconds per arm, to a temp folder
    python bench/upcycle.py --seeds 0 1 2       # the measured run (hours on 2 CPU cores)

Run it under the shared CPU lock: ``flock /work/helpers/cpu.lock python bench/upcycle.py``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

FULL = {
    "model": {
        "hidden_size": 256,
        "intermediate_size": 688,
        "num_hidden_layers": 4,
        "num_attention_heads": 4,
        "num_key_value_heads": 4,
        "max_position_embeddings": 128,
        "tie_word_embeddings": False,
    },
    "experts": 8,
    "top_k": 2,
    "dense_tokens": 4_000_000,
    "moe_tokens": 4_000_000,  # tokens of the upcycled arms; the others follow from FLOPs
    "seq_len": 128,
    "micro": 32,
    "vocab": 2048,
}
QUICK = {
    **FULL,
    "model": {**FULL["model"], "hidden_size": 64, "intermediate_size": 176, "num_hidden_layers": 2},
    "experts": 4,
    "dense_tokens": 16 * 64 * 20,
    "moe_tokens": 16 * 64 * 20,
    "seq_len": 64,
    "micro": 16,
    "vocab": 512,
}
ARMS = ("dense", "upcycle", "drop-0.5", "scratch")


def recipe(
    s: dict[str, Any], seed: int, name: str, tokens: int, model: dict[str, Any]
) -> dict[str, Any]:
    return {
        "name": name,
        "seed": seed,
        "data": {
            "sources": ["default"],
            "vocab_size": s["vocab"],
            "val_fraction": 0.02,
            "block_tokens": 1024,
            "seq_len": s["seq_len"],
        },
        "model": model,
        "optim": {
            "lr": 1.0e-3,
            "min_lr_ratio": 0.1,
            "warmup_steps": 20,
            "micro_batch_size": s["micro"],
        },
        "run": {
            "precision": "fp32",
            "eval_every": 20,
            "eval_sequences": 64,
            "checkpoint_every": 0,
            "progress": False,
        },
        "stages": [{"name": "train", "tokens": tokens}],
    }


def run(raw: dict[str, Any], out: Path) -> list[dict[str, Any]]:
    from growlm.train.loop import train
    from growlm.train.recipe import recipe_from_dict

    train(recipe_from_dict(raw, [], ROOT / "recipes"), out)
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def active_params(folder: Path) -> int:
    from transformers import AutoModelForCausalLM

    from growlm.train.moe import active_params as count

    model = AutoModelForCausalLM.from_pretrained(str(folder))
    return count(model, model.config)


def export_of(out: Path) -> Path:
    """The exported model folder of a one-stage run."""
    found = [p for p in out.iterdir() if (p / "config.json").is_file() and p.name != "checkpoints"]
    assert found, out
    return found[0]


def seed_run(s: dict[str, Any], seed: int, work: Path) -> dict[str, Any]:
    from growlm.grow import GrowOptions, grow

    step = s["micro"] * s["seq_len"]
    dense_model = {"type": "llama", "config": s["model"]}
    run(recipe(s, seed, "dense-stage", s["dense_tokens"], dense_model), work / "dense-stage")
    dense = export_of(work / "dense-stage")
    moe = work / "moe-r0"
    arms = {"experts": s["experts"], "top_k": s["top_k"]}
    grow(dense, moe, "upcycle", arms, GrowOptions(seed=seed))
    grow(dense, work / "moe-r0.5", "upcycle", {**arms, "drop_ratio": 0.5}, GrowOptions(seed=seed))
    n_dense, n_moe = active_params(dense), active_params(moe)
    budget = 6.0 * n_moe * s["moe_tokens"]  # active training FLOPs, equal for every arm
    dense_tokens = max(step, round(budget / (6.0 * n_dense) / step) * step)
    moe_cfg = json.loads((moe / "config.json").read_text())
    scratch_model = {
        "type": "mixtral",
        "config": {
            **s["model"],
            "num_local_experts": moe_cfg["num_local_experts"],
            "num_experts_per_tok": moe_cfg["num_experts_per_tok"],
        },
    }
    arms = {
        "dense": ({"init": str(dense)}, dense_tokens),
        "upcycle": ({"init": str(moe)}, s["moe_tokens"]),
        "drop-0.5": ({"init": str(work / "moe-r0.5")}, s["moe_tokens"]),
        "scratch": (scratch_model, s["moe_tokens"]),
    }
    out: dict[str, Any] = {"active_params": {"dense": n_dense, "moe": n_moe}, "arms": {}}
    for arm, (model, tokens) in arms.items():
        rows = run(recipe(s, seed, arm, tokens, model), work / arm)
        curve = [(r["flops"], r["val_loss"]) for r in rows if r.get("val_loss") is not None]
        out["arms"][arm] = {
            "tokens": tokens,
            "curve": curve,
            "final_val_loss": curve[-1][1],
            "final_aux_loss": next(
                (r["aux_loss"] for r in reversed(rows) if "aux_loss" in r), None
            ),
        }
    return out


def t_interval(values: list[float]) -> list[float] | None:
    if len(values) < 2:
        return None
    t95 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571}.get(len(values) - 1, 2.0)
    half = t95 * statistics.stdev(values) / math.sqrt(len(values))
    mean = statistics.mean(values)
    return [mean - half, mean + half]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="tiny setting, one seed, temp output")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    p.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "upcycle.json")
    args = p.parse_args()
    s = QUICK if args.quick else FULL
    seeds = [0] if args.quick else args.seeds
    out = Path(tempfile.mkdtemp()) / "upcycle.json" if args.quick else args.out
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    per_seed = {}
    with tempfile.TemporaryDirectory() as tmp:
        for seed in seeds:
            per_seed[seed] = seed_run(s, seed, Path(tmp) / f"seed{seed}")
    summary = {}
    for arm in ARMS:
        finals = [per_seed[sd]["arms"][arm]["final_val_loss"] for sd in seeds]
        summary[arm] = {
            "mean": statistics.mean(finals),
            "spread": max(finals) - min(finals),
            "t95": t_interval(finals),
            "per_seed": finals,
        }
    rev = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True)
    result = {
        "command": "python bench/upcycle.py " + " ".join(sys.argv[1:]),
        "date": dt.date.today().isoformat(),
        "git_revision": rev.stdout.strip(),
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
        "setting": s,
        "seeds": seeds,
        "summary": summary,
        "runs": per_seed,
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1) + "\n")
    plot(result, out.with_suffix(".png"))
    print(json.dumps(summary, indent=1))
    print(f"wrote {out}")


def plot(result: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for i, arm in enumerate(ARMS):
        for j, seed in enumerate(result["seeds"]):
            curve = result["runs"][seed]["arms"][arm]["curve"]
            ax.plot(
                [c[0] for c in curve], [c[1] for c in curve], color=f"C{i}",
                alpha=0.8, label=arm if j == 0 else None,
            )  # fmt: skip
    ax.set_xlabel("active training FLOPs after the dense stage")
    ax.set_ylabel("validation loss")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)


if __name__ == "__main__":
    main()

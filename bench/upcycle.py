"""Upcycling at equal *active* training FLOPs: dense continued vs upcycled (r = 0, r = 0.5) vs
the same MoE from scratch, after a shared dense stage, on growlm-mix (30M training tokens, so no
text repeats; built and prepared on first use, shared with bench/compute_optimal.py; --quick:
the embedded Shakespeare corpus).

Per seed: train a dense Llama for DENSE_TOKENS; then four arms, each given the same budget of
active training FLOPs (6 x active parameters x tokens; an MoE's active parameters count top-k of
its experts plus the router):
  dense      the dense model, trained on (its share of FLOPs)
  upcycle    growlm grow --op upcycle --experts E --top-k K (function preserving), trained on
  drop-0.5   the same with --drop-ratio 0.5 (Drop-Upcycling)
  scratch    the same Mixtral config, randomly initialised
Each arm's validation loss vs FLOPs is written to bench/results/upcycle.json (with the command,
date, git revision and machine) and plotted to bench/results/upcycle.png; the summary gives per
arm its final validation loss on every seed, and mean, sd and 95% t-interval over seeds
(growlm.analysis.seeds.across_seeds), and the same for each MoE arm's gap to dense continued
and upcycled minus scratch, seed by seed.

Resumable, as bench/compute_optimal.py: the runs go one after another in this process; each
finished run (the dense stage included) writes OUT/arms/<run>-s<seed>.json and is skipped on a
rerun; an unfinished one resumes from its last checkpoint (growlm's own resume); an upcycled
folder is reused when complete (grow writes it atomically, growth record last). Each finished
seed's result is also kept in git (bench/results/upcycle_seeds/seed-<seed>.json, --keep), so a
fresh clone skips it; a seed cut short on another machine starts over (the weights stay there).

    python bench/upcycle.py --quick --out /tmp/up --results /tmp/up.json   # tiny, ~1 minute
    flock /work/helpers/cpu.lock python bench/upcycle.py --seeds 0 1   # about an hour, 2 cores
"""

from __future__ import annotations

import argparse
import datetime as dt
import functools
import json
import os
import platform
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from corpus_mix import prepared_data  # noqa: E402  (bench/ is the script's folder)
from resumable import Runs  # noqa: E402

from growlm.analysis.seeds import across_seeds  # noqa: E402
from growlm.io.atomic import write_text_atomic  # noqa: E402

FULL = {
    # hidden 128 (first 256) and 2M MoE tokens (first 4M): both seeds in about an hour here
    "corpus": "growlm-mix",
    "model": {
        "hidden_size": 128,
        "intermediate_size": 344,
        "num_hidden_layers": 4,
        "num_attention_heads": 4,
        "num_key_value_heads": 4,
        "max_position_embeddings": 128,
        "tie_word_embeddings": False,
    },
    "experts": 8,
    "top_k": 2,
    "dense_tokens": 4_000_000,
    "moe_tokens": 2_000_000,  # tokens of the upcycled arms (half the dense stage's); the
    # others follow from FLOPs
    "seq_len": 128,
    "micro": 32,
    "vocab": 2048,
    "warmup": 20,
    "eval_every": 20,
    "eval_sequences": 64,
    "checkpoint_every": 100,  # steps; an interrupted run resumes from its last checkpoint
}
QUICK = {
    **FULL,
    "corpus": None,
    "model": {**FULL["model"], "hidden_size": 32, "intermediate_size": 96, "num_hidden_layers": 2},
    "experts": 4,
    "dense_tokens": 8 * 32 * 8,
    "moe_tokens": 8 * 32 * 8,
    "seq_len": 32,
    "micro": 8,
    "vocab": 512,
    "warmup": 2,
    "eval_every": 4,
    "eval_sequences": 8,
    "checkpoint_every": 4,
}
ARMS = ("dense", "upcycle", "drop-0.5", "scratch")
CORPUS_RECORD = "bench/results/corpus_growlm_mix.json"


def recipe(
    s: dict[str, Any], seed: int, name: str, tokens: int, model: dict[str, Any]
) -> dict[str, Any]:
    return {
        "name": name,
        "seed": seed,
        "data": data_section(s),
        "model": model,
        "optim": {
            "lr": 1.0e-3,
            "min_lr_ratio": 0.1,
            "warmup_steps": s["warmup"],
            "micro_batch_size": s["micro"],
        },
        "run": {
            "precision": "fp32",
            "eval_every": s["eval_every"],
            "eval_sequences": s["eval_sequences"],
            "checkpoint_every": s["checkpoint_every"],
            "keep_checkpoints": 1,
            "progress": False,
        },
        "stages": [{"name": "train", "tokens": tokens}],
    }


def data_section(s: dict[str, Any]) -> dict[str, Any]:
    """The recipes' data section (growlm-mix is built and prepared on first use, so only when a
    seed trains, and checked once per invocation)."""
    if s["corpus"] is None:
        default = {"sources": ["default"], "vocab_size": s["vocab"], "val_fraction": 0.02}
        return {**default, "block_tokens": 1024, "seq_len": s["seq_len"]}
    return dict(_mix_data(s["vocab"], s["seq_len"]))


@functools.cache
def _mix_data(vocab: int, seq: int) -> dict[str, Any]:
    return prepared_data(vocab, seq)[0]


def train_run(runs: Runs, name: str, raw: dict[str, Any], arm: str) -> dict[str, Any]:
    """Train (or resume, or skip) one run; its JSON: tokens, FLOPs, validation curve, final
    validation and aux loss, the exported model folder."""

    def summary(folder: Path, rows: list[dict[str, Any]]) -> dict[str, Any]:
        curve = [(r["flops"], r["val_loss"]) for r in rows if r.get("val_loss") is not None]
        return {
            "arm": arm,
            "name": name,
            "seed": raw["seed"],
            "export": str(folder / "final"),
            "tokens": rows[-1]["tokens"],
            "flops": rows[-1]["flops"],
            "curve": curve,
            "final_val_loss": curve[-1][1],
            "final_aux_loss": next(
                (r["aux_loss"] for r in reversed(rows) if "aux_loss" in r), None
            ),
        }

    return runs.run(name, raw, summary, ROOT / "recipes")


def active_params(folder: Path) -> int:
    from transformers import AutoModelForCausalLM

    from growlm.train.moe import active_params as count

    model = AutoModelForCausalLM.from_pretrained(str(folder))
    return count(model, model.config)


def complete(folder: Path) -> bool:
    """An upcycled folder from an earlier invocation (grow renames it into place, complete)."""
    from growlm.grow import RECORD

    return (folder / RECORD).is_file()


def seed_run(s: dict[str, Any], runs: Runs, seed: int, keep: Path | None) -> dict[str, Any]:
    """One seed's dense stage and four arms; with ``keep`` (a folder in git) the finished seed's
    result is read from KEEP/seed-<seed>.json when it was kept under this very setting, and
    written there (with the setting) when it finishes."""
    kept = keep / f"seed-{seed}.json" if keep else None
    if kept is not None and kept.is_file():
        done: dict[str, Any] = json.loads(kept.read_text())
        if done.get("setting") == s:
            return dict(done["run"])
        print(f"{kept}: kept under another setting; seed {seed} trains again", file=sys.stderr)
    out = train_seed(s, runs, seed)
    if kept is not None:
        kept.parent.mkdir(parents=True, exist_ok=True)
        write_text_atomic(kept, json.dumps({"setting": s, "run": out}, indent=1) + "\n")
    return out


def train_seed(s: dict[str, Any], runs: Runs, seed: int) -> dict[str, Any]:
    from growlm.grow import GrowOptions, grow

    step = s["micro"] * s["seq_len"]
    dense_model = {"type": "llama", "config": s["model"]}
    raw = recipe(s, seed, "dense-stage", s["dense_tokens"], dense_model)
    stage = train_run(runs, f"dense-stage-s{seed}", raw, "dense-stage")
    dense = Path(stage["export"])
    moe = runs.work / "grown" / f"moe-r0-s{seed}"
    drop = runs.work / "grown" / f"moe-r0.5-s{seed}"
    arms = {"experts": s["experts"], "top_k": s["top_k"]}
    if not complete(moe):
        grow(dense, moe, "upcycle", arms, GrowOptions(seed=seed))
    if not complete(drop):
        grow(dense, drop, "upcycle", {**arms, "drop_ratio": 0.5}, GrowOptions(seed=seed))
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
        "drop-0.5": ({"init": str(drop)}, s["moe_tokens"]),
        "scratch": (scratch_model, s["moe_tokens"]),
    }
    out: dict[str, Any] = {
        "active_params": {"dense": n_dense, "moe": n_moe},
        "dense_stage": {k: stage[k] for k in ("tokens", "flops", "final_val_loss")},
        "arms": {},
    }
    for arm, (model, tokens) in arms.items():
        result = train_run(runs, f"{arm}-s{seed}", recipe(s, seed, arm, tokens, model), arm)
        out["arms"][arm] = {
            k: result[k] for k in ("tokens", "flops", "curve", "final_val_loss", "final_aux_loss")
        }
    return out


def summarise(per_seed: dict[int, dict[str, Any]]) -> dict[str, Any]:
    """Every seed's final validation loss per arm, and across seeds: each arm, each MoE arm's
    gap to dense continued, upcycled minus scratch (paired by seed; negative: lower loss)."""

    def final(arm: str) -> list[float]:
        return [run["arms"][arm]["final_val_loss"] for run in per_seed.values()]

    def gap(a: str, b: str) -> dict[str, Any]:
        return across_seeds([x - y for x, y in zip(final(a), final(b), strict=True)])

    return {
        "seeds": list(per_seed),
        "final_val_loss": {
            arm: {
                "per_seed": dict(zip(per_seed, final(arm), strict=True)),
                **across_seeds(final(arm)),
            }
            for arm in ARMS
        },
        "minus_dense": {arm: gap(arm, "dense") for arm in ARMS if arm != "dense"},
        "upcycle_minus_scratch": gap("upcycle", "scratch"),
        "drop_minus_upcycle": gap("drop-0.5", "upcycle"),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="tiny setting (about a minute)")
    p.add_argument("--seeds", type=int, nargs="+", help="default: 0 1 (--quick: 0)")
    p.add_argument("--out", type=Path, help="work folder (default bench/work/upcycle[_quick])")
    p.add_argument("--results", type=Path, help="results JSON (default bench/results/)")
    p.add_argument(
        "--keep",
        type=Path,
        help="folder in git for each finished seed's result (default bench/results/upcycle_seeds; "
        "--quick: none); a fresh clone skips the seeds found there",
    )
    p.add_argument("--no-plots", action="store_true")
    args = p.parse_args()
    s = QUICK if args.quick else FULL
    seeds = args.seeds or ([0] if args.quick else [0, 1])
    suffix = "_quick" if args.quick else ""
    work = args.out or ROOT / "bench" / "work" / f"upcycle{suffix}"
    out = args.results or ROOT / "bench" / "results" / f"upcycle{suffix}.json"
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    runs = Runs(work)
    keep = args.keep or (None if args.quick else ROOT / "bench" / "results" / "upcycle_seeds")
    per_seed = {seed: seed_run(s, runs, seed, keep) for seed in seeds}
    summary = summarise(per_seed)
    rev = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True)
    result = {
        "command": "python bench/upcycle.py " + " ".join(sys.argv[1:]),
        "date": dt.date.today().isoformat(),
        "git_revision": rev.stdout.strip(),
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
        "setting": s,
        "corpus": s["corpus"] and {"name": s["corpus"], "details": CORPUS_RECORD},
        "seeds": seeds,
        "summary": summary,
        "runs": per_seed,
        "runs_trained_this_invocation": runs.trained_now,
        "arm_files": str(runs.arms_dir),
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(out, json.dumps(result, indent=1) + "\n")
    if not args.no_plots:
        plot(result, out.with_suffix(".png"))
    print(json.dumps({arm: v["per_seed"] for arm, v in summary["final_val_loss"].items()}))
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
    plt.close(fig)


if __name__ == "__main__":
    main()

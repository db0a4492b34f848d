"""Compute-optimal benchmark (issue 19): does growth save compute where users actually train?

At one FLOPs budget C (C = 6 N D, N every parameter including embedding and untied head: the
trainer's convention; attention FLOPs are logged apart and not counted):
a. IsoFLOP sweep: >= 5 target sizes trained from scratch with schedules ending at exactly C
   (to whole steps); a parabola of final loss vs log10 N gives N_opt and its tokens/param.
b. Timing at the grid size nearest N_opt: G_stack x4 at >= 4 growth points d (seed 0, the
   middle lr), the best d used below.
c. Growth at the grid sizes nearest N_opt and 2 N_opt: G_stack vs scratch at equal C. lr tuned
   on one grid (>= 3 values) for both arms on seed 0, the best of each arm then run on every
   seed; controls on seed 0: the small model alone for the whole budget, and the small model
   continued (no growth, fresh AdamW as the grown arm) from the growth point.
d. Statistics (growlm/analysis): each pair read on the target-size model's evaluations at one
   FLOPs spacing; mean, sd and 95% t-interval over seeds, every seed included (a seed that never
   reaches scratch's final loss enters at its upper bound C_ref(L) / C_run_final - 1).

Resumable: arms run one after another in this process; each finished arm writes
OUT/arms/<arm>.json and is skipped on a rerun; an unfinished arm resumes from its last
checkpoint (growlm's own resume). Results: bench/results/compute_optimal.json (+ plots);
``--quick`` is a tiny version (the tests run it) writing compute_optimal_quick.json.

    flock /work/helpers/cpu.lock python bench/compute_optimal.py            # full (resumes)
    python bench/compute_optimal.py --quick --out /tmp/co --results /tmp/co.json
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
from corpus_mix import prepared_data  # bench/corpus_mix.py (bench/ is on sys.path)
from resumable import Runs, metrics_file  # bench/resumable.py

from growlm.analysis.compare import compare_runs
from growlm.analysis.params import ModelSpec, count_params
from growlm.analysis.runs import load_run
from growlm.analysis.seeds import across_seeds, best_lr_per_arm
from growlm.io.atomic import write_text_atomic
from growlm.train.precision import resolve_precision

ROOT = Path(__file__).resolve().parent.parent
G = 4  # G_stack factor


@dataclass(frozen=True)
class Setting:
    """Everything that differs between the full benchmark and --quick."""

    name: str
    corpus: str | None  # "growlm-mix": fetched and prepared on first use (growlm/data/mix.py)
    sources: list[str]  # used when corpus is None
    vocab: int
    seq: int
    batch: int
    layers: int  # target depth (divisible by G)
    widths: list[int]  # IsoFLOP grid: one target size per width
    compute: float  # the budget C in FLOPs
    lr_grid: list[float]
    seeds: int
    timings: list[float]  # d as a share of the small model's whole-budget tokens
    eval_every: int
    eval_sequences: int
    growth_sizes: int  # 2: N_opt and 2 N_opt; 1: N_opt only


FULL = Setting(
    name="full",
    corpus="growlm-mix",
    sources=[],
    vocab=2048,
    seq=128,
    batch=32,
    layers=8,
    # 32 and 40 added after the first arms (w48 4.27 < w64 4.34 < w96 4.60): the minimum was at
    # the lower edge; finished arms are kept by name, so widening the grid only adds arms. 128 to
    # 256 dropped then: past a loss rising 4.27 -> 4.34 -> 4.60 they only cost time (~30 min)
    widths=[32, 40, 48, 64, 96],
    compute=3.0e13,
    lr_grid=[1e-3, 2e-3, 4e-3],
    seeds=3,
    timings=[0.05, 0.1, 0.2, 0.35],
    eval_every=20,
    eval_sequences=64,
    growth_sizes=2,
)
QUICK = Setting(
    name="quick",
    corpus=None,
    sources=[str(ROOT / "tests" / "fixtures" / "shakespeare")],
    vocab=512,
    seq=32,
    batch=8,
    layers=4,
    widths=[16, 24, 32, 48, 64],
    compute=4.0e9,
    lr_grid=[2e-3, 5e-3, 1e-2],
    seeds=2,
    timings=[0.1, 0.3],
    eval_every=4,
    eval_sequences=8,
    growth_sizes=1,
)


def model_config(s: Setting, width: int, layers: int) -> dict[str, Any]:
    heads = max(2, width // 32)
    return {
        "hidden_size": width,
        "intermediate_size": 8 * ((8 * width // 3 + 7) // 8),
        "num_hidden_layers": layers,
        "num_attention_heads": heads,
        "num_key_value_heads": heads,
        "max_position_embeddings": s.seq,
        "tie_word_embeddings": False,
    }


def params(s: Setting, width: int, layers: int) -> dict[str, int]:
    total = count_params(
        ModelSpec("llama", {**model_config(s, width, layers), "vocab_size": s.vocab})
    )
    embed = 2 * s.vocab * width  # embedding + untied head
    return {"total": total, "without_embeddings": total - embed}


def data_section(s: Setting) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """The recipes' data section, and the corpus summary when the setting uses growlm-mix
    (built and prepared into bench/work/corpus on first use: python bench/corpus_mix.py)."""
    if s.corpus is None:
        return {
            "sources": s.sources,
            "vocab_size": s.vocab,
            "val_fraction": 0.05,
            "block_tokens": 4 * s.seq,
            "seq_len": s.seq,
        }, None
    return prepared_data(s.vocab, s.seq)


def recipe(
    s: Setting,
    data: dict[str, Any],
    width: int,
    seed: int,
    lr: float,
    stages: list[dict[str, Any]],
    layers: int,
) -> dict[str, Any]:
    return {
        "name": "compute-optimal",
        "seed": seed,
        "data": data,
        "model": {"type": "llama", "config": model_config(s, width, layers)},
        "optim": {
            "lr": lr,
            "min_lr_ratio": 0.1,
            "warmup_steps": 10 if s.name == "quick" else 30,
            "betas": [0.9, 0.95],
            "weight_decay": 0.1,
            "grad_clip": 1.0,
            "micro_batch_size": s.batch,
            "grad_accum": 1,
        },
        "run": {
            "precision": "auto",  # fp32 below the measured crossover width, bf16 above
            "threads": 1 if s.name == "quick" else None,
            "eval_every": s.eval_every,
            "eval_sequences": s.eval_sequences,
            "checkpoint_every": 25 if s.name == "quick" else 100,
            "keep_checkpoints": 1,
            "progress": False,
        },
        "stages": stages,
    }


def whole_steps(s: Setting, tokens: float) -> int:
    step = s.batch * s.seq
    return max(1, int(tokens // step)) * step


class Bench:
    def __init__(self, s: Setting, out: Path, keep: Path | None = None):
        self.s, self.out = s, out
        self.runs = Runs(out, keep)
        self.data, self.corpus = data_section(s)

    def arm(self, name: str, raw: dict[str, Any], meta: dict[str, Any]) -> dict[str, Any]:
        """Train (or resume, or skip) one arm; its JSON: shape, params, tokens, FLOPs, lr, seed,
        eval curve."""

        def summary(run_dir: Path, records: list[dict[str, Any]]) -> dict[str, Any]:
            curve = [
                {k: r[k] for k in ("step", "stage", "tokens", "flops", "attn_flops", "val_loss")}
                for r in records
                if r.get("val_loss") is not None
            ]
            last = records[-1]
            return {
                **meta,
                "name": name,
                "run_dir": str(run_dir),
                "seed": raw["seed"],
                "lr": raw["optim"]["lr"],
                "precision": resolve_precision(
                    raw["run"]["precision"], SimpleNamespace(**raw["model"]["config"])
                ),
                "model": raw["model"]["config"],
                "stages": raw["stages"],
                "tokens": last["tokens"],
                "flops": last["flops"],
                "attn_flops": last["attn_flops"],
                "final_val_loss": curve[-1]["val_loss"],
                "tokens_per_s_median": float(np.median([r["tokens_per_s"] for r in records])),
                "eval_curve": curve,
            }

        return self.runs.run(name, raw, summary)

    # ---- arms ------------------------------------------------------------------------------
    def scratch(self, width: int, seed: int, lr: float) -> dict[str, Any]:
        s = self.s
        n = params(s, width, s.layers)
        tokens = whole_steps(s, s.compute / (6 * n["total"]))
        raw = recipe(
            s, self.data, width, seed, lr, [{"name": "scratch", "tokens": tokens}], s.layers
        )
        meta = {"arm": "scratch", "width": width, "layers": s.layers, "params": n}
        return self.arm(f"scratch-w{width}-lr{lr:g}-s{seed}", raw, meta)

    def grown(
        self, width: int, seed: int, lr: float, share: float, grow: bool = True
    ) -> dict[str, Any]:
        """G_stack x4 from the 1/4-depth model after d tokens (d = share of the tokens the small
        model alone would get from C); grow=False: the small model continued instead."""
        s = self.s
        small_layers = s.layers // G
        n_small = params(s, width, small_layers)["total"]
        n_big = params(s, width, s.layers)["total"]
        d = whole_steps(s, share * s.compute / (6 * n_small))
        rest_n = n_big if grow else n_small
        rest = whole_steps(s, (s.compute - 6 * n_small * d) / (6 * rest_n))
        second: dict[str, Any] = {
            "name": "stacked" if grow else "continued",
            "tokens": rest,
            "optimizer_state": "fresh",
        }
        if grow:
            second["grow"] = {"op": "stack", "factor": G}
        raw = recipe(
            s, self.data, width, seed, lr, [{"name": "base", "tokens": d}, second], small_layers
        )
        kind = "g_stack" if grow else "small_continued"
        meta = {
            "arm": kind,
            "width": width,
            "layers": s.layers,
            "params": params(s, width, s.layers if grow else small_layers),
            "small_params": params(s, width, small_layers),
            "growth_tokens": d,
            "growth_share": share,
        }
        return self.arm(f"{kind}-w{width}-d{share:g}-lr{lr:g}-s{seed}", raw, meta)

    def small_alone(self, width: int, seed: int, lr: float) -> dict[str, Any]:
        s = self.s
        layers = s.layers // G
        n = params(s, width, layers)
        tokens = whole_steps(s, s.compute / (6 * n["total"]))
        raw = recipe(s, self.data, width, seed, lr, [{"name": "small", "tokens": tokens}], layers)
        meta = {"arm": "small_alone", "width": width, "layers": layers, "params": n}
        return self.arm(f"small_alone-w{width}-lr{lr:g}-s{seed}", raw, meta)


def isoflop_fit(points: list[tuple[float, float]]) -> dict[str, Any]:
    """Parabola of final loss vs log10 N; N_opt at its vertex when inside the grid."""
    x = np.log10([p[0] for p in points])
    y = np.array([p[1] for p in points])
    c2, c1, c0 = np.polyfit(x, y, 2)
    k = int(np.argmin(y))
    inside = c2 > 0 and x.min() <= -c1 / (2 * c2) <= x.max()
    vertex = float(-c1 / (2 * c2)) if inside else float(x[k])
    return {
        "form": "loss = c2 log10(N)^2 + c1 log10(N) + c0",
        "coefficients": [float(c2), float(c1), float(c0)],
        "n_opt": float(10**vertex),
        "n_opt_inside_grid": bool(inside),
        "note": None if inside else "minimum at the grid edge: N_opt is the edge, widen the grid",
    }


def pair_stats(
    ref: dict[str, Any], run: dict[str, Any], keep: Path | None = None
) -> dict[str, Any]:
    """Equal-loss FLOPs speedup of ``run`` against ``ref`` (target-size evals, one spacing);
    None plus an upper bound when it never reaches ref's final loss."""
    runs = [load_run(metrics_file(ref, keep), "ref"), load_run(metrics_file(run, keep), "run")]
    summary = compare_runs(runs, levels=5, bootstrap=0)
    r, u = summary["runs"]["ref"], summary["runs"]["run"]
    bound = None
    if u["speedup_flops"] is None and r["flops_to_reference_loss"]:
        bound = r["flops_to_reference_loss"] / u["final_flops"] - 1.0
    return {
        "speedup_flops": u["speedup_flops"],
        "upper_bound_if_not_reached": bound,
        "reference_loss": summary["reference_final_loss"],
        "eval_spacing_flops": summary["eval_spacing_flops"],
    }


def run(s: Setting, out: Path, keep: Path | None = None) -> dict[str, Any]:
    b = Bench(s, out, keep)
    mid_lr = s.lr_grid[len(s.lr_grid) // 2]
    # a. IsoFLOP sweep
    iso = {w: b.scratch(w, 0, mid_lr) for w in s.widths}
    fit = isoflop_fit([(a["params"]["total"], a["final_val_loss"]) for a in iso.values()])
    n_opt = fit["n_opt"]

    def nearest(n: float) -> int:
        return min(s.widths, key=lambda w: abs(math.log(iso[w]["params"]["total"] / n)))

    targets = [nearest(n_opt)] + ([nearest(2 * n_opt)] if s.growth_sizes > 1 else [])
    targets = list(dict.fromkeys(targets))
    # b. timing at N_opt (seed 0, middle lr)
    w0 = targets[0]
    timing = {share: b.grown(w0, 0, mid_lr, share) for share in s.timings}
    timing_pairs = {share: pair_stats(iso[w0], a, b.runs.keep) for share, a in timing.items()}
    best_share = min(s.timings, key=lambda sh: timing[sh]["final_val_loss"])
    # c. growth at N_opt and 2 N_opt
    growth: dict[str, Any] = {}
    for w in targets:
        lr_arms: dict[str, dict[float, float]] = {"scratch": {}, "g_stack": {}}
        for lr in s.lr_grid:
            lr_arms["scratch"][lr] = b.scratch(w, 0, lr)["final_val_loss"]
            lr_arms["g_stack"][lr] = b.grown(w, 0, lr, best_share)["final_val_loss"]
        tuned = best_lr_per_arm(lr_arms)
        lr_s, lr_g = tuned["arms"]["scratch"]["lr"], tuned["arms"]["g_stack"]["lr"]
        seeds = []
        for seed in range(s.seeds):
            sc, gr = b.scratch(w, seed, lr_s), b.grown(w, seed, lr_g, best_share)
            p = pair_stats(sc, gr, b.runs.keep)
            seeds.append({
                "seed": seed, "scratch_final": sc["final_val_loss"],
                "g_stack_final": gr["final_val_loss"], **p,
            })  # fmt: skip
        sc0 = b.scratch(w, 0, lr_s)
        controls = {
            "small_alone": b.small_alone(w, 0, lr_g),
            "small_continued": b.grown(w, 0, lr_g, best_share, grow=False),
        }
        growth[str(w)] = {
            "width": w,
            "params": iso[w]["params"],
            "tokens_per_param_scratch": iso[w]["tokens"] / iso[w]["params"]["total"],
            "times_n_opt": iso[w]["params"]["total"] / n_opt,
            "growth_share": best_share,
            "lr_tuning_seed0": tuned,
            "seeds": seeds,
            "speedup_flops": across_seeds(
                [x["speedup_flops"] for x in seeds],
                [x["upper_bound_if_not_reached"] for x in seeds],
            ),
            "final_loss_gap_scratch_minus_g_stack": across_seeds(
                [x["scratch_final"] - x["g_stack_final"] for x in seeds]
            ),
            "controls_seed0": {
                k: {
                    "final_val_loss": v["final_val_loss"],
                    "vs_scratch": pair_stats(sc0, v, b.runs.keep),
                    "params": v["params"],
                }
                for k, v in controls.items()
            },
        }
    return {
        "setting": s.__dict__,
        "corpus": b.corpus,
        "flops_convention": "C = 6 N D, N all parameters (embedding and untied head included); "
        "attention FLOPs logged apart (attn_flops), not counted; params also given without "
        "embeddings",
        "isoflop": {
            "compute": s.compute,
            "arms": {
                str(w): {k: a[k] for k in ("params", "tokens", "flops", "final_val_loss", "lr")}
                | {"tokens_per_param": a["tokens"] / a["params"]["total"]}
                for w, a in iso.items()
            },
            "fit": fit,
            "n_opt_tokens_per_param": s.compute / (6 * n_opt) / n_opt,
        },
        "timing_at_n_opt": {
            "width": w0,
            "arms": {
                str(sh): {
                    "growth_tokens": a["growth_tokens"],
                    "final_val_loss": a["final_val_loss"],
                }
                | timing_pairs[sh]
                for sh, a in timing.items()
            },
            "best_share": best_share,
            "formula_note": "the paper's guideline is fitted at 410M-7B and 1e20-3.2e22 FLOPs; "
            "at this C it is far outside its range (growlm plan prints the value); growlm's own "
            "guideline needs timing sweeps at two or more sizes to fit alpha",
        },
        "growth": growth,
        "arms_trained_this_invocation": b.runs.trained_now,
        "arm_files": str(b.runs.arms_dir),
        "kept_arms": None if b.runs.keep is None else str(b.runs.keep),
    }


def plots(result: dict[str, Any], out: Path) -> list[str]:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return []
    iso = result["isoflop"]["arms"]
    fig, ax = plt.subplots(figsize=(6, 4))
    xs = [a["params"]["total"] for a in iso.values()]
    ax.plot(xs, [a["final_val_loss"] for a in iso.values()], "o-", label="scratch (IsoFLOP)")
    for g in result["growth"].values():
        losses = [x["g_stack_final"] for x in g["seeds"]]
        ax.plot([g["params"]["total"]] * len(losses), losses, "r^", label=f"G_stack w{g['width']}")
    ax.axvline(result["isoflop"]["fit"]["n_opt"], ls=":", c="k", label="N_opt (fit)")
    ax.set_xscale("log")
    ax.set(
        xlabel="parameters N",
        ylabel="final val loss",
        title=f"C = {result['isoflop']['compute']:.3g}",
    )
    ax.legend(fontsize=7)
    name = out.stem + "-isoflop.png"
    fig.tight_layout()
    fig.savefig(out.parent / name, dpi=90)
    plt.close(fig)
    return [name]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="tiny setting (< 2 minutes)")
    ap.add_argument("--out", type=Path, help="work folder (default bench/work/compute_optimal)")
    ap.add_argument("--results", type=Path, help="results JSON")
    ap.add_argument(
        "--keep",
        type=Path,
        help="folder in git for finished arms (default: bench/results/compute_optimal_arms; "
        "--quick: none); a fresh clone skips the arms found there",
    )
    ap.add_argument("--no-plots", action="store_true")
    args = ap.parse_args()
    s = QUICK if args.quick else FULL
    suffix = "_quick" if args.quick else ""
    out = args.out or ROOT / "bench" / "work" / f"compute_optimal{suffix}"
    results = args.results or ROOT / "bench" / "results" / f"compute_optimal{suffix}.json"
    start = time.time()
    kept = ROOT / "bench" / "results" / "compute_optimal_arms"
    keep = args.keep or (None if args.quick else kept)
    result = run(s, out, keep)
    result = {
        "command": "python bench/compute_optimal.py" + (" --quick" if args.quick else ""),
        "date": time.strftime("%Y-%m-%d"),
        "git_revision": _git_rev(),
        "machine": f"{platform.machine()} {platform.processor() or ''}".strip()
        + f", {__import__('os').cpu_count()} cores, torch {__import__('torch').__version__}",
        "wall_s_this_invocation": round(time.time() - start, 1),
        "note": "results are in FLOPs: other work on the machine slows the run but does not "
        "change them; no wall-clock ratio is quoted from it",
        **result,
    }
    results.parent.mkdir(parents=True, exist_ok=True)
    result["plots"] = [] if args.no_plots else plots(result, results)
    write_text_atomic(results, json.dumps(result, indent=1) + "\n")
    g = next(iter(result["growth"].values()))
    print(json.dumps({"n_opt": result["isoflop"]["fit"]["n_opt"],
                      "speedup_flops_at_n_opt": g["speedup_flops"]["mean"],
                      "t95": g["speedup_flops"]["t95"], "results": str(results)}))  # fmt: skip
    return 0


def _git_rev() -> str:
    try:
        return subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


if __name__ == "__main__":
    raise SystemExit(main())

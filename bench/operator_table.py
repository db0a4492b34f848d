"""The paper's operator table at CPU scale (issue #6): every growth operator vs scratch at equal
FLOPs on the embedded Shakespeare corpus.

Target: Llama 8 layers, hidden 256, ffn 688, 4 heads (head_dim 64), seq 128, batch 32, BPE 2048.
Depthwise operators grow a 2-layer model of the target's width (x4 depth); widthwise operators
grow an 8-layer model of half the width (hidden 128, ffn 344, 2 heads of 64) to the target's
width. The small model trains d tokens, the grown one the rest of the scratch run's FLOPs
(6 N D, the small model's FLOPs and G_learn's map training included). Masked G_random (MSG)
ramps the new structure in over ``FADE`` steps; G_learn (LiGO) trains its maps ``LIGO_STEPS``.

Then ``growlm compare`` (speedup at scratch's final loss), ``growlm eval`` perplexity on the
held-out split and the offline task set, written to bench/results/operator_table.json.

    taskset -c 1 python bench/operator_table.py --out bench/work/operators

Only FLOPs speedups are meaningful from this script when it shares the machine; it runs one
training job at a time with run.threads 1.
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import setting  # bench/setting.py: the shared CPU reference setting
import yaml

ROOT = Path(__file__).resolve().parent.parent
STEP = setting.STEP
BUDGET = 180 * STEP  # D of the scratch target: 737,280 tokens
D_GROW = 48 * STEP  # tokens of the small model before growth
FADE = 30
LIGO_STEPS = 20
SMALL_WIDTH = {"hidden_size": 128, "intermediate_size": 344, "num_attention_heads": 2}
WIDTH_PARAMS = {"hidden_size": 256, "intermediate_size": 688, "num_heads": 4}

# row name -> (paper operator, base model overrides, grow block)
ROWS: dict[str, tuple[str, dict[str, Any], dict[str, Any]]] = {
    "direct-depth": ("G_direct (G_stack)", {"num_hidden_layers": 2}, {"op": "stack", "factor": 4}),
    "zero-depth": ("G_zero", {"num_hidden_layers": 2}, {"op": "zero-depth", "num_layers": 8}),
    "random-depth": (
        "G_random (MSG masks)",
        {"num_hidden_layers": 2},
        {"op": "random-depth", "num_layers": 8, "fade_steps": FADE},
    ),
    "learn-depth": (
        "G_learn (LiGO)",
        {"num_hidden_layers": 2},
        {"op": "learn-depth", "factor": 4, "steps": LIGO_STEPS},
    ),
    "direct-width": ("G_direct (Net2Net)", SMALL_WIDTH, {"op": "direct-width", **WIDTH_PARAMS}),
    "zero-width": ("G_zero", SMALL_WIDTH, {"op": "zero-width", **WIDTH_PARAMS}),
    "random-width": (
        "G_random (MSG masks)",
        SMALL_WIDTH,
        {"op": "random-width", **WIDTH_PARAMS, "fade_steps": FADE},
    ),
    "learn-width": (
        "G_learn (LiGO)",
        SMALL_WIDTH,
        {"op": "learn-width", **WIDTH_PARAMS, "steps": LIGO_STEPS},
    ),
}


def recipes(seed: int, threads: int, rows: list[str]) -> dict[str, dict[str, Any]]:
    target = setting.model()
    n_big = setting.n_params(target)
    compute = 6.0 * n_big * BUDGET
    out = {
        "scratch": {
            **setting.common(seed, threads),
            "name": "scratch",
            "model": target,
            "stages": [{"name": "target", "tokens": BUDGET}],
        }
    }
    for row in rows:
        _, base, grow = ROWS[row]
        small = setting.model(**base)
        ligo = 6.0 * n_big * STEP * grow.get("steps", 0)  # LiGO trains on batches of 32 x 128
        rest = (compute - 6.0 * setting.n_params(small) * D_GROW - ligo) / (6.0 * n_big)
        out[row] = {
            **setting.common(seed, threads, lr=2.0e-3),
            "name": row,
            "model": small,
            "stages": [
                {"name": "base", "tokens": D_GROW},
                {
                    "name": "grown",
                    "tokens": int(rest) - int(rest) % STEP,
                    "grow": grow,
                    "optimizer_state": "fresh",
                    "optim": {"lr": 1.0e-3, "warmup_steps": 30},
                },
            ],
        }
    return out


def run(cmd: list[str], capture: bool = False) -> subprocess.CompletedProcess[str]:
    print("+ " + " ".join(cmd), flush=True)
    return subprocess.run(cmd, check=True, text=True, capture_output=capture)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "work" / "operators")
    ap.add_argument("--rows", default=",".join(ROWS), help="operators to run (comma-separated)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument(
        "--results", type=Path, default=ROOT / "bench" / "results" / "operator_table.json"
    )
    args = ap.parse_args()
    rows = [r for r in args.rows.split(",") if r]
    growlm = [sys.executable, "-m", "growlm.cli"]
    out: Path = args.out
    (out / "recipes").mkdir(parents=True, exist_ok=True)
    started = time.time()
    all_recipes = recipes(args.seed, args.threads, rows)
    for name, recipe in all_recipes.items():
        path = out / "recipes" / f"{name}.yaml"
        path.write_text(yaml.safe_dump(recipe, sort_keys=False))
        if not (out / name / "final").exists():
            run([*growlm, "train", str(path), "--out", str(out / name), "--resume"])
    names = list(all_recipes)
    run([*growlm, "compare", *[str(out / n) for n in names], "--out", str(out / "compare")])
    summary = json.loads((out / "compare" / "summary.json").read_text())
    table: dict[str, Any] = {}
    for name in names:
        entry = summary["runs"][name]
        folder = out / name / "final"
        shards = str(_val_shards(out / name))
        tasks = ["--tasks", "growlm_nextline", "growlm_passages"]
        cmd = [*growlm, "eval", str(folder), "--data", shards, *tasks, "--json"]
        evaluated = json.loads(run(cmd, capture=True).stdout)
        table[name] = {
            "paper_operator": ROWS[name][0] if name in ROWS else "scratch",
            "final_val_loss": entry["final_val_loss"],
            "best_val_loss": entry["best_val_loss"],
            "flops": entry["final_flops"],
            "speedup_flops": entry["speedup_flops"],
            "reached_scratch_loss": entry["reached_reference_loss"],
            "perplexity": evaluated["perplexity"],
            "tasks": evaluated["tasks"],
        }
    result = {
        "command": "taskset -c 1 python bench/operator_table.py",
        "date": time.strftime("%Y-%m-%d"),
        "machine": f"{platform.machine()}, 1 thread per run (shared machine: FLOPs only)",
        "setting": {
            "target": "Llama 8L h256 ffn688 4x64 heads, seq 128, batch 32, BPE 2048, Shakespeare",
            "depth_base": "2L h256 (x4 depth)",
            "width_base": "8L h128 ffn344 2x64 heads (x2 width)",
            "budget_tokens_scratch": BUDGET,
            "growth_tokens": D_GROW,
            "fade_steps": FADE,
            "ligo_steps": LIGO_STEPS,
            "lr": "scratch 1e-3; small 2e-3, grown 1e-3 (fresh AdamW, 30 warm-up steps)",
        },
        "rows": table,
        "elapsed_s": round(time.time() - started, 1),
    }
    args.results.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.results.with_suffix(".tmp")
    tmp.write_text(json.dumps(result, indent=2) + "\n")
    tmp.replace(args.results)
    for name, r in table.items():
        sp = r["speedup_flops"]
        shown = "n/a" if sp is None else f"{sp:+.1%}"
        print(f"{name:<14} val {r['final_val_loss']:.4f} speedup {shown}")
    return 0


def _val_shards(run_dir: Path) -> Path:
    """The prepared data folder the run trained on (its held-out split is what eval scores)."""
    recipe = yaml.safe_load((run_dir / "recipe.yaml").read_text())
    prepared = recipe["data"].get("prepared")
    if prepared:
        return Path(prepared)
    from growlm.train.data import prepared_folder
    from growlm.train.recipe import recipe_from_dict

    return prepared_folder(recipe_from_dict(recipe, []).data)


if __name__ == "__main__":
    raise SystemExit(main())

"""The demo's figures as a committed results file: `growlm demo --control` over several seeds.

Runs the user-facing command once per seed (``growlm demo --out WORK --seed S --control``),
keeps each seed's summary, and writes bench/results/demo.json: every seed's scratch, G_stack
and small-model-alone final losses and FLOPs speedups, with mean, sd and a 95% t-interval over
seeds (growlm.analysis.seeds.across_seeds: a seed whose arm never reaches scratch's final loss
enters at its bound, so the statistics become upper bounds and say so).

Resumable: the demo reuses finished runs and resumes an interrupted one from its checkpoint; a
seed whose summary is already kept is not rerun. Summaries are kept in bench/results/demo_seeds/
(in git: a fresh clone skips the seeds finished on another machine), or beside a custom --out.

    python bench/demo_seeds.py                       # seeds 0 1 2, bench/work/demo
    python bench/demo_seeds.py --seeds 0 --scale 0.01 --out /tmp/d --results /tmp/d.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from growlm.analysis.seeds import across_seeds  # noqa: E402
from growlm.io.atomic import write_text_atomic  # noqa: E402


def run_seed(out: Path, kept: Path, seed: int, scale: float) -> dict[str, Any]:
    """One seed's demo summary (kept beside the demo folder, which refuses foreign files)."""
    done = kept / f"summary-seed{seed}.json"
    if done.exists():
        result: dict[str, Any] = json.loads(done.read_text())
        return result
    cmd = [sys.executable, "-m", "growlm", "demo", "--out", str(out), "--seed", str(seed)]
    cmd += ["--control"] + ([] if scale == 1.0 else ["--scale", f"{scale:g}"])
    started = time.time()
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT)}
    subprocess.run(cmd, check=True, env=env, cwd=ROOT)
    result = json.loads((out / "summary.json").read_text())
    result["wall_s_this_invocation"] = round(time.time() - started, 1)
    write_text_atomic(done, json.dumps(result, indent=1) + "\n")
    return result


def bound(r: dict[str, Any], key: str) -> float | None:
    """Upper bound of a speedup for an arm that never reached scratch's final loss: it needs
    more than its final FLOPs, so C_scratch / C_arm_final - 1 bounds it from above."""
    flops = r["g_stack_flops"] if key == "g_stack" else (r["small_alone"] or {}).get("flops")
    return r["scratch_flops"] / flops - 1.0 if flops else None


def summarise(per_seed: list[dict[str, Any]]) -> dict[str, Any]:
    def col(key: str) -> list[float]:
        return [float(r[key]) for r in per_seed]

    alone = [r["small_alone"] or {} for r in per_seed]
    return {
        "scratch_final_val_loss": across_seeds(list(col("scratch_final_val_loss"))),
        "g_stack_final_val_loss": across_seeds(list(col("g_stack_final_val_loss"))),
        "small_alone_final_val_loss": across_seeds([a.get("final_val_loss") for a in alone]),
        "g_stack_speedup_flops": across_seeds(
            [r["speedup_flops"] for r in per_seed], [bound(r, "g_stack") for r in per_seed]
        ),
        "small_alone_speedup_flops": across_seeds(
            [a.get("speedup_flops") for a in alone], [bound(r, "small_alone") for r in per_seed]
        ),
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--scale", type=float, default=1.0, help="growlm demo --scale")
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "work" / "demo")
    ap.add_argument("--results", type=Path, default=ROOT / "bench" / "results" / "demo.json")
    ap.add_argument("--keep", type=Path, help="folder for each seed's summary (see above)")
    args = ap.parse_args()
    default_out = args.out == ROOT / "bench" / "work" / "demo"
    kept = args.keep or (
        ROOT / "bench" / "results" / "demo_seeds"
        if default_out
        else args.out.parent / (args.out.name + "-summaries")
    )
    kept.mkdir(parents=True, exist_ok=True)
    per_seed = [run_seed(args.out, kept, s, args.scale) for s in args.seeds]
    rev = subprocess.run(
        ["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True
    ).stdout.strip()
    result = {
        "command": "python bench/demo_seeds.py"
        + (f" --seeds {' '.join(map(str, args.seeds))}" if args.seeds != [0, 1, 2] else "")
        + (f" --scale {args.scale:g}" if args.scale != 1.0 else ""),
        "runs": "growlm demo --out bench/work/demo --seed S --control, one seed after another",
        "date": time.strftime("%Y-%m-%d"),
        "git_revision": rev or "unknown",
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, "
        f"torch {__import__('torch').__version__}",
        "note": "speedups are FLOPs ratios at scratch's final val loss (running minimum of the "
        "target-size evaluations); wall times depend on what else ran on the machine",
        "seeds": per_seed,
        "across_seeds": summarise(per_seed),
    }
    write_text_atomic(args.results, json.dumps(result, indent=1) + "\n")
    s = result["across_seeds"]
    print(json.dumps({k: (v["mean"], v["t95"]) for k, v in s.items()}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

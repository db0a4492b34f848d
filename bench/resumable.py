"""Resumable benchmark runs, shared by the long CPU benchmarks (bench/compute_optimal.py,
bench/upcycle.py; bench/queue.sh runs them one after another).

Each run has a name. Its training folder is WORK/runs/<name>: an interrupted run resumes from its
last checkpoint through growlm's own resume (the recipe sets ``run.checkpoint_every``). When it
finishes, its result JSON is written atomically to WORK/arms/<name>.json, and a rerun returns that
file without training.

WORK is local to the machine (bench/work is not in git). With ``keep`` (a folder in git, e.g.
bench/results/compute_optimal_arms) each finished run's result JSON and a compact copy of its
metrics (``compact_metrics``: every evaluation and each stage's first and last record, which is
all ``growlm compare`` reads) are also written there, and a rerun on a fresh clone skips the runs
found there: a benchmark longer than one machine's session is carried by committing KEEP.

    python bench/resumable.py keep WORK KEEP   # copy finished runs of WORK into KEEP
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from growlm.io.atomic import write_text_atomic

Summary = Callable[[Path, list[dict[str, Any]]], dict[str, Any]]
"""(the run's folder, its metrics rows) -> the result to keep."""


def compact_metrics(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The records ``growlm.analysis.runs.load_run`` needs: every evaluation, and the first and
    last record of each stage (its boundaries and FLOPs per token)."""
    keep = set()
    for i, r in enumerate(rows):
        first = i == 0 or r.get("stage") != rows[i - 1].get("stage")
        last = i == len(rows) - 1 or r.get("stage") != rows[i + 1].get("stage")
        if first or last or r.get("val_loss") is not None:
            keep.add(i)
    return [rows[i] for i in sorted(keep)]


def keep_run(keep: Path, name: str, result: dict[str, Any], folder: Path) -> None:
    """KEEP/<name>.metrics.jsonl (compact), then KEEP/<name>.json (its presence marks the run
    kept, so it is written last)."""
    keep.mkdir(parents=True, exist_ok=True)
    rows = [json.loads(x) for x in (folder / "metrics.jsonl").read_text().splitlines() if x]
    lines = "".join(json.dumps(r) + "\n" for r in compact_metrics(rows))
    write_text_atomic(keep / f"{name}.metrics.jsonl", lines)
    write_text_atomic(keep / f"{name}.json", json.dumps(result, indent=1) + "\n")


def metrics_file(result: dict[str, Any], keep: Path | None) -> Path:
    """The run's metrics: its training folder's when this machine has it, else the kept copy."""
    local = Path(result["run_dir"]) / "metrics.jsonl"
    if local.is_file() or keep is None:
        return local
    return keep / f"{result['name']}.metrics.jsonl"


class Runs:
    def __init__(self, work: Path, keep: Path | None = None):
        self.work, self.keep = work, keep
        self.arms_dir = work / "arms"
        self.arms_dir.mkdir(parents=True, exist_ok=True)
        self.trained_now = 0

    def run(
        self, name: str, raw: dict[str, Any], summary: Summary, base_dir: Path | None = None
    ) -> dict[str, Any]:
        """Train (or resume, or skip) the recipe ``raw`` as run ``name``; its result is
        ``summary(folder, metrics rows)`` (with ``final_val_loss`` and ``flops``) plus
        ``wall_s_this_session``."""
        done = self.arms_dir / f"{name}.json"
        if self.keep is not None and (self.keep / f"{name}.json").exists():
            kept: dict[str, Any] = json.loads((self.keep / f"{name}.json").read_text())
            return kept
        if done.exists():
            found: dict[str, Any] = json.loads(done.read_text())
            if self.keep is not None:
                keep_run(self.keep, name, found, self.work / "runs" / name)
            return found
        from growlm.train.loop import train
        from growlm.train.recipe import recipe_from_dict

        folder = self.work / "runs" / name
        started = time.time()
        train(recipe_from_dict(json.loads(json.dumps(raw)), [], base_dir), folder, resume=True)
        rows = [json.loads(x) for x in (folder / "metrics.jsonl").read_text().splitlines()]
        result = {**summary(folder, rows), "wall_s_this_session": round(time.time() - started, 2)}
        write_text_atomic(done, json.dumps(result, indent=1) + "\n")
        if self.keep is not None:
            keep_run(self.keep, name, result, folder)
        self.trained_now += 1
        print(f"{name}: val {result['final_val_loss']:.4f}, {result['flops']:.3g} FLOPs, "
              f"{result['wall_s_this_session']:.1f}s", flush=True)  # fmt: skip
        return result


def main(argv: list[str]) -> int:
    if len(argv) != 3 or argv[0] != "keep":
        print("usage: python bench/resumable.py keep WORK KEEP", file=sys.stderr)
        return 2
    work, keep = Path(argv[1]), Path(argv[2])
    for done in sorted((work / "arms").glob("*.json")):
        if not (keep / done.name).exists():
            result = json.loads(done.read_text())
            keep_run(keep, done.stem, result, work / "runs" / done.stem)
            print(f"kept {done.stem}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))

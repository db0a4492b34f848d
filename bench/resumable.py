"""Resumable benchmark runs, shared by the long CPU benchmarks (bench/compute_optimal.py,
bench/upcycle.py; bench/queue.sh runs them one after another).

Each run has a name. Its training folder is WORK/runs/<name>: an interrupted run resumes from its
last checkpoint through growlm's own resume (the recipe sets ``run.checkpoint_every``). When it
finishes, its result JSON is written atomically to WORK/arms/<name>.json, and a rerun returns that
file without training.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from growlm.io.atomic import write_text_atomic

Summary = Callable[[Path, list[dict[str, Any]]], dict[str, Any]]
"""(the run's folder, its metrics rows) -> the result to keep."""


class Runs:
    def __init__(self, work: Path):
        self.work = work
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
        if done.exists():
            kept: dict[str, Any] = json.loads(done.read_text())
            return kept
        from growlm.train.loop import train
        from growlm.train.recipe import recipe_from_dict

        folder = self.work / "runs" / name
        started = time.time()
        train(recipe_from_dict(json.loads(json.dumps(raw)), [], base_dir), folder, resume=True)
        rows = [json.loads(x) for x in (folder / "metrics.jsonl").read_text().splitlines()]
        result = {**summary(folder, rows), "wall_s_this_session": round(time.time() - started, 2)}
        write_text_atomic(done, json.dumps(result, indent=1) + "\n")
        self.trained_now += 1
        print(f"{name}: val {result['final_val_loss']:.4f}, {result['flops']:.3g} FLOPs, "
              f"{result['wall_s_this_session']:.1f}s", flush=True)  # fmt: skip
        return result

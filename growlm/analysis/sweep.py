"""``growlm sweep``: the paper's growth-timing experiment at any scale. For every target size and
token budget D: a scratch reference, then G_stack runs for each growth factor g and timing d, each
given the scratch run's FLOPs C = 6 N D (iso-FLOP: the grown stage gets
(C - 6 N_small d) / (6 N) tokens, so every run finishes its schedule at the same compute). Runs go
through ``growlm train`` one after another (a subprocess each, logs in OUT/logs/); a run whose
OUT/<run>/final exists is skipped, an unfinished one resumes. Then compare (per size and budget)
and the guideline fit (OUT/guideline.json, readable by ``growlm plan --guideline``)."""

from __future__ import annotations

import copy
import json
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from growlm.analysis.errors import AnalysisError, FitFailed
from growlm.analysis.params import ModelSpec, count_params
from growlm.io.atomic import write_text_atomic
from growlm.ops.params import FACTOR
from growlm.safety import is_safe_name


@dataclass
class SweepRun:
    """One training run of the grid and the recipe that defines it."""

    name: str
    group: str  # "<size>-D<tokens>": the runs compared with one scratch reference
    size: str
    params: float
    compute: float
    budget_tokens: int
    growth_factor: int | None = None  # None: the scratch reference
    growth_tokens: int | None = None
    recipe: dict[str, Any] = field(default_factory=dict)


def parse_target_size(text: str) -> tuple[str, dict[str, Any]]:
    """``name:key=value,key=value`` (model.config keys of the target) -> (name, overrides)."""
    name, sep, rest = text.partition(":")
    if not sep:
        name, rest = text.replace("=", "").replace(",", "_"), text
    overrides: dict[str, Any] = {}
    for item in filter(None, rest.split(",")):
        key, eq, value = item.partition("=")
        if not eq or not key:
            raise AnalysisError(f"--sizes {text!r}: expected name:key=value,key=value")
        overrides[key.strip()] = yaml.safe_load(value)
    if not name:
        raise AnalysisError(f"--sizes {text!r}: empty size name")
    if not is_safe_name(name):
        raise AnalysisError(
            f"--sizes {text!r}: size name {name!r} becomes a folder name; use letters, digits, "
            "'_', '-' and '.' (e.g. s:hidden_size=64)"
        )
    return name, overrides


def _is_stack(op: str) -> bool:
    """G_stack under any of its registry names (stack, direct-depth, G_stack, ...)."""
    from growlm.ops.registry import get_operator_entry

    entry = get_operator_entry(op)
    return entry is not None and entry.name == "direct-depth"


def _base(recipe_path: Path) -> tuple[dict[str, Any], int, dict[str, Any], dict[str, Any]]:
    """The validated base recipe as a mapping (absolute paths), its target depth, and the optim
    overrides of its first and its (first) growth stage."""
    from growlm.train.recipe import load_recipe, recipe_to_dict

    recipe = recipe_to_dict(load_recipe(recipe_path))
    stages = recipe["stages"]
    layers = int(recipe["model"]["config"].get("num_hidden_layers", 0))
    if layers < 1:
        raise AnalysisError(f"{recipe_path}: model.config.num_hidden_layers is required")
    grow_optim: dict[str, Any] = {}
    for stage in stages:
        grow = stage.get("grow")
        if grow:
            if not _is_stack(grow["op"]):
                raise AnalysisError(
                    f"{recipe_path}: sweep grows with G_stack; stage {stage['name']!r} uses "
                    f"{grow['op']!r}"
                )
            layers *= int(grow["params"].get("factor", 1))
            grow_optim = grow_optim or dict(stage["optim"])
    return recipe, layers, dict(stages[0]["optim"]), grow_optim


def plan_grid(
    base_recipe: Path,
    timings: list[float],
    factors: list[int],
    sizes: list[str] | None = None,
    budgets: list[float] | None = None,
    scratch_lr: float | None = None,
) -> list[SweepRun]:
    """Every run of the sweep, scratch references first in each group."""
    recipe, target_layers, base_optim, grow_optim = _base(base_recipe)
    o = recipe["optim"]
    step_tokens = int(o["micro_batch_size"]) * int(o["grad_accum"]) * int(recipe["data"]["seq_len"])
    total = sum(int(s["tokens"]) for s in recipe["stages"])
    vocab = int(recipe["data"]["vocab_size"])
    runs: list[SweepRun] = []
    for size_text in sizes or ["base:"]:
        size, overrides = parse_target_size(size_text)
        config = {**recipe["model"]["config"], **overrides}
        layers = int(overrides.get("num_hidden_layers", target_layers))
        # the trainer unties the head unless the recipe says otherwise: count N the same way
        target = ModelSpec(
            recipe["model"]["type"],
            {"tie_word_embeddings": False, **config, "vocab_size": vocab},
        )
        target = target.with_layers(layers)
        n_target = count_params(target)
        for budget in budgets or [total]:
            tokens = _steps(budget, step_tokens) * step_tokens
            compute = 6.0 * n_target * tokens
            group = f"{size}-D{tokens}"
            scratch = _recipe(recipe, config, layers, f"{group}-scratch")
            scratch["stages"] = [{"name": "scratch", "tokens": tokens}]
            if scratch_lr is not None:
                scratch["optim"]["lr"] = scratch_lr
            runs.append(
                SweepRun(f"{group}-scratch", group, size, n_target, compute, tokens, recipe=scratch)
            )
            for g in factors:
                if not FACTOR.constraint.ok(g) or layers % g:  # type: ignore[union-attr]
                    raise AnalysisError(f"growth factor {g} must be >= 2 and divide {layers}")
                n_small = count_params(target.with_layers(layers // g))
                for d in timings:
                    d_tokens = _steps(d, step_tokens) * step_tokens
                    rest = (compute - 6.0 * n_small * d_tokens) / (6.0 * n_target)
                    rest_tokens = _steps(rest, step_tokens) * step_tokens
                    if d_tokens >= tokens or rest_tokens < step_tokens:
                        raise AnalysisError(
                            f"growth timing d={d:g} leaves no tokens for the grown stage "
                            f"within D={tokens} (use smaller --d or larger --tokens)"
                        )
                    name = f"{group}-g{g}-d{d_tokens}"
                    grown = _recipe(recipe, config, layers // g, name)
                    grown["stages"] = [
                        {"name": "base", "tokens": d_tokens, "optim": base_optim},
                        {
                            "name": "grown",
                            "tokens": rest_tokens,
                            "grow": {"op": "stack", "params": {"factor": g}},
                            "optimizer_state": "fresh",
                            "optim": grow_optim,
                        },
                    ]
                    runs.append(
                        SweepRun(name, group, size, n_target, compute, tokens, g, d_tokens, grown)
                    )
    return runs


def _steps(tokens: float, step_tokens: int) -> int:
    return max(1, int(-(-round(tokens) // step_tokens)))


def _recipe(base: dict[str, Any], config: dict[str, Any], layers: int, name: str) -> dict[str, Any]:
    out = copy.deepcopy(base)
    out["name"] = name
    out["model"]["config"] = {**config, "num_hidden_layers": layers}
    out["run"]["progress"] = False
    return out


def run_grid(runs: list[SweepRun], out_dir: Path, dry_run: bool = False) -> list[str]:
    """Train every run not finished yet, sequentially; returns the names trained now."""
    (out_dir / "recipes").mkdir(parents=True, exist_ok=True)
    (out_dir / "logs").mkdir(exist_ok=True)
    trained = []
    for run in runs:
        recipe_file = out_dir / "recipes" / f"{run.name}.yaml"
        recipe_file.write_text(yaml.safe_dump(run.recipe, sort_keys=False))
        run_dir = out_dir / run.name
        if (run_dir / "final").exists() or dry_run:
            continue
        cmd = [
            sys.executable,
            "-m",
            "growlm.cli",
            "train",
            str(recipe_file),
            "--out",
            str(run_dir),
            "--resume",
        ]
        log = out_dir / "logs" / f"{run.name}.log"
        print(f"sweep: training {run.name}", file=sys.stderr, flush=True)
        with log.open("w") as fh:
            code = subprocess.run(cmd, stdout=fh, stderr=subprocess.STDOUT, check=False).returncode
        if code != 0:
            tail = log.read_text().strip().splitlines()[-1:] or ["(no output)"]
            raise AnalysisError(f"sweep run {run.name} failed (exit {code}): {tail[0]} [{log}]")
        trained.append(run.name)
    return trained


def analyse(runs: list[SweepRun], out_dir: Path, plots: bool = True) -> dict[str, Any]:
    """Compare each group against its scratch run, fit the guideline, write OUT/sweep.json,
    OUT/guideline.json (when the fit is possible) and OUT/report.md."""
    from growlm.analysis.compare import compare
    from growlm.analysis.guideline import save_guideline
    from growlm.analysis.guideline_fit import SweepPoint, fit_guideline
    from growlm.analysis.report_sweep import sweep_report

    results: dict[str, Any] = {"groups": {}, "runs": {}}
    points = []
    groups: dict[str, list[SweepRun]] = {}
    for run in runs:
        groups.setdefault(run.group, []).append(run)
    for group, members in groups.items():
        summary = compare(
            [out_dir / r.name for r in members],
            out_dir / "compare" / group,
            plots=plots,
            bootstrap=100,
        )
        results["groups"][group] = str(Path("compare") / group / "report.md")
        for r in members:
            entry = summary["runs"][r.name]
            results["runs"][r.name] = {
                "group": group,
                "params": r.params,
                "compute": r.compute,
                "growth_factor": r.growth_factor,
                "growth_tokens": r.growth_tokens,
                "best_val_loss": entry["best_val_loss"],
                "speedup_flops": entry["speedup_flops"],
                "speedup_tokens": entry["speedup_tokens"],
                "speedup_time": entry["speedup_time"],
            }
            if r.growth_factor is not None and r.growth_tokens is not None:
                points.append(
                    SweepPoint(
                        r.params,
                        r.compute,
                        float(r.growth_tokens),
                        r.growth_factor,
                        entry["best_val_loss"],
                    )
                )
    try:
        guideline = fit_guideline(points)
        save_guideline(guideline, out_dir / "guideline.json")
        results["guideline"] = guideline.to_json()
    except FitFailed as exc:
        results["guideline"] = {"error": str(exc)}
    write_text_atomic(out_dir / "sweep.json", json.dumps(results, indent=2) + "\n")
    write_text_atomic(out_dir / "report.md", sweep_report(results))
    return results

"""The analysis subcommands (plan, compare, fit, sweep) as plain functions;
growlm/cli.py registers them through ``add_parsers`` and turns typed errors into one line."""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path
from typing import Any

from growlm.analysis.errors import AnalysisError
from growlm.argtypes import nonnegative_int
from growlm.io.atomic import write_text_atomic

_SUFFIX = {"K": 1e3, "M": 1e6, "B": 1e9, "G": 1e9, "T": 1e12}


def number(text: str) -> float:
    """``7e9``, ``7B``, ``1.1b``, ``2T``, ``410M``, ``1_000`` -> float (argparse type)."""
    m = re.fullmatch(r"\s*([-+]?[0-9_]*\.?[0-9_]+(?:[eE][-+]?\d+)?)\s*([kKmMbBgGtT]?)\s*", text)
    if not m:
        raise argparse.ArgumentTypeError(f"expected a number like 7e9 or 7B, got {text!r}")
    return float(m.group(1).replace("_", "")) * _SUFFIX.get(m.group(2).upper(), 1.0)


def number_list(text: str) -> list[float]:
    return [number(t) for t in text.split(",") if t.strip()]


def int_list(text: str) -> list[int]:
    return [int(number(t)) for t in text.split(",") if t.strip()]


def add_parsers(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Register plan, compare, fit and sweep."""
    _add_plan(subparsers)
    _add_compare(subparsers)
    _add_fit(subparsers)
    _add_sweep(subparsers)


def _add_plan(sub: Any) -> None:
    p = sub.add_parser(
        "plan",
        help="advisor: compute-optimal size for the budget, and the growth recipe (d, g)",
        description="The compute-optimal size at C = 6 N D (Chinchilla's fit by default; warns "
        "when the target is far from it), then the growth guideline log10(d) = 0.88 log10(N) + "
        "163.27/log10(C) - 5.74 (Du et al. 2024), g = 4, whether growth is expected to pay off "
        "and the measured saving; warns outside the ranges the fits were made on.",
    )
    p.add_argument("--params", type=number, help="target parameter count N (7e9, 7B)")
    p.add_argument(
        "--model",
        type=Path,
        help="target config.json, HF folder, hub id org/name[@rev], .gguf file or growlm recipe "
        "(a model's tokenizer goes into --write-recipe)",
    )
    p.add_argument("--tokens", type=number, help="token budget D")
    p.add_argument("--compute", type=number, help="FLOPs budget C (instead of --tokens)")
    p.add_argument("--growth-factor", type=int, help="override g")
    p.add_argument("--growth-tokens", type=number, help="override d (e.g. from your own sweep)")
    p.add_argument("--guideline", type=Path, help="guideline JSON written by `growlm fit`")
    p.add_argument(
        "--scaling",
        default="chinchilla",
        help="compute-optimal size rule: chinchilla (Hoffmann et al. 2022 approach-3 fit, "
        "default), 20tpp (D = 20 N), or a JSON fit (E,A,B,alpha,beta or tokens_per_param)",
    )
    p.add_argument("--write-recipe", type=Path, help="write a growlm train recipe here")
    p.add_argument("--force", action="store_true", help="replace an existing --write-recipe file")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=cmd_plan)


def cmd_plan(args: argparse.Namespace) -> int:
    from growlm.analysis.guideline import PAPER, load_guideline
    from growlm.analysis.params import load_model_spec
    from growlm.analysis.plan import format_plan, make_plan
    from growlm.analysis.plan_recipe import write_plan_recipe
    from growlm.analysis.scaling import load_scaling

    guideline = load_guideline(args.guideline) if args.guideline else PAPER
    spec = load_model_spec(args.model) if args.model else None
    try:
        plan = make_plan(
            args.params,
            args.tokens,
            args.compute,
            spec,
            guideline,
            args.growth_factor,
            args.growth_tokens,
            load_scaling(args.scaling),
        )
    except (OverflowError, ZeroDivisionError) as exc:  # e.g. --params 1e200 --tokens 1e200
        raise AnalysisError(
            f"the sizes, budget or fit overflow floating point ({exc}): give realistic values"
        ) from None
    data = plan.to_json()
    if args.write_recipe:
        if spec is None:
            raise AnalysisError("--write-recipe needs --model (the target's architecture)")
        target = Path(args.write_recipe)
        if target.exists() and not args.force:
            raise AnalysisError(
                f"--write-recipe {str(target)!r} already exists: choose another file or pass "
                "--force to replace it"
            )
        if args.model is not None and target.resolve() == Path(args.model).resolve():
            raise AnalysisError(f"--write-recipe {str(target)!r} is the --model file itself")
        data["recipe"] = str(write_plan_recipe(plan, spec, target))
    if args.json:
        print(json.dumps(data))
    else:
        print(format_plan(plan))
        if args.write_recipe:
            print(f"recipe: {data['recipe']} (growlm train {data['recipe']} --out RUN)")
    return 0


def _add_compare(sub: Any) -> None:
    p = sub.add_parser(
        "compare",
        help="equal-loss speedup of runs against the first (reference) run",
        description="speedup = C_ref(L)/C_run(L) - 1 at equal validation loss (running "
        "minimum, log-cost interpolation), in FLOPs, tokens and wall-clock; plots and report.",
    )
    p.add_argument("runs", nargs="+", type=Path, help="run folders; the first is the reference")
    p.add_argument("--out", type=Path, required=True, help="output folder")
    p.add_argument("--levels", type=int, default=25, help="shared loss levels in the table")
    p.add_argument(
        "--include-small-model-evals",
        action="store_true",
        help="old behaviour: let the small model's own evaluations (before growth) enter a grown "
        "run's running minimum (default: only the target-size model's evaluations count)",
    )
    p.add_argument(
        "--all-evals",
        action="store_true",
        help="read every evaluation as logged (default: thin every run to one common FLOPs "
        "spacing, so no run gets more draws at the minimum)",
    )
    p.add_argument("--attn-flops", action="store_true", help="add attention FLOPs to 6 N D")
    p.add_argument("--no-plots", action="store_true", help="skip the PNG plots")
    p.add_argument("--json", action="store_true", help="print summary.json")
    p.set_defaults(func=cmd_compare)


def _check_compare_out(out: Path) -> None:
    """compare writes report.md, summary.json and plots into --out: refuse a folder that holds
    anything but an earlier comparison (its files would be overwritten)."""
    if not out.exists():
        return
    if not out.is_dir():
        raise AnalysisError(f"--out {str(out)!r} is a file, not a folder: choose another --out")
    if not any(out.iterdir()):
        return
    try:
        ours = "reference" in json.loads((out / "summary.json").read_text())
    except (OSError, ValueError, TypeError):
        ours = False
    if not ours:
        raise AnalysisError(
            f"--out {str(out)!r} holds files that are not an earlier `growlm compare` output: "
            "choose a new or empty folder"
        )


def cmd_compare(args: argparse.Namespace) -> int:
    from growlm.analysis.compare import compare

    _check_compare_out(args.out)
    summary = compare(
        args.runs,
        args.out,
        levels=args.levels,
        include_small_model_evals=args.include_small_model_evals,
        attn_flops=args.attn_flops,
        plots=not args.no_plots,
        equal_spacing=not args.all_evals,
    )
    if args.json:
        print(json.dumps(summary))
        return 0
    print(f"reference {summary['reference']}: final loss {summary['reference_final_loss']:.4f}")
    for name, run in summary["runs"].items():
        if name == summary["reference"]:
            continue
        cells = []
        for axis in ("flops", "tokens", "time"):
            v = run[f"speedup_{axis}"]
            cells.append(f"{axis} {'never reached' if v is None else f'{100 * v:+.1f}%'}")
        print(f"{name}: final loss {run['final_val_loss']:.4f}; speedup " + ", ".join(cells))
    print(f"wrote {args.out / 'summary.json'} and {args.out / 'report.md'}")
    return 0


def _add_fit(sub: Any) -> None:
    p = sub.add_parser(
        "fit",
        help="loss-curve fits L(C) = a C^-b + c, or a growth guideline from a sweep",
        description="With run folders: fit each run's last stage, print R^2 and bootstrap "
        "intervals, extrapolate (--at-flops, --at-loss). With --sweep DIR: best d per (N, C) "
        "and a least-squares guideline written as JSON for `growlm plan --guideline`.",
    )
    p.add_argument("runs", nargs="*", type=Path, help="run folders (first: reference)")
    p.add_argument("--sweep", type=Path, help="sweep folder (its sweep.json) to fit d on")
    p.add_argument("--out", type=Path, help="write the fits / guideline JSON here")
    p.add_argument("--force", action="store_true", help="replace an existing --out file")
    p.add_argument("--at-flops", type=number_list, default=[], help="predict loss at C,C,...")
    p.add_argument("--at-loss", type=float, help="loss for FLOPs and extrapolated speedup")
    p.add_argument("--bootstrap", type=nonnegative_int, default=200, help="bootstrap resamples")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=cmd_fit)


def cmd_fit(args: argparse.Namespace) -> int:
    if args.out is not None and args.out.exists() and not args.force:
        raise AnalysisError(
            f"--out {str(args.out)!r} already exists: choose another file or pass --force to "
            "replace it"
        )
    if args.sweep:
        return _fit_sweep(args)
    if not args.runs:
        raise AnalysisError("give run folders to fit, or --sweep DIR")
    from growlm.analysis.fit import extrapolated_speedup, fit_power_law
    from growlm.analysis.runs import load_run, unique_names

    runs = [load_run(p, n) for p, n in zip(args.runs, unique_names(args.runs), strict=True)]
    level = args.at_loss if args.at_loss is not None else float(runs[0].best[-1])
    out: dict[str, Any] = {"loss": level, "runs": {}}
    fits = []
    for run in runs:
        mask = run.target_mask()
        fit = fit_power_law(run.flops[mask], run.val_loss[mask], bootstrap=args.bootstrap)
        fits.append(fit)
        entry = fit.to_json()
        entry["predicted_loss"] = {f"{c:g}": float(fit.loss(c)) for c in args.at_flops}
        entry["flops_at_loss"] = fit.cost(level)
        if len(fits) > 1:
            entry["speedup_flops_fit"] = extrapolated_speedup(fits[0], fit, level)
        out["runs"][run.name] = entry
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        write_text_atomic(args.out, json.dumps(out, indent=2) + "\n")
    if args.json:
        print(json.dumps(out))
        return 0
    for name, e in out["runs"].items():
        ci = e["intervals"]
        b_ci = f" [{ci['b'][0]:.3g}, {ci['b'][1]:.3g}]" if "b" in ci else ""
        c_ci = f" [{ci['c'][0]:.4g}, {ci['c'][1]:.4g}]" if "c" in ci else ""
        print(
            f"{name}: L = {e['a']:.4g} (C/{e['C0']:.3g})^-{e['b']:.3g}{b_ci} + {e['c']:.4g}{c_ci}"
            f"  R^2 {e['r2']:.4f} ({e['points']} points)"
        )
        for c, loss in e["predicted_loss"].items():
            print(f"  loss at {c} FLOPs: {loss:.4f}")
        at = e["flops_at_loss"]
        print(f"  FLOPs to loss {level:.4f}: " + ("below asymptote" if at is None else f"{at:.4g}"))
        sp = e.get("speedup_flops_fit")
        if sp and sp["speedup"] is not None:
            iv = sp["interval"]
            tail = f" (90% CI {100 * iv[0]:+.1f}% .. {100 * iv[1]:+.1f}%)" if iv else ""
            print(
                f"  extrapolated FLOPs speedup vs {runs[0].name}: {100 * sp['speedup']:+.1f}%"
                + tail
            )
    return 0


def _fit_sweep(args: argparse.Namespace) -> int:
    from growlm.analysis.guideline import save_guideline
    from growlm.analysis.guideline_fit import SweepPoint, fit_guideline

    file = args.sweep / "sweep.json" if args.sweep.is_dir() else args.sweep
    if not file.is_file():
        raise AnalysisError(f"--sweep {str(args.sweep)!r} has no sweep.json (run growlm sweep)")
    runs = json.loads(file.read_text())["runs"]
    points = [
        SweepPoint(
            r["params"],
            r["compute"],
            float(r["growth_tokens"]),
            int(r["growth_factor"]),
            r["best_val_loss"],
        )
        for r in runs.values()
        if r.get("growth_factor")
    ]
    guideline = fit_guideline(points)
    out = args.out or (file.parent / "guideline.json")
    save_guideline(guideline, out)
    if args.json:
        print(json.dumps(guideline.to_json()))
    else:
        print(
            f"log10(d) = {guideline.alpha:.4g} log10(N) + {guideline.beta:.4g}/log10(C) "
            f"{guideline.gamma:+.4g}; g = {guideline.growth_factor}; fitted "
            f"{', '.join(guideline.extra['fitted'])}; wrote {out}"
        )
        se = guideline.extra.get("stderr")
        if se:
            print("standard errors: " + ", ".join(f"{k} +- {v:.3g}" for k, v in se.items()))
        for problem in guideline.extra["problems"]:
            print(f"warning: {problem}")
        if guideline.extra["problems"]:
            print("warning: this guideline is not usable as it stands (growlm plan repeats why)")
    return 0


def _add_sweep(sub: Any) -> None:
    p = sub.add_parser(
        "sweep",
        help="train a grid of growth timings d and factors g (+ scratch), compare and fit",
        description="Iso-FLOP sweep: each grown run gets the scratch run's FLOPs. Finished runs "
        "(OUT/<run>/final) are skipped, unfinished ones resume.",
    )
    p.add_argument("base_recipe", type=Path, help="recipe with a stack growth stage")
    p.add_argument(
        "--d", type=number_list, required=True, help="growth timings (tokens), e.g. 5e3,1e4"
    )
    p.add_argument("--g", type=int_list, required=True, help="growth factors, e.g. 2,4")
    p.add_argument(
        "--sizes",
        nargs="+",
        help="target sizes as name:key=value,... of model.config, e.g. "
        "s:hidden_size=64 m:hidden_size=96,num_attention_heads=6 (default: the recipe's target)",
    )
    p.add_argument("--tokens", type=number_list, help="total token budgets D (default: recipe's)")
    p.add_argument("--scratch-lr", type=float, help="peak lr of the scratch runs")
    p.add_argument("--out", type=Path, required=True, help="sweep folder")
    p.add_argument("--dry-run", action="store_true", help="write the recipes, train nothing")
    p.add_argument("--no-plots", action="store_true", help="skip the PNG plots")
    p.set_defaults(func=cmd_sweep)


def cmd_sweep(args: argparse.Namespace) -> int:
    from growlm.analysis.sweep import analyse, plan_grid, run_grid

    runs = plan_grid(args.base_recipe, args.d, args.g, args.sizes, args.tokens, args.scratch_lr)
    trained = run_grid(runs, args.out, dry_run=args.dry_run)
    if args.dry_run:
        for r in runs:
            print(f"{r.name}: {args.out / 'recipes' / (r.name + '.yaml')}")
        return 0
    print(f"trained {len(trained)} run(s), {len(runs) - len(trained)} already finished")
    results = analyse(runs, args.out, plots=not args.no_plots)
    for name, r in results["runs"].items():
        s = r["speedup_flops"]
        print(
            f"{name}: best val loss {r['best_val_loss']:.4f}, FLOPs speedup "
            + ("n/a" if s is None else f"{100 * s:+.1f}%")
        )
    gl = results.get("guideline", {})
    if "alpha" in gl:
        print(f"guideline: {args.out / 'guideline.json'} (g = {gl['growth_factor']})")
    print(f"report: {args.out / 'report.md'}")
    return 0

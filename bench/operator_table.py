"""The paper's operator table at CPU scale (issues #6 and #17): every growth operator vs scratch
at equal FLOPs on the embedded Shakespeare corpus, over several seeds.

Target: Llama 8 layers, hidden 256, ffn 688, 4 heads (head_dim 64), seq 128, batch 32, BPE 2048.
Depthwise operators grow a 2-layer model of the target's width (x4 depth); widthwise operators
grow an 8-layer model of half the width (hidden 128, ffn 344, 2 heads of 64) to the target's
width (clone-width: HyperCloning x2; mixture-growth: the same base built from templates shared
by the layers, x2). The small model trains d tokens, the grown one the rest of the scratch run's
FLOPs (6 N D, the small model's FLOPs and G_learn's map training included). Masked G_random (MSG)
ramps the new structure in over ``fade`` steps; G_learn (LiGO) trains its maps ``ligo_steps``.

TokenFormer rows: a TokenFormer target of the Llama target's layers, hidden and heads whose
parameter-token count P' is chosen so that its FLOPs per token (growlm.train.flops) are the
closest to the Llama target's; ``tokenformer-scratch`` trains it from scratch on scratch's FLOPs,
``param-tokens`` grows a TokenFormer with P' // 4 tokens per Pattention layer by P' - P' // 4
tokens after d tokens. param-tokens is compared with tokenformer-scratch (its reference) and with
direct-depth (G_stack on the Llama, same total FLOPs).

Each row names its reference (the scratch run of its family) and the rows it is also compared
with; ``--rows`` runs those too. Per seed: OUT/seed<N>/<row>/ (growlm train; a run with final/
is kept, an unfinished one resumes), OUT/seed<N>/eval/<row>.json (held-out perplexity and the
offline tasks), OUT/seed<N>/pairs/<row>.json (equal-loss FLOPs speedups); each is reused on a
rerun. Per row: every seed's values and mean, sd and 95% t-interval over seeds
(growlm.analysis.seeds.across_seeds; a seed that never reaches its reference's final loss enters
at its upper bound C_ref(L) / C_run_final - 1). Rows run by an earlier invocation are kept in the
results file, each with the command, date and git revision that produced it.

    taskset -c 1 python bench/operator_table.py --rows clone-width,mixture-growth,param-tokens \
        --seeds 0 1
    python bench/operator_table.py --quick --out /tmp/ot --results /tmp/ot.json   # < 2 min

Only FLOPs speedups are meaningful from this script when it shares the machine; it runs one
training job at a time with run.threads 1.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import platform
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import setting  # bench/setting.py: the shared CPU reference setting
import yaml
from compute_optimal import _git_rev, pair_stats
from resumable import compact_metrics, metrics_file

from growlm.analysis.seeds import across_seeds
from growlm.io.atomic import write_text_atomic

ROOT = Path(__file__).resolve().parent.parent
TASKS = ("growlm_nextline", "growlm_passages")


@dataclass(frozen=True, eq=False)  # hashed by identity (functools.cache below)
class Scale:
    """What differs between the table and --quick."""

    name: str
    seq: int
    batch: int
    target: dict[str, Any]  # the Llama target's config
    small_width: dict[str, Any]  # the width base's overrides (half the width)
    depth_layers: int  # the depth base's layers (x4)
    budget_steps: int  # scratch's steps: D = budget_steps x batch x seq
    grow_steps: int  # the small model's steps before growth
    fade: int
    ligo_steps: int
    tasks: tuple[str, ...]
    data: dict[str, Any] | None = None  # None: setting.common's
    run: dict[str, Any] = field(default_factory=dict)  # overrides of setting.common's run section
    warmup: int = 30

    @property
    def step(self) -> int:
        return self.batch * self.seq

    @property
    def vocab(self) -> int:
        return int(self.data["vocab_size"]) if self.data else setting.VOCAB

    @property
    def width_params(self) -> dict[str, Any]:
        t = self.target
        return {
            "hidden_size": t["hidden_size"],
            "intermediate_size": t["intermediate_size"],
            "num_heads": t["num_attention_heads"],
        }


FULL = Scale(
    name="full",
    seq=128,
    batch=32,
    target=setting.TARGET,
    small_width={"hidden_size": 128, "intermediate_size": 344, "num_attention_heads": 2},
    depth_layers=2,
    budget_steps=180,  # D of the scratch target: 737,280 tokens
    grow_steps=48,  # 196,608 tokens of the small model before growth
    fade=30,
    ligo_steps=20,
    tasks=TASKS,
)
QUICK = Scale(
    name="quick",
    seq=32,
    batch=8,
    target={
        "hidden_size": 64,
        "intermediate_size": 176,
        "num_hidden_layers": 4,
        "num_attention_heads": 2,
        "max_position_embeddings": 32,
        "tie_word_embeddings": False,
    },
    small_width={"hidden_size": 32, "intermediate_size": 88, "num_attention_heads": 1},
    depth_layers=1,
    budget_steps=24,
    grow_steps=8,
    fade=4,
    ligo_steps=2,
    tasks=(),
    data={
        "sources": [str(ROOT / "tests" / "fixtures" / "shakespeare")],
        "vocab_size": 512,
        "val_fraction": 0.05,
        "block_tokens": 128,
        "seq_len": 32,
    },
    run={"eval_every": 4, "eval_sequences": 8, "checkpoint_every": 25},
    warmup=4,
)


@dataclass(frozen=True)
class Row:
    """One row: its paper name, the model it starts from (None: trained at the target size from
    scratch), its growth, the scratch row it is measured against and further rows it is
    compared with at their final loss."""

    paper: str
    family: str  # llama | tokenformer
    base: str | None  # depth | width | templates | tokens
    grow: dict[str, Any] | None
    reference: str | None
    against: tuple[str, ...] = ()


def rows(s: Scale) -> dict[str, Row]:
    layers = s.target["num_hidden_layers"]
    wp = s.width_params
    new_tokens = tokenformer_shapes(s)["new_tokens"]
    return {
        "scratch": Row("scratch", "llama", None, None, None),
        "direct-depth": Row(
            "G_direct (G_stack)", "llama", "depth", {"op": "stack", "factor": 4}, "scratch"
        ),
        "zero-depth": Row(
            "G_zero", "llama", "depth", {"op": "zero-depth", "num_layers": layers}, "scratch"
        ),
        "random-depth": Row(
            "G_random (MSG masks)",
            "llama",
            "depth",
            {"op": "random-depth", "num_layers": layers, "fade_steps": s.fade},
            "scratch",
        ),
        "learn-depth": Row(
            "G_learn (LiGO)",
            "llama",
            "depth",
            {"op": "learn-depth", "factor": 4, "steps": s.ligo_steps},
            "scratch",
        ),
        "direct-width": Row(
            "G_direct (Net2Net)", "llama", "width", {"op": "direct-width", **wp}, "scratch"
        ),
        "zero-width": Row("G_zero", "llama", "width", {"op": "zero-width", **wp}, "scratch"),
        "random-width": Row(
            "G_random (MSG masks)",
            "llama",
            "width",
            {"op": "random-width", **wp, "fade_steps": s.fade},
            "scratch",
        ),
        "learn-width": Row(
            "G_learn (LiGO)",
            "llama",
            "width",
            {"op": "learn-width", **wp, "steps": s.ligo_steps},
            "scratch",
        ),
        "clone-width": Row(
            "HyperCloning (Samragh et al. 2024)",
            "llama",
            "width",
            {"op": "clone-width", "factor": 2},
            "scratch",
            ("direct-width",),
        ),
        "mixture-growth": Row(
            "MixtureGrowth (Pham et al. 2024)",
            "llama",
            "templates",
            {"op": "mixture-growth", "factor": 2},
            "scratch",
            ("direct-width",),
        ),
        "tokenformer-scratch": Row(
            "TokenFormer from scratch", "tokenformer", None, None, None, ("scratch",)
        ),
        "param-tokens": Row(
            "TokenFormer parameter tokens (Wang et al. 2024)",
            "tokenformer",
            "tokens",
            {"op": "param-tokens", "new_tokens": new_tokens},
            "tokenformer-scratch",
            ("direct-depth",),
        ),
    }


def needed(all_rows: dict[str, Row], asked: list[str]) -> list[str]:
    """``asked`` plus every row they are measured against, in table order."""
    unknown = [r for r in asked if r not in all_rows]
    if unknown:
        raise SystemExit(f"unknown row(s) {', '.join(unknown)}; rows: {', '.join(all_rows)}")
    want = set(asked)
    for name in asked:
        row = all_rows[name]
        want.update([row.reference] if row.reference else [])
        want.update(row.against)
    return [name for name in all_rows if name in want]


# ---- models and their FLOPs ---------------------------------------------------------------
def llama(s: Scale, **overrides: Any) -> dict[str, Any]:
    """The target's Llama config with ``overrides`` (kv heads follow the heads: no GQA)."""
    config = {**s.target, **overrides}
    config["num_key_value_heads"] = config["num_attention_heads"]
    return {"type": "llama", "config": config}


def tokenformer(s: Scale, tokens: int) -> dict[str, Any]:
    """A TokenFormer of the Llama target's layers, hidden size and heads (head_dim kept), with
    ``tokens`` parameter tokens in every Pattention layer (q, k, v, output, FFN)."""
    t = s.target
    config = {
        key: t[key]
        for key in (
            "hidden_size",
            "num_hidden_layers",
            "num_attention_heads",
            "max_position_embeddings",
            "tie_word_embeddings",
        )
    }
    config.update(qkv_slot_num=tokens, proj_slot_num=tokens, ffn_slot_num=tokens)
    return {"type": "tokenformer", "config": config}


@functools.cache
def _flops(s: Scale, section_json: str) -> tuple[float, float]:
    import torch

    from growlm.train.flops import token_flops
    from growlm.train.model import build_config, build_model
    from growlm.train.recipe import ModelConfig, TemplatesConfig

    section = json.loads(section_json)
    templates = section.get("templates")
    model = ModelConfig(
        type=section["type"],
        config=section["config"],
        templates=TemplatesConfig(**templates) if templates else None,
    )
    config = build_config(model, s.vocab, eos_id=0)
    with torch.random.fork_rng():
        built = build_model(config)
    counted = token_flops(built, config, s.seq)
    return counted.model, counted.attention


def flops_per_token(s: Scale, section: dict[str, Any]) -> dict[str, float]:
    """growlm's own FLOPs per trained token of a recipe's model section (growlm.train.flops: 6 N,
    N the parameters the matmuls use; attention's products apart)."""
    model, attention = _flops(s, json.dumps(section, sort_keys=True))
    return {"model": model, "attention": attention, "n": model / 6.0}


@functools.cache
def tokenformer_shapes(s: Scale) -> dict[str, Any]:
    """P' (tokens per Pattention layer of the TokenFormer target) with the FLOPs per token
    closest to the Llama target's; the base has P' // 4 tokens (a quarter, as the depth base has
    a quarter of the layers), grown by the rest."""
    want = flops_per_token(s, llama(s))["model"]

    def f(p: int) -> float:
        return flops_per_token(s, tokenformer(s, p))["model"]

    slope = f(2) - f(1)  # FLOPs per token are linear in P: solve, then round the better way
    exact = 1 + (want - f(1)) / slope
    best = min((int(exact), int(exact) + 1), key=lambda p: abs(f(p) - want))
    return {"target_tokens": best, "base_tokens": best // 4, "new_tokens": best - best // 4}


def base_model(s: Scale, row: Row) -> dict[str, Any]:
    if row.base is None:
        if row.family == "tokenformer":
            return tokenformer(s, tokenformer_shapes(s)["target_tokens"])
        return llama(s)
    if row.base == "depth":
        return llama(s, num_hidden_layers=s.depth_layers)
    if row.base == "width":
        return llama(s, **s.small_width)
    if row.base == "templates":
        return {**llama(s, **s.small_width), "templates": {"count": template_count(s)}}
    return tokenformer(s, tokenformer_shapes(s)["base_tokens"])


def template_count(s: Scale) -> int:
    """T = the layer count: the template base then stores as many projection parameters as the
    plain width base (7 banks of L templates of one layer's shapes, plus L x L coefficients) and
    can express any per-layer weights (its L x L coefficient matrix starts orthogonal), so the
    row differs from direct-width by the parameterisation and the growth, not by capacity before
    growth. Fewer templates would shrink the small model below the width base at the same
    FLOPs (its matmuls use the mixed weights either way)."""
    return int(s.target["num_hidden_layers"])


def target_model(s: Scale, row: Row) -> dict[str, Any]:
    if row.family == "tokenformer":
        return tokenformer(s, tokenformer_shapes(s)["target_tokens"])
    return llama(s)


# ---- recipes -------------------------------------------------------------------------------
def common(s: Scale, seed: int, threads: int, lr: float = 1.0e-3) -> dict[str, Any]:
    """setting.common's sections, resized for --quick."""
    out = setting.common(seed, threads, lr)
    if s.data is not None:
        out["data"] = dict(s.data)
        out["optim"].update(micro_batch_size=s.batch, warmup_steps=s.warmup)
        out["run"].update(s.run)
    return out


def recipes(s: Scale, seed: int, threads: int, names: list[str]) -> dict[str, dict[str, Any]]:
    all_rows = rows(s)
    compute = flops_per_token(s, llama(s))["model"] * s.budget_steps * s.step
    out = {}
    for name in names:
        row = all_rows[name]
        big = flops_per_token(s, target_model(s, row))["model"]
        if row.grow is None:  # scratch of its family on the Llama scratch run's FLOPs
            steps = s.budget_steps if row.family == "llama" else round(compute / big / s.step)
            out[name] = {
                **common(s, seed, threads),
                "name": name,
                "model": base_model(s, row),
                "stages": [{"name": "target", "tokens": steps * s.step}],
            }
            continue
        small = flops_per_token(s, base_model(s, row))["model"]
        d_grow = s.grow_steps * s.step
        ligo = big * s.step * row.grow.get("steps", 0)  # LiGO trains on batches of the run's size
        rest = (compute - small * d_grow - ligo) / big
        out[name] = {
            **common(s, seed, threads, lr=2.0e-3),
            "name": name,
            "model": base_model(s, row),
            "stages": [
                {"name": "base", "tokens": d_grow},
                {
                    "name": "grown",
                    "tokens": int(rest) - int(rest) % s.step,
                    "grow": row.grow,
                    "optimizer_state": "fresh",
                    "optim": {"lr": 1.0e-3, "warmup_steps": s.warmup},
                },
            ],
        }
    return out


# ---- one seed ------------------------------------------------------------------------------
class Seed:
    """The runs, evaluations and comparisons of one seed, each reused when already done."""

    def __init__(self, s: Scale, folder: Path, seed: int, keep: Path | None = None):
        self.s, self.folder, self.seed, self.keep = s, folder, seed, keep
        self.trained = self.evaluated = 0

    def kept(self, name: str) -> bool:
        """Trained and evaluated on some machine, its evaluation and compact metrics in git."""
        k = self.keep
        return (
            k is not None
            and (k / "eval" / f"{name}.json").exists()
            and (k / f"{name}.metrics.jsonl").exists()
        )

    def keep_run(self, name: str) -> None:
        """KEEP/<name>.metrics.jsonl (compact: all that compare reads), then KEEP/eval/<name>.json
        (its presence marks the run kept): what a fresh clone needs instead of the weights."""
        if self.keep is None:
            return
        self.keep.mkdir(parents=True, exist_ok=True)
        text = (self.folder / name / "metrics.jsonl").read_text()
        rows = [json.loads(x) for x in text.splitlines()]
        lines = "".join(json.dumps(r) + "\n" for r in compact_metrics(rows))
        write_text_atomic(self.keep / f"{name}.metrics.jsonl", lines)
        _save(self.keep / "eval" / f"{name}.json", self.evaluate(name))

    def train(self, name: str, recipe: dict[str, Any]) -> None:
        from growlm.train.loop import train
        from growlm.train.recipe import recipe_from_dict

        path = self.folder / "recipes" / f"{name}.yaml"
        path.parent.mkdir(parents=True, exist_ok=True)
        write_text_atomic(path, yaml.safe_dump(recipe, sort_keys=False))
        if self.kept(name):
            return
        if not (self.folder / name / "final").exists():
            print(f"+ seed {self.seed}: train {name}", flush=True)
            run = recipe_from_dict(json.loads(json.dumps(recipe)), [])
            train(run, self.folder / name, resume=True)
            self.trained += 1
        self.keep_run(name)  # evaluated now: the weights stay on this machine

    def evaluate(self, name: str) -> dict[str, Any]:
        """Held-out perplexity of OUT/<name>/final (and the offline tasks), as growlm eval."""
        done = self.folder / "eval" / f"{name}.json"
        for found in (self.keep / "eval" / f"{name}.json" if self.keep else None, done):
            if found is not None and found.exists():
                cached: dict[str, Any] = json.loads(found.read_text())
                return cached
        from growlm.eval.perplexity import load_model, perplexity, shard_token_ids

        print(f"+ seed {self.seed}: eval {name}", flush=True)
        run_dir = self.folder / name
        model, tokenizer = load_model(run_dir / "final")
        ids = shard_token_ids(_val_shards(run_dir))
        scored = perplexity(model, tokenizer, token_ids=ids)
        result: dict[str, Any] = {"perplexity": scored.to_json()}
        if self.s.tasks:
            from growlm.eval.harness import run_tasks

            result["tasks"] = run_tasks(model, tokenizer, list(self.s.tasks))
        _save(done, result)
        self.evaluated += 1
        return result

    def pairs(self, name: str, row: Row) -> dict[str, Any]:
        """Equal-loss FLOPs speedups of ``name`` against its reference and its other rows."""
        done = self.folder / "pairs" / f"{name}.json"
        if done.exists():
            cached: dict[str, Any] = json.loads(done.read_text())
            if sorted(cached["against"]) == sorted(row.against):  # else the rows changed
                return cached

        def arm(n: str) -> dict[str, str]:
            return {"run_dir": str(self.folder / n), "name": n}

        def speedup(ref: str) -> dict[str, Any]:
            return pair_stats(arm(ref), arm(name), self.keep)

        result = {
            "reference": speedup(row.reference) if row.reference else None,
            "against": {o: speedup(o) for o in row.against},
        }
        _save(done, result)
        return result


def seed_entry(
    one: Seed, name: str, evaluated: dict[str, Any], pairs: dict[str, Any]
) -> dict[str, Any]:
    """One seed's values of a row (the speedup is against its reference; a reference row: 0)."""
    file = metrics_file({"run_dir": str(one.folder / name), "name": name}, one.keep)
    records = [json.loads(x) for x in file.read_text().splitlines()]
    losses = [r["val_loss"] for r in records if r.get("val_loss") is not None]
    ref = pairs["reference"] or {"speedup_flops": 0.0, "upper_bound_if_not_reached": None}
    return {
        "final_val_loss": losses[-1],
        "best_val_loss": min(losses),
        "tokens": records[-1]["tokens"],
        "flops": records[-1]["flops"],
        "attn_flops": records[-1].get("attn_flops"),
        "speedup_flops": ref["speedup_flops"],
        "upper_bound_if_not_reached": ref["upper_bound_if_not_reached"],
        "reached_reference_loss": ref["speedup_flops"] is not None,
        "against": pairs["against"],
        "perplexity": evaluated["perplexity"],
        "tasks": evaluated.get("tasks"),
    }


def aggregate(row: Row, per_seed: dict[int, dict[str, Any]]) -> dict[str, Any]:
    """Every seed's values and the statistics over seeds of one row."""
    seeds = [per_seed[k] for k in sorted(per_seed)]
    out: dict[str, Any] = {
        "paper_operator": row.paper,
        "family": row.family,
        "reference": row.reference,
        "seeds": [{"seed": k, **per_seed[k]} for k in sorted(per_seed)],
        "final_val_loss": across_seeds([x["final_val_loss"] for x in seeds]),
        "speedup_flops": across_seeds(
            [x["speedup_flops"] for x in seeds], [x["upper_bound_if_not_reached"] for x in seeds]
        ),
        "perplexity": across_seeds([x["perplexity"]["perplexity"] for x in seeds]),
        "against": {},
    }
    for other in row.against:
        pairs = [x["against"][other] for x in seeds]
        bounds = [p["upper_bound_if_not_reached"] for p in pairs]
        out["against"][other] = {
            "speedup_flops": across_seeds([p["speedup_flops"] for p in pairs], bounds),
            "final_loss_gap": across_seeds(  # the other row's final loss minus this row's
                [
                    p["reference_loss"] - x["final_val_loss"]
                    for p, x in zip(pairs, seeds, strict=True)
                ]
            ),
        }
    return out


def legacy_row(old: dict[str, Any], result: dict[str, Any]) -> dict[str, Any]:
    """A row of the one-seed table (2026-11-30, before per-seed rows) in this script's form."""
    if "seeds" in old:
        return old
    entry = {
        "final_val_loss": old["final_val_loss"],
        "best_val_loss": old["best_val_loss"],
        "flops": old["flops"],
        "speedup_flops": old["speedup_flops"],
        "upper_bound_if_not_reached": None,
        "reached_reference_loss": old["reached_scratch_loss"],
        "against": {},
        "perplexity": old["perplexity"],
        "tasks": old["tasks"],
    }
    reference = None if old["paper_operator"] == "scratch" else "scratch"
    row = Row(old["paper_operator"], "llama", None, None, reference)
    out = aggregate(row, {0: entry})
    out["run"] = {"command": result.get("command"), "date": result.get("date")}
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="tiny shapes and budget (< 2 minutes)")
    ap.add_argument("--out", type=Path, help="work folder (default bench/work/operators[_quick])")
    ap.add_argument(
        "--rows",
        help="rows to run, comma-separated (default all); their reference rows run too",
    )
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--results", type=Path, help="results JSON (merged: other rows are kept)")
    ap.add_argument(
        "--keep",
        type=Path,
        help="folder in git for finished runs' evaluations and compact metrics (default "
        "bench/results/operator_table_runs; --quick: none); a fresh clone skips them",
    )
    args = ap.parse_args()
    s = QUICK if args.quick else FULL
    suffix = "_quick" if args.quick else ""
    out: Path = args.out or ROOT / "bench" / "work" / f"operators{suffix}"
    results: Path = args.results or ROOT / "bench" / "results" / f"operator_table{suffix}.json"
    all_rows = rows(s)
    asked = [r for r in (args.rows or ",".join(all_rows)).split(",") if r]
    names = needed(all_rows, asked)
    started = time.time()
    per_row: dict[str, dict[int, dict[str, Any]]] = {n: {} for n in names}
    trained = evaluated = 0
    for seed in args.seeds:
        kept = args.keep or (
            None if args.quick else ROOT / "bench" / "results" / "operator_table_runs"
        )
        one = Seed(s, out / f"seed{seed}", seed, kept / f"seed{seed}" if kept else None)
        for name, recipe in recipes(s, seed, args.threads, names).items():
            one.train(name, recipe)
        for name in names:
            per_row[name][seed] = seed_entry(
                one, name, one.evaluate(name), one.pairs(name, all_rows[name])
            )
        trained, evaluated = trained + one.trained, evaluated + one.evaluated
    command = " ".join(["python bench/operator_table.py", *sys.argv[1:]])
    rev = _git_rev()
    old = json.loads(results.read_text()) if results.exists() else {}
    table = {n: legacy_row(r, old) for n, r in old.get("rows", {}).items()}
    for name in names:
        row = aggregate(all_rows[name], per_row[name])
        row["run"] = {"command": command, "date": time.strftime("%Y-%m-%d"), "git_revision": rev}
        table[name] = row
    order = list(all_rows)
    table = dict(sorted(table.items(), key=lambda kv: order.index(kv[0]) if kv[0] in order else 99))
    result = {
        "command": command,
        "date": time.strftime("%Y-%m-%d"),
        "git_revision": rev,
        "machine": f"{platform.machine()} {platform.processor() or ''}".strip()
        + f", {os.cpu_count()} cores, {args.threads} thread(s) per run (shared machine: FLOPs "
        "only)",
        "setting": describe(s),
        "rows_run_this_invocation": names,
        "runs_trained_this_invocation": trained,
        "runs_evaluated_this_invocation": evaluated,
        "rows": table,
        "elapsed_s": round(time.time() - started, 1),
    }
    results.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(results, json.dumps(result, indent=2) + "\n")
    for name in names:
        r = table[name]
        loss, sp = r["final_val_loss"], r["speedup_flops"]
        shown = "n/a" if sp["mean"] is None else f"{sp['mean']:+.1%}"
        print(f"{name:<20} val {loss['mean']:.4f} speedup {shown} ({loss['seeds']} seeds)")
    return 0


def describe(s: Scale) -> dict[str, Any]:
    """The setting, with growlm's FLOPs per token of every model the rows start from or reach."""
    llama_target = flops_per_token(s, llama(s))
    shapes = tokenformer_shapes(s)
    tf_target = flops_per_token(s, tokenformer(s, shapes["target_tokens"]))
    t = s.target
    return {
        "scale": s.name,
        "target": f"Llama {t['num_hidden_layers']}L h{t['hidden_size']} ffn"
        f"{t['intermediate_size']} {t['num_attention_heads']} heads, seq {s.seq}, batch {s.batch},"
        f" BPE {s.vocab}",
        "data": s.data or setting.common(0, 1)["data"],
        "depth_base": f"{s.depth_layers}L (x4 depth)",
        "width_base": f"{s.small_width} (x2 width)",
        "mixture_growth_templates": template_count(s),
        "tokenformer": {
            **shapes,
            "rule": "P' tokens in every Pattention layer (q, k, v, output, FFN) with the FLOPs "
            "per token closest to the Llama target's; base P' // 4, grown by param-tokens",
        },
        "flops_per_token": {
            "llama_target": llama_target,
            "tokenformer_target": tf_target,
            "tokenformer_over_llama": tf_target["model"] / llama_target["model"],
            "llama_depth_base": flops_per_token(s, llama(s, num_hidden_layers=s.depth_layers)),
            "llama_width_base": flops_per_token(s, llama(s, **s.small_width)),
            "template_width_base": flops_per_token(
                s, {**llama(s, **s.small_width), "templates": {"count": template_count(s)}}
            ),
            "tokenformer_base": flops_per_token(s, tokenformer(s, shapes["base_tokens"])),
            "convention": "growlm.train.flops.token_flops: 6 N, N the parameters the matmuls "
            "use (a template model's mixed weights); attention's products apart",
        },
        "budget_tokens_scratch": s.budget_steps * s.step,
        "budget_flops": llama_target["model"] * s.budget_steps * s.step,
        "growth_tokens": s.grow_steps * s.step,
        "fade_steps": s.fade,
        "ligo_steps": s.ligo_steps,
        "lr": "scratch 1e-3; small 2e-3, grown 1e-3 (fresh AdamW, warm-up restarted)",
    }


def _save(path: Path, value: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(path, json.dumps(value, indent=1) + "\n")


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

"""Training tokens/s of small Llama models by width (issue 19 item 0): plain transformers
(forward + backward + AdamW step) in fp32 and in bf16 autocast, and growlm's own training loop
(``growlm.train.loop.train`` on the embedded corpus, its median logged tokens_per_s) in both
precisions. Shapes are the compute-optimal benchmark's (sequences of 128, batches of 32) at 4
layers; the crossover width it finds is growlm's ``run.precision: auto`` rule
(growlm/train/precision.py). Run it alone (other torch processes slow it several-fold); on a
shared machine its figures are lower bounds and the load average is recorded with them:

    flock /work/helpers/cpu.lock python bench/small_model_speed.py --steps 8
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

import torch
from transformers import LlamaConfig, LlamaForCausalLM

ROOT = Path(__file__).resolve().parent.parent
WIDTHS = [48, 64, 96, 128, 192, 256]  # 4 layers, vocab 1024


def config(hidden: int, seq: int) -> dict:
    heads = max(2, hidden // 32)
    return {
        "hidden_size": hidden,
        "intermediate_size": 8 * ((8 * hidden // 3 + 7) // 8),
        "num_hidden_layers": 4,
        "num_attention_heads": heads,
        "num_key_value_heads": heads,
        "max_position_embeddings": seq,
        "tie_word_embeddings": False,
    }


def plain(hidden: int, seq: int, bf16: bool, steps: int, batch: int) -> float:
    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(vocab_size=1024, **config(hidden, seq)))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    x = torch.randint(0, 1024, (batch, seq))
    times = []
    for _ in range(steps + 2):
        t = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss = model(input_ids=x, labels=x).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        times.append(time.perf_counter() - t)
    return batch * seq / statistics.median(times[2:])


def growlm_loop(hidden: int, seq: int, bf16: bool, steps: int, batch: int) -> float:
    from growlm.train.loop import train
    from growlm.train.recipe import recipe_from_dict

    raw = {
        "seed": 0,
        "data": {
            "sources": [str(ROOT / "tests" / "fixtures" / "shakespeare")],
            "vocab_size": 1024,
            "val_fraction": 0.05,
            "block_tokens": 4 * seq,
            "seq_len": seq,
        },
        "model": {"type": "llama", "config": config(hidden, seq)},
        "optim": {"lr": 1e-3, "warmup_steps": 2, "micro_batch_size": batch},
        "run": {
            "precision": "bf16" if bf16 else "fp32",
            "eval_every": 0,
            "checkpoint_every": 0,
            "progress": False,
        },
        "stages": [{"name": "s", "tokens": (steps + 2) * batch * seq}],
    }
    with tempfile.TemporaryDirectory() as tmp:
        train(recipe_from_dict(raw, []), Path(tmp) / "run")
        text = (Path(tmp) / "run" / "metrics.jsonl").read_text()
        rows = [json.loads(x) for x in text.splitlines()]
    return statistics.median(r["tokens_per_s"] for r in rows[2:] if "tokens_per_s" in r)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--seq", type=int, default=128)
    ap.add_argument("--widths", default=",".join(map(str, WIDTHS)))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--results", type=Path, default=ROOT / "bench/results/small_model_speed.json")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    rows = []
    load = [_uptime()]
    started = time.time()
    seq = args.seq
    for hidden in [int(w) for w in args.widths.split(",")]:
        row = {"hidden": hidden, "seq": seq, "layers": 4, "vocab": 1024, "batch": args.batch}
        for name, fn in (("transformers", plain), ("growlm", growlm_loop)):
            for bf16 in (False, True):
                key = f"{name}_{'bf16' if bf16 else 'fp32'}_tokens_per_s"
                row[key] = round(fn(hidden, seq, bf16, args.steps, args.batch))
        for name in ("transformers", "growlm"):
            row[f"{name}_faster"] = (
                "bf16" if row[f"{name}_bf16_tokens_per_s"] > row[f"{name}_fp32_tokens_per_s"]
                else "fp32"
            )  # fmt: skip
        row["load_average_after"] = _uptime()
        rows.append(row)
        print(json.dumps(row), flush=True)
        _write(args, rows, load, started, complete=False)  # a row survives an interruption
    _write(args, rows, load, started, complete=True)
    return 0


def _write(
    args: argparse.Namespace, rows: list[dict], load: list[str], started: float, complete: bool
) -> None:
    result = {
        "command": f"python bench/small_model_speed.py --steps {args.steps} --batch {args.batch}"
        f" --seq {args.seq} --widths {args.widths}",
        "date": time.strftime("%Y-%m-%d"),
        "git_revision": _git(["rev-parse", "HEAD"]),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, "
        f"{args.threads} threads",
        "complete": complete,
        "load_average_at_start": load[0],
        "wall_s": round(time.time() - started, 1),
        "note": "median step time over --steps steps after 2 warm-up steps; growlm's figure is "
        "its loop's logged tokens_per_s (data sampling included). Taken under the shared cpu "
        "lock on a 2-core machine where other agents' jobs still ran (see the load averages): "
        "every figure is a lower bound, and a row that falls ~10x below its neighbours was "
        "shared with another torch process; read ratios within a row",
        "rows": rows,
    }
    args.results.write_text(json.dumps(result, indent=1) + "\n")


def _uptime() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()


def _git(args: list[str]) -> str:
    done = subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True)
    return done.stdout.strip() or "unknown"


if __name__ == "__main__":
    raise SystemExit(main())

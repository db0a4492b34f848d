"""Training tokens/s of small Llama models by width (issue 19 item 0): plain transformers
(forward + backward + AdamW step) in fp32 and in bf16 autocast, and growlm's own training loop
(``growlm.train.loop.train`` on the embedded corpus, its median logged tokens_per_s) in both
precisions. Run it alone (other torch processes slow it several-fold):

    flock /work/helpers/cpu.lock python bench/small_model_speed.py --steps 20
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import tempfile
import time
from pathlib import Path

import torch
from transformers import LlamaConfig, LlamaForCausalLM

ROOT = Path(__file__).resolve().parent.parent
SHAPES = [(64, 128), (96, 256), (256, 256)]  # (hidden, seq); 4 layers, vocab 1024, batch 16


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
        rows = [json.loads(x) for x in (Path(tmp) / "run" / "metrics.jsonl").read_text().split()]
    return statistics.median(r["tokens_per_s"] for r in rows[2:] if "tokens_per_s" in r)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--results", type=Path, default=ROOT / "bench/results/small_model_speed.json")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    rows = []
    for hidden, seq in SHAPES:
        row = {"hidden": hidden, "seq": seq, "layers": 4, "vocab": 1024, "batch": args.batch}
        for name, fn in (("transformers", plain), ("growlm", growlm_loop)):
            for bf16 in (False, True):
                key = f"{name}_{'bf16' if bf16 else 'fp32'}_tokens_per_s"
                row[key] = round(fn(hidden, seq, bf16, args.steps, args.batch))
        rows.append(row)
        print(json.dumps(row), flush=True)
    result = {
        "command": f"python bench/small_model_speed.py --steps {args.steps}",
        "date": time.strftime("%Y-%m-%d"),
        "machine": f"{platform.machine()}, torch {torch.__version__}, {args.threads} threads",
        "note": "median step time over --steps steps after 2 warm-up steps; growlm's figure is "
        "its loop's logged tokens_per_s (data sampling included); the machine may have been "
        "shared: read ratios within a row, not absolute values",
        "rows": rows,
    }
    args.results.write_text(json.dumps(result, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Causal attention forward + backward on this CPU: transformers' default (SDPA, flash kernel)
vs growlm's ``growlm_cpu`` (flash forward, recomputing backward), both compiled as the trainer
compiles them. The arms alternate call by call in one process, so a busy moment on the shared
machine hits both; the ratio of medians is the figure to quote.

    python bench/attention_cpu.py          # [8, 8, T, 64] bf16 for T = 256, 512, 1024; ~2 min
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from record import header, write_result  # bench/record.py (bench/ is on sys.path)

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from growlm.train.attention import causal_attention  # noqa: E402


def sdpa(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    return F.scaled_dot_product_attention(q, k, v, is_causal=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lengths", type=int, nargs="+", default=[256, 512, 1024])
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--heads", type=int, default=8)
    parser.add_argument("--head-dim", type=int, default=64)
    parser.add_argument("--calls", type=int, default=20, help="timed calls per arm and length")
    parser.add_argument("--out", type=Path, default=ROOT / "bench/results/attention_cpu.json")
    args = parser.parse_args()
    arms = {"sdpa": torch.compile(sdpa), "growlm_cpu": torch.compile(causal_attention)}
    results = []
    for length in args.lengths:
        shape = (args.batch, args.heads, length, args.head_dim)
        q, k, v = (torch.randn(shape, dtype=torch.bfloat16, requires_grad=True) for _ in range(3))
        grad = torch.randn(shape, dtype=torch.bfloat16)
        times: dict[str, list[float]] = {name: [] for name in arms}
        forward: dict[str, list[float]] = {name: [] for name in arms}
        for call in range(args.calls + 3):
            for name, fn in arms.items():
                start = time.perf_counter()
                out = fn(q, k, v)
                middle = time.perf_counter()
                out.backward(grad)
                if call >= 3:  # the first calls compile
                    times[name].append(time.perf_counter() - start)
                    forward[name].append(middle - start)
        row = {
            "shape": list(shape),
            **{f"{n}_ms": round(statistics.median(t) * 1e3, 2) for n, t in times.items()},
            **{f"{n}_forward_ms": round(statistics.median(t) * 1e3, 2) for n, t in forward.items()},
        }
        row["speedup"] = round(row["sdpa_ms"] / row["growlm_cpu_ms"], 2)
        print(row, flush=True)
        results.append(row)
    result = {
        **header(),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "what": "median forward+backward (and forward alone) time per call, bf16, causal; arms "
        "alternate per call",
        "results": results,
    }
    write_result(args.out, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())

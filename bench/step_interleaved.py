"""One training step of the throughput benchmark's model, compiled two ways, interleaved step by
step in one process so the shared machine's speed swings hit both arms alike:

- ``hf-compiled``: what ``Trainer(torch_compile=True)`` runs: the whole HF model compiled, SDPA
  attention (traced, transformers passes SDPA a materialised causal mask), loss compiled;
- ``growlm-compiled``: what ``growlm train`` runs with ``run.compile: true``: decoder blocks
  compiled one by one, ``growlm_cpu`` attention, loss compiled.

Both: bf16 autocast, fp32 master weights, fused AdamW, clip 1.0, batch 8 x 256 tokens. This is
not the Trainer itself (bench/train_throughput.py is): it isolates the model step from the
loops around it, and from the noise of running arms minutes apart.

    python bench/step_interleaved.py          # ~3 minutes on 2 cores

It also profiles two steps of each arm (torch.profiler) and records where the time goes.
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
from record import header, write_result  # bench/record.py (bench/ is on sys.path)

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from train_throughput import MODEL  # noqa: E402  (this folder is on sys.path: same model)

from growlm.train import attention  # noqa: E402
from growlm.train.loss import token_loss  # noqa: E402
from growlm.train.model import compile_blocks  # noqa: E402


def make_step(arm: str, batch: torch.Tensor) -> Callable[[], float]:
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.for_model(
        "llama", vocab_size=8192, use_cache=False, tie_word_embeddings=False, **MODEL
    )
    impl = attention.NAME if arm == "growlm-compiled" else "sdpa"
    attention.register()
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(copy.deepcopy(config), attn_implementation=impl)
    optimizer = torch.optim.AdamW(
        model.parameters(), lr=1e-3, betas=(0.9, 0.95), weight_decay=0.1, fused=True
    )

    if arm == "growlm-compiled":
        compile_blocks(model)
    else:
        model.compile()
    loss_fn = torch.compile(token_loss)

    def step() -> float:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            logits = model(input_ids=batch[:, :-1]).logits
        loss = loss_fn(logits, batch[:, 1:])
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return float(loss.detach())

    return step


# torch.profiler op names -> the share of a step they stand for (self CPU time)
CATEGORIES = {
    "linear matmuls": ("aten::mm", "aten::addmm"),
    "attention": ("aten::bmm", "flash_attention"),
    "optimizer and clipping": ("adamw", "foreach", "vector_norm", "aten::mul_"),
    "compiled elementwise (norms, RoPE, SiLU, casts, loss; attention backward's for growlm)": (
        "CompiledFxGraph",
    ),
}


def profile_shares(step: Callable[[], float], steps: int = 2) -> dict[str, float]:
    """Self-CPU-time shares of ``steps`` profiled steps, by CATEGORIES (rest: "other")."""
    with torch.profiler.profile() as prof:
        for _ in range(steps):
            step()
    totals = dict.fromkeys([*CATEGORIES, "other"], 0.0)
    for event in prof.key_averages():
        name = event.key
        category = next(
            (c for c, keys in CATEGORIES.items() if any(k in name for k in keys)), "other"
        )
        totals[category] += event.self_cpu_time_total
    whole = sum(totals.values())
    return {c: round(t / whole, 3) for c, t in totals.items()}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=14, help="timed steps per arm")
    parser.add_argument("--out", type=Path, default=ROOT / "bench/results/step_interleaved.json")
    args = parser.parse_args()
    batch = torch.randint(0, 8192, (8, 257), generator=torch.Generator().manual_seed(0))
    arms = {name: make_step(name, batch) for name in ("hf-compiled", "growlm-compiled")}
    for step in arms.values():
        for _ in range(3):  # compile and settle
            step()
    times: dict[str, list[float]] = {name: [] for name in arms}
    for _ in range(args.rounds):
        for name, step in arms.items():
            start = time.perf_counter()
            step()
            times[name].append(time.perf_counter() - start)
    summary = {
        name: {
            "median_step_s": round(statistics.median(t), 4),
            "min_step_s": round(min(t), 4),
            "tokens_per_s_median": round(8 * 256 / statistics.median(t), 1),
        }
        for name, t in times.items()
    }
    for name, step in arms.items():
        summary[name]["profile_share"] = profile_shares(step)
    ratio = summary["hf-compiled"]["median_step_s"] / summary["growlm-compiled"]["median_step_s"]
    result = {
        **header(),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "arms": summary,
        "speedup_growlm_over_hf_median": round(ratio, 3),
    }
    print(json.dumps(result, indent=2))
    write_result(args.out, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())

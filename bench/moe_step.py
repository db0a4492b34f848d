"""growlm's MoE training step against transformers' own MoE forward/backward, on the same model,
interleaved step by step in one process so a shared machine's speed swings hit both arms alike.

The model: a Mixtral (hidden 128, 4 layers, 8 experts top-2, expert width 352, vocabulary
8192), batch 8 x 128 tokens, fp32, SDPA attention (what growlm picks uncompiled on CPU), the
same initial weights in both arms. growlm trains MoE models with transformers' own modules
(``MixtralSparseMoeBlock``: the router and the fused experts), so the arms share the model's
forward; they differ in what wraps it:

- ``growlm``: ``Trainer._update`` of growlm/train/loop.py, as ``growlm train`` runs it: forward,
  router logits collected by forward hooks (growlm/train/moe.py ``RouterTap``), cross-entropy
  plus coef * load-balancing loss plus z_coef * z-loss, the step's router statistics tallied
  (aux, z, expert load for the metrics JSONL), backward, clip 1.0, AdamW;
- ``transformers``: ``model(input_ids, labels=..., output_router_logits=True)``, whose loss is
  transformers' cross-entropy plus ``router_aux_loss_coef`` * its ``load_balancing_loss_func``,
  backward, clip 1.0, the same AdamW.

Both use coef 0.01; growlm's z-loss coefficient is 0.001 (transformers' Mixtral has none; it
costs growlm a logsumexp per layer). Also checks that the expert forward has no Python loop
over tokens: the number of ops one forward dispatches is the same for 256 and 1024 tokens
(transformers' ``grouped_mm`` experts: per layer, one sort of the token-expert pairs by expert
and two ``aten::_grouped_mm`` calls, up and down, which on CPU run one matmul per expert).

    OMP_NUM_THREADS=1 python bench/moe_step.py     # ~1-2 minutes on a shared 2-core machine
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import torch
from record import header, write_result  # bench/record.py (bench/ is on sys.path)

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from growlm.train.distributed import DistContext  # noqa: E402
from growlm.train.loop import Trainer  # noqa: E402
from growlm.train.loss import Objective  # noqa: E402
from growlm.train.optim import make_optimizer  # noqa: E402
from growlm.train.recipe import recipe_from_dict  # noqa: E402

VOCAB, BATCH, SEQ = 8192, 8, 128
MODEL = {
    "hidden_size": 128,
    "intermediate_size": 352,
    "num_hidden_layers": 4,
    "num_attention_heads": 4,
    "num_key_value_heads": 4,
    "num_local_experts": 8,
    "num_experts_per_tok": 2,
    "router_aux_loss_coef": 0.01,
    "max_position_embeddings": 256,
}
OPTIM = {"lr": 1e-3, "warmup_steps": 0, "micro_batch_size": BATCH, "moe_z_loss_coef": 0.001}


def recipe() -> Any:
    raw = {
        "name": "moe-step",
        "data": {"sources": ["unused"], "seq_len": SEQ},
        "model": {"type": "mixtral", "config": MODEL, "attn_implementation": "sdpa"},
        "optim": OPTIM,
        "run": {"precision": "fp32", "device": "cpu", "progress": False},
        "stages": [{"name": "moe", "tokens": BATCH * SEQ}],
    }
    return recipe_from_dict(raw, [], base_dir=ROOT)


def make_arms(batch: torch.Tensor) -> tuple[dict[str, Callable[[], float]], Any]:
    """(the two arms' step functions, the model config); same initial weights in both."""
    from transformers import AutoConfig

    rec = recipe()
    config = AutoConfig.for_model("mixtral", vocab_size=VOCAB, use_cache=False, **MODEL)
    data = SimpleNamespace(train=SimpleNamespace(count=1))  # the step takes its batch as given
    trainer = Trainer(rec, ROOT / "bench" / "work" / "moe-step", DistContext(), data)  # type: ignore[arg-type]
    cfg = rec.stage_optim(0)
    torch.manual_seed(0)
    base = trainer._build_model(config)
    base.train()

    ours = copy.deepcopy(base)
    objective = Objective.for_model(trainer._loss, ours, config, cfg)
    assert objective.tap is not None
    trainer.autocast_dtype = None  # fp32
    ours_opt = make_optimizer(ours, cfg)

    def growlm_step() -> float:
        loss, _ = trainer._update(ours, ours_opt, batch, cfg, objective)
        objective.metrics(DistContext())  # what the loop logs each step
        return loss

    theirs = copy.deepcopy(base)
    theirs_opt = make_optimizer(theirs, cfg)

    def transformers_step() -> float:
        out = theirs(input_ids=batch[:, :-1], labels=batch[:, :-1], output_router_logits=True)
        out.loss.backward()
        torch.nn.utils.clip_grad_norm_(theirs.parameters(), cfg.grad_clip)
        theirs_opt.step()
        theirs_opt.zero_grad(set_to_none=True)
        return float(out.loss.detach())

    return {"growlm": growlm_step, "transformers": transformers_step}, base


def ops_per_forward(model: torch.nn.Module, tokens: int) -> dict[str, int]:
    """Ops one forward dispatches for ``tokens`` tokens (in sequences of SEQ)."""
    ids = torch.randint(0, VOCAB, (tokens // SEQ, SEQ), generator=torch.Generator().manual_seed(1))
    with torch.no_grad(), torch.profiler.profile() as prof:
        model(input_ids=ids)
    counts = {e.key: e.count for e in prof.key_averages()}
    return {
        "total": sum(counts.values()),
        "aten::_grouped_mm": counts.get("aten::_grouped_mm", 0),
        "aten::mm": counts.get("aten::mm", 0),  # CPU grouped_mm: one mm per expert, in C++
        "aten::linear": counts.get("aten::linear", 0),
    }


def git_revision() -> str:
    out = subprocess.run(
        ["git", "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True, text=True, check=False
    )
    dirty = subprocess.run(
        ["git", "-C", str(ROOT), "status", "--porcelain", "--untracked-files=no"],
        capture_output=True,
        text=True,
        check=False,
    )
    return out.stdout.strip() + ("+uncommitted" if dirty.stdout.strip() else "")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=40, help="timed steps per arm")
    parser.add_argument("--out", type=Path, default=ROOT / "bench/results/moe_step.json")
    args = parser.parse_args()
    load_start = os.getloadavg()
    batch = torch.randint(0, VOCAB, (BATCH, SEQ + 1), generator=torch.Generator().manual_seed(0))
    arms, model = make_arms(batch)
    experts_impl = model.config._experts_implementation
    losses: dict[str, list[float]] = {name: [] for name in arms}
    for _ in range(3):  # settle (allocator, first-call dispatch)
        for name, step in arms.items():
            losses[name].append(step())
    times: dict[str, list[float]] = {name: [] for name in arms}
    for r in range(args.rounds):
        order = list(arms) if r % 2 == 0 else list(reversed(arms))  # A,B then B,A
        for name in order:
            start = time.perf_counter()
            losses[name].append(arms[name]())
            times[name].append(time.perf_counter() - start)
    summary = {
        name: {
            "median_step_s": round(statistics.median(t), 4),
            "min_step_s": round(min(t), 4),
            "max_step_s": round(max(t), 4),
            "tokens_per_s_median": round(BATCH * SEQ / statistics.median(t), 1),
            "first_losses": [round(x, 4) for x in losses[name][:3]],
        }
        for name, t in times.items()
    }
    ratio = summary["growlm"]["median_step_s"] / summary["transformers"]["median_step_s"]
    per_round = [a / b for a, b in zip(times["growlm"], times["transformers"], strict=True)]
    ops = {str(n): ops_per_forward(model, n) for n in (2 * SEQ, 8 * SEQ)}
    result = {
        **header("OMP_NUM_THREADS=1 python"),
        "git_revision": git_revision(),
        "machine": {
            "cpu": platform.processor() or platform.machine(),
            "cores": os.cpu_count(),
            "torch_threads": torch.get_num_threads(),
            "load_average_at_start": [round(x, 2) for x in load_start],
            "load_average_at_end": [round(x, 2) for x in os.getloadavg()],
        },
        "note": (
            "shared machine: other jobs (a long benchmark and other sessions) ran at the same "
            "time; the arms are interleaved step by step (order alternating each round) so the "
            "load hits both alike, and the medians and per-round ratio are what to read"
        ),
        "torch": torch.__version__,
        "transformers": __import__("transformers").__version__,
        "model": {**MODEL, "vocab_size": VOCAB, "batch": BATCH, "seq_len": SEQ},
        "experts_implementation": experts_impl,
        "rounds": args.rounds,
        "arms": summary,
        "ratio_growlm_over_transformers_median_step": round(ratio, 3),
        "ratio_per_round_median": round(statistics.median(per_round), 3),
        "ops_per_forward_by_tokens": ops,
    }
    print(json.dumps(result, indent=2))
    write_result(args.out, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())

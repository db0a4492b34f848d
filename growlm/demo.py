"""``growlm demo``: build a small Llama, grow it with several operators, print each check.

The trainer-based demo (scratch vs G_stack on real text) replaces this once ``growlm train``
lands; until then the demo shows every operator on a model it builds itself, offline.
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

import torch

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


def run_demo(args: argparse.Namespace) -> int:
    from growlm.grow import grow

    out = Path(args.out)
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    base = build_base(out / "base")
    print(f"built a 4-layer Llama (hidden 64) at {base}; growing it with {len(DEMO_OPS)} operators")
    header = f"{'operator':<18} {'layers':>7} {'params':>15} {'preserving':>10} {'max|dlogit|':>11}"
    print(header + f" {'loss before':>11} {'after':>7}")
    reports = []
    for op, params in DEMO_OPS:
        r = grow(base, out / op.replace("+", "_"), op, check=True, **params)  # type: ignore[arg-type]
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

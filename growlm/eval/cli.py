"""The ``eval`` subcommand as a plain function; growlm/cli.py registers it through
``add_parsers`` and turns typed errors into one line."""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path
from typing import Any

from growlm.argtypes import nonnegative_int, positive_int
from growlm.eval.errors import EvalError


def add_parsers(sub: Any) -> None:
    """Register ``eval``."""
    p = sub.add_parser(
        "eval",
        help="perplexity / bits per byte on text, or lm-eval tasks, of an HF model folder",
    )
    p.add_argument(
        "model", type=Path, help="HF model folder with its tokenizer, hub id or .gguf file"
    )
    p.add_argument("--data", type=Path, help="text file, folder of text, or prepared shards")
    p.add_argument("--max-length", type=int, help="window tokens (default: max positions)")
    p.add_argument("--stride", type=int, help="new tokens per window (default: half)")
    p.add_argument(
        "--max-tokens", type=int, help="score at most this many shard tokens (default 1M)"
    )
    p.add_argument(
        "--tasks",
        nargs="+",
        help="lm-eval tasks: offline (growlm_nextline, growlm_passages), paper (the seven "
        "tasks, needs hub access), or any lm-eval task name",
    )
    p.add_argument("--include", type=Path, nargs="*", default=[], help="more task YAML folders")
    p.add_argument("--limit", type=positive_int, help="examples per task")
    p.add_argument("--num-fewshot", type=nonnegative_int)
    p.add_argument("--batch-size", type=positive_int, default=8)
    p.add_argument(
        "--trust-remote-code",
        action="store_true",
        help="run Python code shipped in the model folder (auto_map); off by default: read it "
        "first",
    )
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=cmd_eval)


def cmd_eval(args: argparse.Namespace) -> int:
    from growlm.eval.perplexity import (
        check_window_args,
        is_shards,
        load_model,
        perplexity,
        shard_token_ids,
        text_documents,
    )
    from growlm.io.resolve import resolve_model

    if not args.data and not args.tasks:
        raise EvalError("give --data (perplexity) and/or --tasks (lm-eval)")
    check_window_args(args.max_length, args.stride)
    folder = resolve_model(args.model, what="model").path  # a folder, hub id or .gguf file
    if not folder.exists():
        raise EvalError(f"model folder {str(args.model)!r} does not exist")
    model, tokenizer = load_model(folder, trust_remote_code=args.trust_remote_code)
    out: dict[str, Any] = {"model": str(args.model)}
    if args.data:
        if is_shards(args.data):
            ids = shard_token_ids(args.data, args.max_tokens)
            res = perplexity(
                model, tokenizer, token_ids=ids, max_length=args.max_length, stride=args.stride
            )
        else:
            docs = list(text_documents(args.data))
            res = perplexity(model, tokenizer, docs, max_length=args.max_length, stride=args.stride)
        out["perplexity"] = res.to_json()
    if args.tasks:
        from growlm.eval.harness import run_tasks

        out["tasks"] = run_tasks(
            model,
            tokenizer,
            args.tasks,
            args.include,
            args.limit,
            args.num_fewshot,
            args.batch_size,
            args.max_length,
        )
    if args.json:
        print(json.dumps(out))
        return 0
    if "perplexity" in out:
        r = out["perplexity"]
        bpb = "n/a" if r["bits_per_byte"] is None else f"{r['bits_per_byte']:.4f}"
        print(
            f"perplexity {r['perplexity']:.4f}, bits/byte {bpb} over {r['tokens']} tokens "
            f"({r['documents']} documents, window {r['max_length']}, stride {r['stride']})"
        )
    for task, metrics in (out.get("tasks") or {}).items():
        cells = ", ".join(
            f"{k} {v:.4f}" for k, v in metrics.items() if k != "sample_len" and not math.isnan(v)
        )
        print(f"{task}: {cells}")
    return 0

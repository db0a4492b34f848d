"""The ``growlm`` command line: parses, calls the library, turns typed errors into one line."""

from __future__ import annotations

import argparse
import errno
import json
import os
import sys
from collections.abc import Callable, Sequence
from typing import Any, NoReturn

from growlm.errors import GrowlmError


def _grow(args: argparse.Namespace) -> int:
    from growlm.grow import grow

    report = grow(
        args.src,
        args.out,
        args.op,
        factor=args.factor,
        layers=args.layers,
        drop=args.drop,
        num_layers=args.num_layers,
        placement=args.placement,
        block=args.block,
        copies=args.copies,
        hidden_size=args.hidden_size,
        intermediate_size=args.intermediate_size,
        num_heads=args.num_heads,
        num_kv_heads=args.num_kv_heads,
        dtype=args.dtype,
        dry_run=args.dry_run,
        check=args.check,
        force=args.force,
        seed=args.seed,
        shard_size=args.shard_size,
        steps=args.steps,
        lr=args.lr,
        data=args.data,
        seq_len=args.seq_len,
        batch_size=args.batch_size,
        progress=None if args.json else _map_progress(args.steps),
    )
    if args.json:
        print(json.dumps(report))
        return 0
    if args.dry_run:
        print("\n".join(report.pop("plan")))
    for key in (
        "op",
        "src_layers",
        "out_layers",
        "src_params",
        "out_params",
        "function_preserving",
        "steps",
        "tokens",
        "loss_first",
        "loss_last",
        "max_abs_logit_diff",
        "loss_before",
        "loss_after",
        "seconds",
    ):
        if key in report:
            print(f"{key:>20}: {report[key]}")
    if not args.dry_run:
        print(f"{'wrote':>20}: {args.out}")
    return 0


def _map_progress(steps: int | None) -> Callable[[int, float], None]:
    """Map-training progress on stderr, about ten lines per run."""
    every = max(1, (steps or 1) // 10)

    def show(step: int, loss: float) -> None:
        if (step + 1) % every == 0 or step == 0 or step + 1 == steps:
            print(f"map step {step + 1}/{steps}: loss {loss:.4f}", file=sys.stderr, flush=True)

    return show


def _ops(args: argparse.Namespace) -> int:
    from growlm.arch import FAMILIES
    from growlm.ops.registry import OPERATORS

    print("operators:")
    for op in OPERATORS:
        alias = f" (aka {', '.join(op.aliases)})" if op.aliases else ""
        status = "" if op.kind != "trains" else " [trains its map: --steps K --data PATH]"
        print(f"  {op.name:<14} {op.description}{alias}{status}")
        print(f"  {'':<14} function-preserving: {op.preserving}; {op.paper}")
    print("architectures:")
    for spec in FAMILIES:
        print(f"  {spec.name:<10} model_type {', '.join(spec.model_types)}: {spec.notes}")
    return 0


def _demo(args: argparse.Namespace) -> int:
    from growlm.demo import run_demo

    return run_demo(args)


def _positive_int(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None


class _Parser(argparse.ArgumentParser):
    """argparse that reports a bad argument as one ``error:`` line (no usage block), exit 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"error: {self.prog}: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    from growlm import __version__

    p = _Parser(prog="growlm", description=__doc__)
    p.add_argument("--version", action="version", version=f"growlm {__version__}")
    sub = p.add_subparsers(dest="command", required=True)

    g = sub.add_parser("grow", help="grow a Hugging Face checkpoint with a growth operator")
    g.add_argument("src", help="source checkpoint folder (config.json + safetensors or .bin)")
    g.add_argument("out", nargs="?", help="output folder (written atomically)")
    g.add_argument(
        "--op",
        required=True,
        help="operator, e.g. stack, interleave, layers, solar, zero-depth, "
        "random-depth, direct-width, zero-width, random-width, learn-depth, learn-width; "
        "depth+width combine with '+' (stack+direct-width, learn-depth+learn-width). "
        "`growlm ops` lists them",
    )
    g.add_argument("--factor", type=_positive_int, help="growth factor g (depth operators)")
    g.add_argument("--layers", help="explicit source layer list for --op layers, e.g. 0,1,2,1,2,3")
    g.add_argument("--drop", type=_positive_int, help="SOLAR: layers dropped at the seam")
    g.add_argument(
        "--num-layers",
        type=_positive_int,
        help="target depth for zero-depth / random-depth (instead of --factor)",
    )
    g.add_argument(
        "--placement",
        choices=("interleave", "append"),
        help="where zero-depth / random-depth put new blocks (default interleave)",
    )
    g.add_argument("--block", type=_positive_int, help="top / midas: layers in the copied block")
    g.add_argument("--copies", type=_positive_int, help="top: copies of the top block (default 1)")
    g.add_argument("--hidden-size", type=_positive_int)
    g.add_argument("--intermediate-size", type=_positive_int)
    g.add_argument("--num-heads", type=_positive_int)
    g.add_argument("--num-kv-heads", type=_positive_int)
    g.add_argument(
        "--dtype",
        choices=("float32", "bfloat16", "float16"),
        help="output dtype (default: as the source)",
    )
    g.add_argument(
        "--steps",
        type=_positive_int,
        help="learn-depth / learn-width: map-training steps (0 = the initial map: stack)",
    )
    g.add_argument("--lr", type=float, help="learn-*: learning rate of the maps (default 1e-3)")
    g.add_argument(
        "--data",
        help="learn-*: training text (file or folder of .txt, tokenized with SRC's tokenizer) "
        "or a `growlm data prepare` folder",
    )
    g.add_argument("--seq-len", type=_positive_int, help="learn-*: tokens per window (128)")
    g.add_argument("--batch-size", type=_positive_int, help="learn-*: windows per step (8)")
    g.add_argument("--dry-run", action="store_true", help="print the plan, touch no weights")
    g.add_argument(
        "--check",
        action="store_true",
        help="load both models and report max |logit diff| and loss before/after",
    )
    g.add_argument("--json", action="store_true", help="print one JSON report")
    g.add_argument("--force", action="store_true", help="replace OUT if it exists")
    g.add_argument("--seed", type=int, default=0, help="seed for random initialisation")
    g.add_argument("--shard-size", default="2GB", help="max safetensors shard size (e.g. 500MB)")
    g.set_defaults(func=_grow)

    o = sub.add_parser("ops", help="list growth operators and supported architectures")
    o.set_defaults(func=_ops)

    d = sub.add_parser(
        "demo", help="scratch vs G_stack on the embedded Shakespeare corpus (the README's job)"
    )
    d.add_argument("--out", default="runs/demo", help="output folder (finished runs are reused)")
    d.add_argument("--seed", type=int, default=0, help="seed of both runs")
    d.add_argument(
        "--scale",
        type=float,
        default=1.0,
        help="multiply every step count (0.1 for a quick look; 1.0 is the measured demo)",
    )
    d.add_argument(
        "--operators",
        action="store_true",
        help="instead: grow a small model with several operators, print the checks",
    )
    d.add_argument(
        "--control",
        action="store_true",
        help="also train the small model alone for the same FLOPs (the control growth must "
        "beat; reused when already trained)",
    )
    d.set_defaults(func=_demo)

    for extra in _plugins():
        extra(sub)
    return p


def _plugins() -> list[Callable[[Any], None]]:
    """Subcommands of other growlm modules (train, data, plan, compare, ...), each registering
    itself through ``add_parsers(subparsers)``."""
    import importlib

    out: list[Callable[[Any], None]] = []
    for module in ("growlm.train.cli", "growlm.analysis.cli"):
        try:
            out.append(importlib.import_module(module).add_parsers)
        except ImportError as e:
            if e.name != module:
                raise
    return out


def main(argv: Sequence[str] | None = None) -> int:
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args))
    except GrowlmError as e:
        return _user_error(e)
    except OSError as e:
        if e.errno not in _ENVIRONMENT_ERRNOS:
            raise
        return _user_error(_environment_error(e))
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130


# OS errors that describe the machine, not a bug: a full or read-only disk, missing permissions.
_ENVIRONMENT_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM}


def _environment_error(e: OSError) -> GrowlmError:
    from growlm.errors import DiskFull, OutputNotWritable

    where = f" {e.filename!s}" if e.filename else ""
    if e.errno in (errno.ENOSPC, errno.EDQUOT):
        return DiskFull(f"disk full writing{where}: free space, then run the same command again")
    return OutputNotWritable(
        f"cannot access{where}: {e.strerror}; fix the permissions or choose another path"
    )


def _user_error(e: GrowlmError) -> int:
    """Print a typed error as one line; the exit code is the error's."""
    print(f"error: {e}", file=sys.stderr)
    return e.exit_code


if __name__ == "__main__":
    sys.exit(main())

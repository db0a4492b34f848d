"""The ``growlm`` command line: parses, calls the library, turns typed errors into one line."""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import sys
import threading
from collections.abc import Callable, Sequence
from typing import Any, NoReturn

from growlm.argtypes import integer as _positive_int  # bounds: checked by each operator
from growlm.dtypes import SPELLINGS
from growlm.errors import GrowlmError, Terminated, os_error


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
        snr_db=args.snr_db,
        new_tokens=args.new_tokens,
        experts=args.experts,
        top_k=args.top_k,
        router_init=args.router_init,
        router_data=args.router_data,
        drop_ratio=args.drop_ratio,
        granularity=args.granularity,
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


def _scale(text: str) -> float:
    """A finite step multiplier in (0, 100]: the demo at 100x already runs for days here."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not (0 < value <= 100):  # also NaN
        raise argparse.ArgumentTypeError(f"must be in (0, 100], got {text!r}")
    return value


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
    g.add_argument(
        "src",
        help="source: checkpoint folder (config.json + safetensors or .bin; a Trainer "
        "checkpoint-N also grows its AdamW state), hub id org/name[@revision] or .gguf file",
    )
    g.add_argument("out", nargs="?", help="output folder (written atomically)")
    g.add_argument(
        "--op",
        required=True,
        help="operator, e.g. stack, interleave, layers, solar, zero-depth, "
        "random-depth, direct-width, zero-width, random-width, learn-depth, learn-width, "
        "upcycle (dense -> MoE); "
        "depth+width combine with '+' (stack+direct-width, learn-depth+learn-width). "
        "`growlm ops` lists them",
    )
    g.add_argument(
        "--factor", type=_positive_int, help="growth factor g (depth operators; clone-width)"
    )
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
    g.add_argument("--experts", type=_positive_int, help="upcycle: experts (copies of the FFN)")
    g.add_argument("--top-k", type=_positive_int, help="upcycle: experts per token")
    g.add_argument(
        "--router-init",
        choices=("zero", "random", "hidden"),
        help="upcycle: router weights small random (default), zero, or k-means of the FFN "
        "inputs on --router-data",
    )
    g.add_argument("--router-data", help="upcycle --router-init hidden: text file to route")
    g.add_argument(
        "--drop-ratio",
        type=float,
        help="upcycle: Drop-Upcycling, re-initialise this fraction of each expert's FFN units",
    )
    g.add_argument(
        "--granularity",
        type=_positive_int,
        help="upcycle: split the FFN into G fine-grained experts per copy (top-k x G)",
    )
    g.add_argument(
        "--snr-db",
        type=float,
        help="clone-width: signal-to-noise of the +eta/-eta pairs in dB (default 10; inf: none)",
    )
    g.add_argument(
        "--new-tokens",
        type=_positive_int,
        help="param-tokens: key/value parameter tokens added to every Pattention (TokenFormer)",
    )
    g.add_argument(
        "--dtype",
        choices=tuple(SPELLINGS),
        help="output dtype (default: as the source); bf16 = bfloat16, fp32 = float32, "
        "fp16 = float16",
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
    g.add_argument(
        "--seq-len",
        type=_positive_int,
        help="learn-*: tokens per window (default: 128, or the model's positions if fewer)",
    )
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
        type=_scale,
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
    for module in ("growlm.train.cli", "growlm.analysis.cli", "growlm.eval.cli"):
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
    previous = _sigterm_as_interrupt()
    try:
        return int(args.func(args))
    except GrowlmError as e:
        return _user_error(e)
    except Terminated:
        return _stopped(args, "terminated (SIGTERM)", 143)
    except KeyboardInterrupt:
        return _stopped(args, "interrupted", 130)
    except MemoryError:
        return _user_error(_out_of_memory(args, None))
    except UnicodeError as e:  # a path or a file that is not UTF-8 (a recipe, a name)
        return _user_error(_not_utf8(e))
    except OSError as e:
        return _user_error(os_error(e))
    except RuntimeError as e:  # torch reports a failed allocation as a RuntimeError
        if not _is_allocation_failure(e):
            raise
        return _user_error(_out_of_memory(args, str(e)))
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def _sigterm_as_interrupt() -> Any:
    """SIGTERM raises Terminated (a KeyboardInterrupt), so every cleanup of Ctrl-C runs too."""
    if threading.current_thread() is not threading.main_thread():
        return None

    def stop(signum: int, frame: Any) -> None:
        raise Terminated()

    return signal.signal(signal.SIGTERM, stop)


def _stopped(args: argparse.Namespace, what: str, code: int) -> int:
    hint = (
        "; run the same command with --resume to continue from the last checkpoint"
        if getattr(args, "command", None) == "train"
        else "; nothing half-written was left behind"
    )
    print(f"error: {what}{hint}", file=sys.stderr)
    return code


_ALLOCATION = ("can't allocate memory", "out of memory", "failed to allocate")


def _is_allocation_failure(e: RuntimeError) -> bool:
    text = str(e).lower()
    return any(marker in text for marker in _ALLOCATION)


def _out_of_memory(args: argparse.Namespace, message: str | None) -> GrowlmError:
    from growlm.errors import OutOfMemory

    size = ""
    if message:
        found = re.search(r"allocate (?:memory: you tried to allocate )?(\d+) bytes", message)
        if found:
            size = f" of {int(found.group(1)) / 2**30:.2f} GiB"
        else:
            found = re.search(r"allocate ([\d.]+ [KMGT]iB)", message)
            size = f" of {found.group(1)}" if found else ""
    knob = {
        "train": "lower optim.micro_batch_size (raise optim.grad_accum to keep the batch) "
        "or the model size",
        "grow": "grow less (--factor, --hidden-size) or write --dtype bfloat16",
        "eval": "lower --max-length or --batch-size",
    }.get(getattr(args, "command", ""), "use smaller inputs")
    return OutOfMemory(f"out of memory: an allocation{size} failed; {knob}")


def _not_utf8(e: UnicodeError) -> GrowlmError:
    what = "a file" if isinstance(e, UnicodeDecodeError) else "a path or name"
    return GrowlmError(f"{what} is not valid UTF-8 ({e}): rename or convert it")


def _user_error(e: GrowlmError) -> int:
    """Print a typed error as one line; the exit code is the error's."""
    print(f"error: {e}", file=sys.stderr)
    return e.exit_code


if __name__ == "__main__":
    sys.exit(main())

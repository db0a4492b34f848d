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

from growlm.argtypes import integer  # bounds: each operator parameter's declaration
from growlm.dtypes import SPELLINGS
from growlm.errors import GrowlmError, Terminated, os_error


def _grow(args: argparse.Namespace) -> int:
    from dataclasses import fields

    from growlm.grow import GrowOptions, grow
    from growlm.ops.registry import all_params

    params = {name: getattr(args, name) for name in all_params()}
    # every option but progress is a flag of the same name
    given = {f.name: getattr(args, f.name) for f in fields(GrowOptions) if f.name != "progress"}
    progress = None if args.json else _map_progress(args.steps)
    options = GrowOptions(**given, progress=progress)
    report = grow(args.src, args.out, args.op, params, options).to_json()
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
        status = " [a recipe growth stage only]" if op.recipe_only else status
        print(f"  {op.name:<14} {op.description}{alias}{status}")
        print(f"  {'':<14} function-preserving: {op.preserving}; {op.paper}")
        if op.params:
            what = "recipe keys" if op.recipe_only else "parameters"
            print(f"  {'':<14} {what}: {_param_line(op)}")
    print("architectures:")
    for spec in FAMILIES:
        print(f"  {spec.name:<10} model_type {', '.join(spec.model_types)}: {spec.notes}")
    return 0


def _param_line(op: Any) -> str:
    """``--factor G (required: an integer >= 2), --placement (default interleave), ...``
    (a recipe-only operator's by their recipe keys: ``factor N (...)``)"""
    items = []
    for p in op.params:
        name = p.name if op.recipe_only else p.flag
        what = [p.constraint.text] if p.constraint else []
        if p.name in op.required:
            what.insert(0, "required")
        if p.default is not None:
            what.append(f"default {p.default}")
        items.append(f"{name} {p.metavar or p.type.__name__.upper()} ({'; '.join(what)})")
    return ", ".join(items)


def _demo(args: argparse.Namespace) -> int:
    from growlm.demo import run_demo

    return run_demo(args)


def _add_operator_flags(g: argparse.ArgumentParser) -> None:
    """One flag per declared operator parameter (growlm.ops.registry), help from the
    declarations: what it is, for which operators, its default."""
    from growlm.ops.registry import GROW_OPERATORS, all_params

    for name, decls in all_params().items():
        kinds = {d.type for d in decls}
        assert len(kinds) == 1, (name, kinds)  # one flag cannot parse two types
        ops = [o.name for o in GROW_OPERATORS if any(p.name == name for p in o.params)]
        helps = "; ".join(dict.fromkeys(d.help for d in decls))
        default = next((d.default for d in decls if d.default is not None), None)
        extra = f" (default {default})" if default is not None else ""
        first = decls[0]
        g.add_argument(
            first.flag,
            type=integer if first.type is int else first.type,
            choices=(first.constraint.choices or None) if first.constraint else None,
            metavar=first.metavar,
            help=f"{', '.join(ops)}: {helps}{extra}",
        )


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
    from growlm.ops.registry import OPERATORS

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
        help=f"operator: {', '.join(o.name for o in OPERATORS)}; a depth and a width operator "
        "combine with '+' (stack+direct-width, learn-depth+learn-width). `growlm ops` lists "
        "them with their aliases and parameters",
    )
    _add_operator_flags(g)
    g.add_argument("--router-data", help="upcycle --router-init hidden: text file to route")
    g.add_argument(
        "--dtype",
        choices=tuple(SPELLINGS),
        help="output dtype (default: as the source); bf16 = bfloat16, fp32 = float32, "
        "fp16 = float16",
    )
    g.add_argument(
        "--data",
        help="learn-*: training text (file or folder of .txt, tokenized with SRC's tokenizer) "
        "or a `growlm data prepare` folder",
    )
    g.add_argument(
        "--seq-len",
        type=integer,
        help="learn-*: tokens per window (default: 128, or the model's positions if fewer)",
    )
    g.add_argument("--batch-size", type=integer, help="learn-*: windows per step (8)")
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
    for module in (
        "growlm.train.cli",
        "growlm.analysis.cli",
        "growlm.eval.cli",
        "growlm.models.tokenformer_convert",
    ):
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

"""Run the growlm CLI in a process forked from a pre-imported server (the crash tests' zygote):
each run starts in milliseconds instead of the seconds torch and transformers take to import,
so a test can SIGKILL and restart ``growlm train`` dozens of times. See test_crash_resume.py."""

from __future__ import annotations

import multiprocessing as mp
import os
import sys
from pathlib import Path

# imported once in the fork server; every forked run shares them ("__main__": the test runner's
# script, which a forked child would otherwise run again before its target)
PRELOAD = [
    "__main__",
    "torch",
    "transformers",
    "transformers.models.llama.modeling_llama",
    "safetensors.torch",
    "growlm.cli",
    "growlm.grow",
    "growlm.train.cli",
    "growlm.train.loop",
    "growlm.analysis.cli",
    "crash_child",
]


def context() -> mp.context.ForkServerContext:
    ctx = mp.get_context("forkserver")
    ctx.set_forkserver_preload(PRELOAD)
    return ctx


def run_cli(argv: list[str], env: dict[str, str], log: str) -> None:
    """The target of a forked run: ``growlm <argv>`` with ``env`` set, output to ``log``;
    the process exits with the command's exit code."""
    os.environ.update(env)
    fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)
    from growlm.cli import main

    code = 1
    try:
        code = main(argv)
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


def start(ctx: mp.context.ForkServerContext, argv: list[str], env: dict[str, str], log: Path):
    proc = ctx.Process(target=run_cli, args=(argv, env, str(log)), daemon=True)
    proc.start()
    return proc


def run(argv: list[str], env: dict[str, str], log: Path, timeout: float = 300) -> int | None:
    """``growlm <argv>`` forked from the server (started on first use), to its end: its exit
    code (negative: killed by that signal), or None when it ran past ``timeout`` (killed)."""
    log.parent.mkdir(parents=True, exist_ok=True)
    proc = start(context(), argv, env, log)
    proc.join(timeout)
    if proc.exitcode is None:
        proc.kill()
        proc.join()
        return None
    return proc.exitcode

"""Run the growlm CLI in a process forked from a pre-imported server (the crash tests' zygote):
each run starts in milliseconds instead of the seconds torch and transformers take to import,
so a test can SIGKILL and restart ``growlm train`` dozens of times. See test_crash_resume.py."""

from __future__ import annotations

import multiprocessing as mp
import os
import sys
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import NoReturn

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
    """The target of a forked run: ``growlm <argv>`` with ``env`` set over the server's
    environment (OMP_NUM_THREADS applied to the already imported torch), output to ``log``; the
    process exits with the command's exit code (a traceback, if any, in ``log``)."""
    os.environ.update(env)
    _child_setup(env, log)
    from growlm.cli import main

    _exit_with(lambda: main(argv))


def run_script_main(script: str, argv: list[str], env: dict[str, str], log: str) -> None:
    """The target of a forked script run: ``python <script> <argv>`` (its folder first on
    sys.path, as Python puts it) with the environment ``env`` (OMP_NUM_THREADS applied to the
    already imported torch), output to ``log``; the process exits with the script's exit
    code."""
    import runpy

    os.environ.clear()  # exactly ``env``, as subprocess.run(env=env) gives it
    os.environ.update(env)
    _child_setup(env, log)
    sys.argv = [script, *argv]
    sys.path.insert(0, str(Path(script).parent))

    def body() -> int:
        runpy.run_path(script, run_name="__main__")
        return 0

    _exit_with(body)


def _child_setup(env: dict[str, str], log: str) -> None:
    """torch's thread count from OMP_NUM_THREADS (torch read the variable when the server
    imported it), stdout and stderr to ``log``."""
    if "OMP_NUM_THREADS" in env:
        import torch

        torch.set_num_threads(int(env["OMP_NUM_THREADS"]))
    fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)


def _exit_with(body: Callable[[], int | None]) -> NoReturn:
    """Run ``body`` and end the process as Python would: its return value or SystemExit code
    (a message SystemExit printed, exit 1), a traceback printed and exit 1 on any other error."""
    code = 1
    try:
        code = body() or 0
    except SystemExit as exc:
        if exc.code is None or isinstance(exc.code, int):
            code = exc.code or 0
        else:
            print(exc.code, file=sys.stderr)
    except BaseException:
        traceback.print_exc()
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


def start(ctx: mp.context.ForkServerContext, argv: list[str], env: dict[str, str], log: Path):
    return _fork(ctx, run_cli, (argv, env, str(log)))


def _fork(ctx: mp.context.ForkServerContext, target: Callable[..., None], args: tuple):
    """``target(*args)`` in a daemon process forked from the server, started."""
    proc = ctx.Process(target=target, args=args, daemon=True)
    proc.start()
    return proc


def run(argv: list[str], env: dict[str, str], log: Path, timeout: float = 300) -> int | None:
    """``growlm <argv>`` forked from the server (started on first use), to its end: its exit
    code (negative: killed by that signal), or None when it ran past ``timeout`` (killed)."""
    log.parent.mkdir(parents=True, exist_ok=True)
    return _join(start(context(), argv, env, log), timeout)


def run_script(
    script: Path, argv: list[str], env: dict[str, str], log: Path, timeout: float = 300
) -> int | None:
    """``python <script> <argv>`` forked from the server: as ``run``, for bench/ scripts."""
    log.parent.mkdir(parents=True, exist_ok=True)
    proc = _fork(context(), run_script_main, (str(script), argv, env, str(log)))
    return _join(proc, timeout)


def _join(proc, timeout: float) -> int | None:
    proc.join(timeout)
    if proc.exitcode is None:
        proc.kill()
        proc.join()
        return None
    return proc.exitcode


def python(cmd: list[str], env: dict[str, str], log: Path, timeout: float = 300) -> tuple[int, str]:
    """What ``subprocess.run(cmd, env=env)`` does for ``cmd = [sys.executable, script, *args]``,
    forked from the server: (exit code, negative when killed, -1 past ``timeout``; the run's
    stdout and stderr together, also in ``log``)."""
    assert cmd[0] == sys.executable, cmd
    code = run_script(Path(cmd[1]), cmd[2:], env, log, timeout)
    return (-1 if code is None else code), (log.read_text() if log.exists() else "")

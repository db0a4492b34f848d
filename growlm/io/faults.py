"""Crash-test hooks: named points inside growlm's writers where a test can kill the process.

``fault_point("checkpoint.model")`` does nothing unless a test sets one of:

- ``GROWLM_TEST_KILL_AT=<point>[@<n>]``: SIGKILL this process the n-th time (default 1st) it
  reaches ``<point>`` (a name, or a prefix ending in ``*``: ``checkpoint.*@3``);
- ``GROWLM_TEST_SLOW_WRITE=<seconds>``: sleep that long at every point, which widens the windows
  in which a randomly timed kill lands inside a write;
- ``GROWLM_TEST_FAIL_AT=<point>[@<n>]``: raise ENOSPC there instead of killing, and only on the
  torchrun rank ``GROWLM_TEST_FAIL_RANK`` when that is set (a full disk on one node).

tests/test_crash_resume.py uses them to kill ``growlm train`` and ``growlm grow`` between the
files of a checkpoint and the tensors of a shard; docs/reliability.md lists the points.
"""

from __future__ import annotations

import errno
import os
import signal
import time

KILL_AT = "GROWLM_TEST_KILL_AT"
SLOW_WRITE = "GROWLM_TEST_SLOW_WRITE"
FAIL_AT = "GROWLM_TEST_FAIL_AT"
FAIL_RANK = "GROWLM_TEST_FAIL_RANK"

_reached: dict[str, int] = {}


def fault_point(name: str) -> None:
    """Mark a point inside a write (see the module docstring); free when no test hook is set."""
    slow = os.environ.get(SLOW_WRITE)
    if slow:
        time.sleep(float(slow))
    if _hit(name, KILL_AT):
        os.kill(os.getpid(), signal.SIGKILL)
    rank = os.environ.get(FAIL_RANK)
    if (rank is None or rank == os.environ.get("RANK", "0")) and _hit(name, FAIL_AT):
        raise OSError(errno.ENOSPC, "No space left on device (injected)", name)


def _hit(name: str, variable: str) -> bool:
    """Whether ``name`` is the n-th arrival at the point the hook ``variable`` names."""
    spec = os.environ.get(variable)
    if not spec:
        return False
    point, _, nth = spec.partition("@")
    matches = name.startswith(point[:-1]) if point.endswith("*") else name == point
    if not matches:
        return False
    key = f"{variable}={spec}"
    _reached[key] = _reached.get(key, 0) + 1
    return _reached[key] == int(nth or 1)

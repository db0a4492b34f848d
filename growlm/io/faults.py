"""Crash-test hooks: named points inside growlm's writers where a test can kill the process.

``fault_point("checkpoint.model")`` does nothing unless a test sets one of:

- ``GROWLM_TEST_KILL_AT=<point>[@<n>]``: SIGKILL this process the n-th time (default 1st) it
  reaches ``<point>`` (a name, or a prefix ending in ``*``: ``checkpoint.*@3``);
- ``GROWLM_TEST_SLOW_WRITE=<seconds>``: sleep that long at every point, which widens the windows
  in which a randomly timed kill lands inside a write.

tests/test_crash_resume.py uses them to kill ``growlm train`` and ``growlm grow`` between the
files of a checkpoint and the tensors of a shard; docs/reliability.md lists the points.
"""

from __future__ import annotations

import os
import signal
import time

KILL_AT = "GROWLM_TEST_KILL_AT"
SLOW_WRITE = "GROWLM_TEST_SLOW_WRITE"

_reached: dict[str, int] = {}


def fault_point(name: str) -> None:
    """Mark a point inside a write (see the module docstring); free when no test hook is set."""
    slow = os.environ.get(SLOW_WRITE)
    if slow:
        time.sleep(float(slow))
    spec = os.environ.get(KILL_AT)
    if not spec:
        return
    point, _, nth = spec.partition("@")
    matches = name.startswith(point[:-1]) if point.endswith("*") else name == point
    if not matches:
        return
    _reached[point] = _reached.get(point, 0) + 1
    if _reached[point] == int(nth or 1):
        os.kill(os.getpid(), signal.SIGKILL)

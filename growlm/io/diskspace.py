"""Refuse to start a write that obviously cannot fit: free space (``shutil.disk_usage``) against
an estimate of what the command will write, checked before any work starts."""

from __future__ import annotations

import shutil
from pathlib import Path

from growlm.errors import DiskFull

FP32_BYTES = 4


def checkpoint_bytes(n_params: int) -> int:
    """A resumable training checkpoint: fp32 weights plus AdamW's two fp32 moments."""
    return n_params * FP32_BYTES * 3


def free_bytes(path: Path) -> int:
    """Free bytes on the file system that holds ``path`` (or its nearest existing parent)."""
    probe = Path(path).absolute()
    while not probe.exists() and probe.parent != probe:
        probe = probe.parent
    return int(shutil.disk_usage(probe).free)


def require_free(path: Path, need: int, what: str, fix: str) -> None:
    """DiskFull, naming ``what`` and ``fix``, when ``path``'s disk has less than ``need`` free."""
    free = free_bytes(path)
    if need > free:
        raise DiskFull(
            f"not enough disk for {what} in {str(path)!r}: needs about {human_bytes(need)}, "
            f"{human_bytes(free)} free; {fix}"
        )


def human_bytes(n: int) -> str:
    for unit, size in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= size:
            return f"{n / size:.2f} {unit}"
    return f"{n} B"

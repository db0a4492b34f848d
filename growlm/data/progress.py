"""Progress of long data passes on stderr: bytes done, bytes/s and an ETA (tqdm), shown only
when asked for and stderr is a terminal, so logs and tests stay clean."""

from __future__ import annotations

import sys
from typing import Any


def byte_bar(desc: str, total: int | None, enabled: bool) -> Any:
    """A tqdm bar counting source bytes (a context manager with ``update(n)``); off unless
    ``enabled``, and then shown only on a terminal."""
    from tqdm import tqdm

    return tqdm(
        desc=desc,
        total=total,
        unit="B",
        unit_scale=True,
        unit_divisor=1024,
        file=sys.stderr,
        disable=None if enabled else True,
        dynamic_ncols=True,
        mininterval=0.5,
    )

"""Names that growlm turns into files or folders (stage names, sweep size names) must stay one
plain path component inside the output folder: no separators, no ``..``, nothing hidden."""

from __future__ import annotations

import re

SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,99}")


def is_safe_name(name: object) -> bool:
    """True for a name usable as one folder or file name (``base``, ``s-1.5b``)."""
    return isinstance(name, str) and SAFE_NAME.fullmatch(name) is not None and ".." not in name

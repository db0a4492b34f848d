"""Where growlm caches prepared corpora: ``$GROWLM_CACHE`` or ``~/.cache/growlm``."""

from __future__ import annotations

import os
from pathlib import Path


def cache_root() -> Path:
    """The cache folder (created on first use); override with the GROWLM_CACHE variable."""
    root = Path(os.environ.get("GROWLM_CACHE") or Path.home() / ".cache" / "growlm")
    root.mkdir(parents=True, exist_ok=True)
    return root

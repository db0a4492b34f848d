"""The start and the write of a bench result file, shared by the scripts that time one thing and
write one JSON (bench/attention_cpu.py, moe_step.py, step_interleaved.py, train_throughput.py;
bench/ is on sys.path when a script runs)."""

from __future__ import annotations

import datetime as dt
import json
import sys
from pathlib import Path
from typing import Any

from growlm.io.atomic import write_text_atomic


def header(launcher: str = "python") -> dict[str, str]:
    """``command``: this script as it was run, after ``launcher``; ``date``: now, UTC, to the
    second."""
    return {
        "command": f"{launcher} " + " ".join([str(Path(sys.argv[0])), *sys.argv[1:]]),
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
    }


def write_result(path: Path, result: dict[str, Any]) -> None:
    """``result`` as indented JSON at ``path`` (its folder made if missing), written atomically:
    an interrupted benchmark leaves the previous results file whole."""
    path.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(path, json.dumps(result, indent=2) + "\n")

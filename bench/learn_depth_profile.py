"""Where the time of a small learned growth goes: learn-depth on SmolLM2-135M (30 -> 60 layers),
--steps 3 --batch-size 1 --seq-len 32, under cProfile, on two data sizes: the packaged 750-byte
sample text and a ~20 MB text file (the Shakespeare fixture repeated), since the text is
tokenized before training. Writes bench/results/learn_depth_profile.json (wall seconds and the
top functions by cumulative time of each).

    python bench/learn_depth_profile.py [--out bench/results/learn_depth_profile.json]
"""

from __future__ import annotations

import argparse
import cProfile
import io
import json
import os
import platform
import pstats
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).parents[1]
sys.path.insert(0, str(REPO / "tests"))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", type=Path, default=REPO / "bench/results/learn_depth_profile.json")
    ap.add_argument("--top", type=int, default=25)
    args = ap.parse_args()
    import torch
    from real_model import smollm2_dir

    import growlm

    src = smollm2_dir()
    result: dict = {
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "git_revision": subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True
        ).stdout.strip(),
        "machine": f"{platform.machine()} {torch.get_num_threads()} threads, {platform.platform()}",
        "runs": [],
    }
    with tempfile.TemporaryDirectory() as tmp:
        big = Path(tmp) / "corpus-20mb.txt"
        text = "".join(
            p.read_text() for p in sorted((REPO / "tests/fixtures/shakespeare").iterdir())
        )
        with big.open("w") as f:
            for _ in range(max(1, 20_000_000 // len(text))):
                f.write(text)
        for data in (REPO / "growlm" / "assets" / "sample.txt", big):
            result["runs"].append(_profile(growlm, src, data, args.top))
            print(f"{data.name}: wall {result['runs'][-1]['wall_s']} s", flush=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"-> {args.out}")


def _profile(growlm, src: Path, data: Path, top: int) -> dict:
    command = (
        f"growlm grow {src} OUT --op learn-depth --factor 2 --steps 3 --batch-size 1 "
        f"--seq-len 32 --data {data}"
    )
    with tempfile.TemporaryDirectory() as tmp:
        prof = cProfile.Profile()
        t0 = time.perf_counter()
        prof.enable()
        from growlm.grow import GrowOptions

        options = GrowOptions(batch_size=1, seq_len=32, data=data)
        params = {"factor": 2, "steps": 3}
        report = growlm.grow(src, Path(tmp) / "out", "learn-depth", params, options).to_json()
        prof.disable()
        wall = time.perf_counter() - t0
    text = io.StringIO()
    stats = pstats.Stats(prof, stream=text).sort_stats("cumulative")
    stats.print_stats(top)
    print(text.getvalue())
    rows = []
    for (file, line, fn), (_cc, nc, tt, ct, _callers) in stats.stats.items():  # type: ignore[attr-defined]
        rows.append({"function": f"{Path(file).name}:{line}:{fn}", "calls": nc,
                     "tottime": round(tt, 3), "cumtime": round(ct, 3)})  # fmt: skip
    rows.sort(key=lambda r: -r["cumtime"])
    return {
        "command": command,
        "data_bytes": data.stat().st_size,
        "wall_s": round(wall, 2),
        "load_average_1min_after": round(os.getloadavg()[0], 2),  # the machine is shared
        "map_training_loss": [report.get("loss_first"), report.get("loss_last")],
        "top_cumulative": rows[:top],
    }


if __name__ == "__main__":
    main()

"""Benchmark: ``growlm data prepare`` throughput (MB/s) and peak RSS against corpus size.

Corpora are real text repeated to size (growlm/assets/sample.txt and the Python standard
library's .py sources, joined and repeated; never random bytes), in two layouts: one single file,
and many files of about 1 MB. Arms, each its own subprocess, one after the other:

* prepare:  ``growlm data prepare SRC --out OUT --vocab-size 1024`` (trains a BPE, then encodes)
* encode:   the same with ``--tokenizer`` (the BPE of the prepare arm): encoding alone
* anchor:   the ``tokenizers`` library's own ``encode_batch_fast`` over the same text already in
            memory (the first ``ANCHOR_MB`` of it, in 2 MB batches of 256 KB pieces: the rate does
            not depend on the corpus size, since the text repeats), timed around the calls
            alone, run right after each encode arm so both see the same load

``encode / anchor`` (per wall second and per CPU second) is growlm's cost over the bare
tokenizer: process start, reading, cutting, routing, writing, hashing.
Peak RSS comes from GNU time's ``%M`` (the largest resident set of the command), CPU seconds
from its ``%U + %S``. The machine is
shared with other jobs (load average recorded), so MB/s figures are lower bounds.

    .venv/bin/python bench/data_prepare.py                       # 10, 100, 200 MB
    .venv/bin/python bench/data_prepare.py --sizes 10 100 1000   # the 1 GB arm too

Inputs and outputs live in bench/work/data_prepare/ (git-ignored); results go to
bench/results/data_prepare.json.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import shutil
import subprocess
import sys
import sysconfig
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
WORK = ROOT / "bench" / "work" / "data_prepare"
RESULTS = ROOT / "bench" / "results" / "data_prepare.json"
TIME = "/usr/bin/time"  # GNU time, for peak RSS
MB = 1_000_000
VOCAB = 1024
MANY_FILE_BYTES = 1 * MB
ANCHOR_MB = 20

ANCHOR = """
import sys, time
from tokenizers import Tokenizer
sys.path.insert(0, sys.argv[4])
from growlm.data.chunks import split_text
tok = Tokenizer.from_file(sys.argv[1])
text = open(sys.argv[2], encoding="utf-8").read(int(sys.argv[3]))
pieces = split_text(text, 1 << 18)
batches = [pieces[i : i + 8] for i in range(0, len(pieces), 8)]
start, cpu = time.perf_counter(), time.process_time()
tokens = 0
for batch in batches:
    tokens += sum(len(e.ids) for e in tok.encode_batch_fast(batch, add_special_tokens=False))
seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
print(seconds, cpu, tokens, len(text.encode("utf-8")))
"""


def base_text() -> str:
    """sample.txt and the standard library's .py sources, in a fixed order."""
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    parts = [(ROOT / "growlm" / "assets" / "sample.txt").read_text()]
    parts += [p.read_text(errors="replace") for p in sorted(stdlib.glob("*.py"))]
    return "\n".join(parts)


def make_corpus(size_mb: int) -> dict[str, Path]:
    """``single.txt`` of ``size_mb`` MB and ``many/`` with the same text in ~1 MB files."""
    folder = WORK / f"corpus-{size_mb}mb"
    single, many = folder / "single.txt", folder / "many"
    if (folder / ".complete").exists():
        return {"single": single, "many": many}
    if folder.exists():
        shutil.rmtree(folder)
    many.mkdir(parents=True)
    blob = base_text().encode("utf-8")
    target, written, index = size_mb * MB, 0, 0
    with single.open("wb") as out:
        while written < target:
            part = blob[: target - written]
            out.write(part)
            for start in range(0, len(part), MANY_FILE_BYTES):
                (many / f"{index:06d}.txt").write_bytes(part[start : start + MANY_FILE_BYTES])
                index += 1
            written += len(part)
    (folder / ".complete").write_text("ok\n")
    return {"single": single, "many": many}


def timed(cmd: list[str], env: dict[str, str]) -> dict[str, Any]:
    """Wall seconds and peak RSS (GNU time) of one command; stops on failure."""
    stats = WORK / "time.txt"
    start = time.perf_counter()
    proc = subprocess.run(
        [TIME, "-f", "%e %M %U %S", "-o", str(stats), *cmd],
        env=env,
        capture_output=True,
        text=True,
    )
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        sys.exit(f"failed: {' '.join(cmd)}\n{proc.stderr[-2000:]}")
    _, rss_kb, user, system = stats.read_text().split()[-4:]
    return {
        "seconds": round(wall, 2),
        "cpu_seconds": round(float(user) + float(system), 2),
        "peak_rss_mb": round(int(rss_kb) / 1024, 1),
    }


def run_size(size_mb: int, python: str, env: dict[str, str]) -> list[dict[str, Any]]:
    corpus = make_corpus(size_mb)
    rows = []
    for layout, src in corpus.items():
        nbytes = sum(p.stat().st_size for p in ([src] if src.is_file() else src.iterdir()))
        out = WORK / f"out-{size_mb}mb-{layout}"
        base = [python, "-m", "growlm.cli", "data", "prepare", str(src), "--force"]
        arms = {
            "prepare": [*base, "--out", str(out), "--vocab-size", str(VOCAB)],
            "encode": [*base, "--out", f"{out}-enc", "--tokenizer", str(out / "tokenizer")],
        }
        for arm, cmd in arms.items():
            result = timed(cmd, env)
            manifest = json.loads((Path(cmd[cmd.index("--out") + 1]) / "manifest.json").read_text())
            tokens = sum(s["tokens"] for s in manifest["splits"].values())
            row = {
                "size_mb": size_mb,
                "layout": layout,
                "arm": arm,
                "bytes": nbytes,
                "tokens": tokens,
                **result,
                "mb_per_s": round(nbytes / MB / result["seconds"], 2),
                "mb_per_cpu_s": round(nbytes / MB / result["cpu_seconds"], 2),
                "load_avg_1m": round(os.getloadavg()[0], 2),
            }
            if arm == "encode":  # the bare library on the same text, right after: same load
                bare = anchor(python, env, out / "tokenizer" / "tokenizer.json", corpus["single"])
                row["anchor"] = bare
                row["vs_anchor"] = round(row["mb_per_s"] / bare["mb_per_s"], 2)
                row["vs_anchor_cpu"] = round(row["mb_per_cpu_s"] / bare["mb_per_cpu_s"], 2)
            print(json.dumps(row), flush=True)
            rows.append(row)
        shutil.rmtree(f"{out}-enc")
    return rows


def anchor(python: str, env: dict[str, str], tokenizer: Path, text: Path) -> dict[str, Any]:
    chars = ANCHOR_MB * MB
    cmd = [python, "-c", ANCHOR, str(tokenizer), str(text), str(chars), str(ROOT)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True)
    seconds, cpu, tokens, nbytes = proc.stdout.split()
    row = {
        "arm": "anchor",
        "bytes": int(nbytes),
        "tokens": int(tokens),
        "seconds": round(float(seconds), 2),
        "cpu_seconds": round(float(cpu), 2),
        "mb_per_s": round(int(nbytes) / MB / float(seconds), 2),
        "mb_per_cpu_s": round(int(nbytes) / MB / float(cpu), 2),
        "load_avg_1m": round(os.getloadavg()[0], 2),
    }
    return row


def machine() -> dict[str, Any]:
    mem = Path("/proc/meminfo").read_text().splitlines()[0].split()[1]
    cpu = [x for x in Path("/proc/cpuinfo").read_text().splitlines() if x.startswith("model name")]
    return {
        "cpus": os.cpu_count(),
        "cpu": cpu[0].split(":", 1)[1].strip() if cpu else platform.processor(),
        "memory_gib": round(int(mem) / 1024 / 1024, 1),
        "python": platform.python_version(),
        "shared": "other agents' jobs ran at the same time: MB/s are lower bounds",
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10, 100, 200], help="MB")
    parser.add_argument("--results", type=Path, default=RESULTS, help="where the JSON goes")
    args = parser.parse_args()
    WORK.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1"}
    rows: list[dict[str, Any]] = []
    for size in args.sizes:
        rows += run_size(size, sys.executable, env)
    rev = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True)
    result = {
        "command": "python bench/data_prepare.py " + " ".join(sys.argv[1:]),
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "git_rev": rev.stdout.strip(),
        "machine": machine(),
        "vocab_size": VOCAB,
        "rows": rows,
        "targets": {"peak_rss_mb_below": 1024, "mb_per_s_at_least": 5},
    }
    args.results.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.results}")


if __name__ == "__main__":
    main()

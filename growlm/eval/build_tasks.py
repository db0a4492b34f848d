"""Regenerate the offline task set in growlm/assets/eval from public-domain Shakespeare
(tests/fixtures/shakespeare, Project Gutenberg): ``python -m growlm.eval.build_tasks SRC_DIR``.

- growlm_nextline: multiple choice; after three lines of a speech, pick the true next line
  among four (three distractors drawn from elsewhere in the play). Seeded, deterministic.
- growlm_passages: rolling log-likelihood of whole passages (perplexity, bits per byte).
These are smoke tasks for the lm-eval bridge, not benchmarks (the tiny recipe trains on the
same plays)."""

from __future__ import annotations

import json
import random
import sys
from pathlib import Path

ASSETS = Path(__file__).resolve().parent.parent / "assets" / "eval"


def speeches(text: str) -> list[list[str]]:
    """Blocks of verse lines separated by blank lines (speaker lines dropped)."""
    blocks: list[list[str]] = []
    cur: list[str] = []
    for line in text.splitlines():
        line = line.strip()
        if not line:
            if cur:
                blocks.append(cur)
            cur = []
        elif not (line.isupper() and line.endswith(".")):
            cur.append(line)
    return blocks + ([cur] if cur else [])


def nextline_items(text: str, count: int, seed: int = 0) -> list[dict[str, object]]:
    rng = random.Random(seed)
    lines = [ln for b in speeches(text) for ln in b if 20 <= len(ln) <= 70]
    candidates = []
    for block in speeches(text):
        for i in range(3, len(block)):
            ctx, nxt = block[i - 3 : i], block[i]
            if 20 <= len(nxt) <= 70 and all(len(c) >= 10 for c in ctx):
                candidates.append((ctx, nxt))
    items = []
    for ctx, nxt in rng.sample(candidates, count):
        distractors = rng.sample([ln for ln in lines if ln != nxt], 3)
        choices = [*distractors, nxt]
        rng.shuffle(choices)
        items.append({"context": "\n".join(ctx), "choices": choices, "label": choices.index(nxt)})
    return items


def passages(text: str, count: int, size: int = 800) -> list[dict[str, str]]:
    paras = [p.strip() for p in text.split("\n\n") if len(p.strip()) > 40]
    out, cur = [], ""
    for p in paras[len(paras) // 3 :]:  # skip the Gutenberg header and the first act
        cur = f"{cur}\n\n{p}" if cur else p
        if len(cur) >= size:
            out.append({"text": cur})
            cur = ""
        if len(out) == count:
            break
    return out


def main(src: str) -> None:
    root = Path(src)
    ASSETS.mkdir(parents=True, exist_ok=True)
    with (ASSETS / "growlm_nextline.jsonl").open("w") as fh:
        for item in nextline_items((root / "macbeth.txt").read_text(), 40):
            fh.write(json.dumps(item) + "\n")
    with (ASSETS / "growlm_passages.jsonl").open("w") as fh:
        for passage in passages((root / "tempest.txt").read_text(), 8):
            fh.write(json.dumps(passage) + "\n")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "tests/fixtures/shakespeare")

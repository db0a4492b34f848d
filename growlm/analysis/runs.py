"""Read a ``growlm train`` run folder: its validation curve against FLOPs, tokens and wall-clock
time, and where its stages (growth points) begin."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from growlm.analysis.errors import NoValidationLoss, RunNotFound

METRICS = "metrics.jsonl"
AXES = ("flops", "tokens", "time")


@dataclass
class Run:
    """Evaluation points of one run (arrays of equal length, in step order).

    ``best`` is the running minimum of ``val_loss``: a later, noisier evaluation never undoes a
    loss the run already reached (the checkpoint that reached it exists)."""

    name: str
    path: Path
    flops: np.ndarray
    tokens: np.ndarray
    time: np.ndarray
    val_loss: np.ndarray
    stage: list[str]
    boundaries: list[tuple[str, float, float, float]]  # (stage, flops, tokens, time) at start
    stage_rate: dict[str, float] | None = None  # FLOPs per token of each stage (6 N)

    @property
    def best(self) -> np.ndarray:
        return np.minimum.accumulate(self.val_loss)

    def axis(self, name: str) -> np.ndarray:
        return {"flops": self.flops, "tokens": self.tokens, "time": self.time}[name]

    def final_stage_mask(self) -> np.ndarray:
        return np.array([s == self.stage[-1] for s in self.stage])

    def target_mask(self) -> np.ndarray:
        """Evaluations of the target-size model: every stage whose FLOPs per token (6 N) is the
        last stage's (within 1%). The small model's evaluations before growth are excluded;
        its FLOPs stay counted in ``flops``. Without per-stage rates: the last stage only."""
        rates = self.stage_rate or {}
        last = rates.get(self.stage[-1])
        if not last:
            return self.final_stage_mask()
        return np.array([abs(rates.get(s, 0.0) - last) <= 0.01 * last for s in self.stage])


def load_run(path: Path | str, name: str | None = None, attn_flops: bool = False) -> Run:
    """Load RUN_DIR/metrics.jsonl (or a metrics.jsonl path). ``attn_flops`` adds the attention
    FLOPs the trainer logs separately to the 6 N D count."""
    p = Path(path)
    file = p if p.is_file() else p / METRICS
    if not file.is_file():
        what = "does not exist" if not p.exists() else f"has no {METRICS}"
        raise RunNotFound(f"run {str(p)!r} {what} (expected a `growlm train --out` folder)")
    records = []
    lines = file.read_text(encoding="utf-8", errors="replace").splitlines()
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            if n == len(lines):
                continue  # a torn last line of a run still being written
            raise RunNotFound(
                f"{file}: line {n} is not JSON (expected a `growlm train` metrics.jsonl)"
            ) from None
        if not isinstance(record, dict):
            raise RunNotFound(
                f"{file}: line {n} is not a JSON object (expected a `growlm train` metrics.jsonl)"
            )
        if record.get("val_loss") is not None:
            for key in ("val_loss", "flops", "tokens"):
                value = record.get(key)
                if isinstance(value, bool) or not isinstance(value, int | float):
                    raise RunNotFound(
                        f"{file}: line {n}: {key!r} is missing or not a number (expected a "
                        "`growlm train` metrics.jsonl)"
                    )
        records.append(record)
    boundaries: list[tuple[str, float, float, float]] = []
    prev: dict | None = None
    rows = []
    diverged = 0  # evaluations with a NaN/inf loss are left out (a diverged run)
    for r in records:
        if "stage" in r and (prev is None or r["stage"] != prev.get("stage")):
            start = prev or {}
            boundaries.append(
                (
                    str(r["stage"]),
                    _flops(start, attn_flops),
                    float(start.get("tokens", 0.0)),
                    float(start.get("elapsed", 0.0)),
                )
            )
        prev = r
        if r.get("val_loss") is not None:
            if math.isfinite(float(r["val_loss"])):
                rows.append(r)
            else:
                diverged += 1
    if not rows and diverged:
        raise NoValidationLoss(
            f"run {str(p)!r} has no finite val_loss ({diverged} NaN/inf evaluations): it diverged; "
            "compare runs that trained"
        )
    if not rows:
        raise NoValidationLoss(
            f"run {str(p)!r} logged no val_loss (set run.eval_every or keep a validation split)"
        )
    return Run(
        name=name or (p.name if p.is_dir() else p.parent.name),
        path=p,
        flops=np.array([_flops(r, attn_flops) for r in rows], dtype=float),
        tokens=np.array([float(r["tokens"]) for r in rows]),
        time=np.array([float(r.get("elapsed", np.nan)) for r in rows]),
        val_loss=np.array([float(r["val_loss"]) for r in rows]),
        stage=[str(r.get("stage", "")) for r in rows],
        boundaries=boundaries,
        stage_rate=_stage_rates(records, attn_flops),
    )


def _stage_rates(records: list[dict], attn: bool) -> dict[str, float]:
    """FLOPs per token of each stage, from its first and last records (with the previous
    stage's last record as its start)."""
    spans: dict[str, list[float]] = {}
    prev: dict | None = None
    for r in records:
        if "stage" not in r or not isinstance(r.get("tokens"), int | float):
            continue
        name = str(r["stage"])
        if name not in spans:
            start = prev or {"flops": 0.0, "tokens": 0.0, "attn_flops": 0.0}
            spans[name] = [_flops(start, attn), float(start.get("tokens", 0.0)), 0.0, 0.0]
        spans[name][2], spans[name][3] = _flops(r, attn), float(r["tokens"])
        prev = r
    return {name: (f1 - f0) / (t1 - t0) for name, (f0, t0, f1, t1) in spans.items() if t1 > t0}


def _flops(r: dict, attn: bool) -> float:
    return float(r.get("flops", 0.0)) + (float(r.get("attn_flops", 0.0)) if attn else 0.0)


def unique_names(paths: list[Path]) -> list[str]:
    """Folder names, made unique with their parent's name where two collide."""
    names = [p.name or str(p) for p in paths]
    names = [
        f"{p.parent.name}/{n}" if names.count(n) > 1 else n
        for p, n in zip(paths, names, strict=True)
    ]
    seen: dict[str, int] = {}
    out = []
    for n in names:
        seen[n] = seen.get(n, 0) + 1
        out.append(n if seen[n] == 1 else f"{n}#{seen[n]}")
    return out

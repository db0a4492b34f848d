"""Run logging: OUT/metrics.jsonl (one JSON object per step), a progress bar with ETA on stderr,
and TensorBoard / W&B, each imported only when the recipe asks for it. Rank 0 alone logs."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from tqdm import tqdm

from growlm.errors import InvalidRecipe
from growlm.io.atomic import write_text_atomic

METRICS_FILE = "metrics.jsonl"


class MetricsLogger:
    """Appends step records; on resume, drops records past the checkpoint being resumed so the
    file reads as one uninterrupted run."""

    def __init__(
        self,
        out_dir: Path,
        enabled: bool,
        total_steps: int,
        start_step: int,
        progress: bool,
        tensorboard: bool = False,
        wandb_project: str | None = None,
        run_name: str = "run",
        config: dict[str, Any] | None = None,
    ):
        self.enabled = enabled
        self.path = out_dir / METRICS_FILE
        self._tb: Any = None
        self._wandb: Any = None
        self._bar: Any = None
        if not enabled:
            return
        truncate_after(self.path, start_step)
        self._file = self.path.open("a", encoding="utf-8")
        if progress:
            self._bar = tqdm(
                total=total_steps,
                initial=start_step,
                file=sys.stderr,
                unit="step",
                dynamic_ncols=True,
                desc=run_name,
            )
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:
                raise InvalidRecipe(
                    "run.tensorboard: needs the tensorboard package (pip install tensorboard)"
                ) from None
            self._tb = SummaryWriter(str(out_dir / "tensorboard"))
        if wandb_project:
            try:
                import wandb
            except ImportError:
                raise InvalidRecipe("run.wandb_project: needs wandb (pip install wandb)") from None
            self._wandb = wandb.init(
                project=wandb_project, name=run_name, config=config or {}, resume="allow"
            )

    def log(self, record: dict[str, Any]) -> None:
        if not self.enabled:
            return
        self._file.write(json.dumps(record) + "\n")
        self._file.flush()
        step = int(record["step"])
        if self._bar is not None:
            self._bar.update(step - self._bar.n)
            loss = record.get("loss")
            shown = {
                "stage": record.get("stage"),
                "loss": "skipped" if loss is None else f"{loss:.3f}",
            }
            if "val_loss" in record:
                shown["val"] = f"{record['val_loss']:.3f}"
            self._bar.set_postfix(shown, refresh=False)
        numbers = {k: v for k, v in record.items() if isinstance(v, int | float) and k != "step"}
        if self._tb is not None:
            for key, value in numbers.items():
                self._tb.add_scalar(key, value, step)
        if self._wandb is not None:
            self._wandb.log(numbers, step=step)

    def close(self) -> None:
        if not self.enabled:
            return
        self._file.close()
        if self._bar is not None:
            self._bar.close()
        if self._tb is not None:
            self._tb.close()
        if self._wandb is not None:
            self._wandb.finish()


def truncate_after(path: Path, step: int) -> None:
    """Keep only records with ``step <= step`` (and drop a torn last line)."""
    if not path.exists():
        return
    kept = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if int(record.get("step", 0)) <= step:
            kept.append(line)
    write_text_atomic(path, "".join(line + "\n" for line in kept))


def read_metrics(path: Path) -> list[dict[str, Any]]:
    """All records of a metrics.jsonl file."""
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]

"""Downstream tasks through lm-evaluation-harness's Python API on an already loaded model
(``HFLM(pretrained=model, tokenizer=tokenizer)``), so a checkpoint growlm wrote is scored
as-is. Local task YAMLs (the shipped offline set, or ``--include`` folders) work without hub
access; the paper's seven tasks need the hub (their datasets download on first use)."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Any

import yaml

from growlm.eval.errors import EvalError

OFFLINE_TASKS_DIR = Path(__file__).resolve().parent.parent / "assets" / "eval"
OFFLINE_TASKS = ("growlm_nextline", "growlm_passages")

# The paper's tasks (Du et al. 2024, Table/§3) -> lm-eval task names, and the metric it reports.
PAPER_TASKS = {
    "lambada": ("lambada_openai", "acc"),
    "arc-c": ("arc_challenge", "acc_norm"),
    "arc-e": ("arc_easy", "acc"),
    "logiqa": ("logiqa", "acc_norm"),
    "piqa": ("piqa", "acc"),
    "sciq": ("sciq", "acc"),
    "winogrande": ("winogrande", "acc"),
}
ALIASES = {"paper": [t for t, _ in PAPER_TASKS.values()], "offline": list(OFFLINE_TASKS)}


def resolve_tasks(names: list[str]) -> list[str]:
    """Expand ``paper`` / ``offline`` and the paper's short names into lm-eval task names."""
    out: list[str] = []
    for name in names:
        for item in filter(None, name.split(",")):
            if item in ALIASES:
                out.extend(ALIASES[item])
            elif item in PAPER_TASKS:
                out.append(PAPER_TASKS[item][0])
            else:
                out.append(item)
    return list(dict.fromkeys(out))


def _localised(include: list[Path], into: Path) -> list[str]:
    """Copy task folders into ``into`` with relative ``data_files`` made absolute (lm-eval
    resolves them against the working directory otherwise)."""
    dirs = []
    for n, src in enumerate(include):
        if not src.is_dir():
            raise EvalError(f"--include {str(src)!r} is not a folder of task YAMLs")
        dst = into / f"tasks{n}"
        dst.mkdir()
        for f in src.iterdir():
            if f.suffix not in (".yaml", ".yml"):
                continue
            text = f.read_text()
            try:
                data = yaml.safe_load(text)
            except yaml.YAMLError:
                shutil.copy(f, dst / f.name)  # custom tags (!function): copy verbatim
                continue
            files = ((data or {}).get("dataset_kwargs") or {}).get("data_files")
            if isinstance(files, dict):
                data["dataset_kwargs"]["data_files"] = {
                    k: str((src / v).resolve()) if not Path(v).is_absolute() else v
                    for k, v in files.items()
                }
                text = yaml.safe_dump(data, sort_keys=False)
            (dst / f.name).write_text(text)
        dirs.append(str(dst))
    return dirs


def run_tasks(
    model: Any,
    tokenizer: Any,
    tasks: list[str],
    include: list[Path] | None = None,
    limit: int | None = None,
    num_fewshot: int | None = None,
    batch_size: int = 8,
    max_length: int | None = None,
) -> dict[str, dict[str, float]]:
    """{task: {metric: value}} from lm-eval's ``simple_evaluate`` on the loaded model."""
    try:
        from lm_eval import simple_evaluate
        from lm_eval.models.huggingface import HFLM
        from lm_eval.tasks import TaskManager
    except ImportError:
        raise EvalError('--tasks needs lm-evaluation-harness: pip install "lm-eval[hf]"') from None
    names = resolve_tasks(tasks)
    with tempfile.TemporaryDirectory(prefix="growlm-tasks-") as tmp:
        paths = _localised([OFFLINE_TASKS_DIR, *(include or [])], Path(tmp))
        manager = TaskManager(include_path=paths)
        unknown = [t for t in names if t not in manager.all_tasks]
        if unknown:
            raise EvalError(
                f"unknown task(s) {', '.join(unknown)}; offline: {', '.join(OFFLINE_TASKS)}; "
                f"paper: {', '.join(PAPER_TASKS)} (needs hub access)"
            )
        lm = HFLM(
            pretrained=model,
            tokenizer=tokenizer,
            batch_size=batch_size,
            max_length=(
                max_length
                if max_length is not None
                else getattr(model.config, "max_position_embeddings", None)
            ),
        )
        results = simple_evaluate(
            model=lm,
            tasks=names,
            task_manager=manager,
            limit=limit,
            num_fewshot=num_fewshot,
            log_samples=False,
            bootstrap_iters=0,
        )
    return {
        task: {
            k.split(",")[0]: float(v)
            for k, v in metrics.items()
            if isinstance(v, int | float) and not k.startswith("alias") and "stderr" not in k
        }
        for task, metrics in (results or {}).get("results", {}).items()
    }

"""PNG plots of validation curves (matplotlib, Agg backend: no display needed): loss against
FLOPs (log x), tokens and wall-clock, with growth points marked, and speedup against loss."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from growlm.analysis.errors import AnalysisError
from growlm.analysis.runs import Run

_LABELS = {"flops": "FLOPs (cumulative)", "tokens": "tokens", "time": "wall-clock (s)"}


def _pyplot() -> Any:
    try:
        import matplotlib
    except ImportError:
        raise AnalysisError(
            "plots need matplotlib (pip install matplotlib), or --no-plots"
        ) from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _legend(ax: Any) -> None:
    """A legend when something is labelled (a run that never reaches the reference loss has no
    speedup line; matplotlib would warn about an empty legend)."""
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8)


def plot_comparison(runs: list[Run], summary: dict[str, Any], out_dir: Path) -> list[str]:
    """Write loss_vs_{flops,tokens,time}.png and speedup_vs_loss.png; return their names."""
    plt = _pyplot()
    names = []
    for axis in ("flops", "tokens", "time"):
        fig, ax = plt.subplots(figsize=(7, 4.5))
        for i, run in enumerate(runs):
            color = f"C{i}"
            x = run.axis(axis)
            ax.plot(x, run.val_loss, "o", ms=3, alpha=0.35, color=color)
            ax.plot(x, run.best, "-", color=color, label=run.name)
            for stage, *starts in run.boundaries[1:]:
                at = starts[("flops", "tokens", "time").index(axis)]
                ax.axvline(at, color=color, ls=":", lw=1)
                ax.annotate(
                    f"grow→{stage}",
                    (at, ax.get_ylim()[1]),
                    fontsize=7,
                    color=color,
                    rotation=90,
                    va="top",
                    ha="right",
                )
        ax.axhline(summary["reference_final_loss"], color="gray", lw=0.8, ls="--")
        if axis == "flops":
            ax.set_xscale("log")
        ax.set_xlabel(_LABELS[axis])
        ax.set_ylabel("validation loss (line: running min)")
        _legend(ax)
        ax.grid(alpha=0.3)
        fig.tight_layout()
        name = f"loss_vs_{axis}.png"
        fig.savefig(out_dir / name, dpi=110)
        plt.close(fig)
        names.append(name)
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for i, run in enumerate(runs[1:], 1):
        rows = summary["runs"][run.name]["levels"]
        pts = [
            (r["loss"], r["speedup"]["flops"]) for r in rows if r["speedup"]["flops"] is not None
        ]
        if pts:
            ax.plot(*zip(*pts, strict=True), "-o", ms=3, color=f"C{i}", label=run.name)
    ax.axhline(0.0, color="gray", lw=0.8)
    ax.invert_xaxis()
    ax.set_xlabel("validation loss (lower: later in training)")
    ax.set_ylabel(f"FLOPs speedup vs {runs[0].name}")
    ax.grid(alpha=0.3)
    _legend(ax)
    fig.tight_layout()
    fig.savefig(out_dir / "speedup_vs_loss.png", dpi=110)
    plt.close(fig)
    names.append("speedup_vs_loss.png")
    return names

"""Markdown reports of comparisons and sweeps (tables plus the plots beside them)."""

from __future__ import annotations

from typing import Any


def _pct(x: float | None) -> str:
    return "never reached" if x is None else f"{100 * x:+.1f}%"


def comparison_report(summary: dict[str, Any], images: list[str]) -> str:
    """The comparison as Markdown: headline table, per-level table per run, plots."""
    ref = summary["reference"]
    target = summary["reference_final_loss"]
    lines = [
        "# Equal-loss speedup",
        "",
        f"Reference: `{ref}` (final running-min validation loss {target:.4f}).",
        "",
        f"Definition: {summary['definition']}.",
        "",
        "| run | final val loss | FLOPs speedup | token speedup | time speedup | fit-extrapolated"
        " FLOPs speedup (90% CI) |",
        "|---|---|---|---|---|---|",
    ]
    for name, run in summary["runs"].items():
        if name == ref:
            continue
        ext = run.get("speedup_flops_fit") or {}
        ext_s = "n/a" if ext.get("speedup") is None else f"{100 * ext['speedup']:+.1f}%"
        if ext.get("interval"):
            lo, hi = ext["interval"]
            ext_s += f" [{100 * lo:+.1f}%, {100 * hi:+.1f}%]"
        lines.append(
            f"| {name} | {run['final_val_loss']:.4f} | {_pct(run['speedup_flops'])} | "
            f"{_pct(run['speedup_tokens'])} | {_pct(run['speedup_time'])} | {ext_s} |"
        )
    for name, run in summary["runs"].items():
        if name == ref or not run["levels"]:
            continue
        lines += ["", f"## `{name}` at shared loss levels", "", "| loss | FLOPs | tokens | time |"]
        lines.append("|---|---|---|---|")
        rows = run["levels"]
        for r in rows[:: max(1, len(rows) // 8)]:
            s = r["speedup"]
            lines.append(
                f"| {r['loss']:.4f} | {_pct(s['flops'])} | {_pct(s['tokens'])} | "
                f"{_pct(s['time'])} |"
            )
        if run.get("note"):
            lines += ["", f"Note: {run['note']}."]
    if images:
        lines += ["", "## Plots", ""] + [f"![{i}]({i})" for i in images]
    return "\n".join(lines) + "\n"

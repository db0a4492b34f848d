"""Markdown report of a sweep: every run with its loss and speedups, the best growth timing per
size and budget, and the fitted guideline."""

from __future__ import annotations

from typing import Any


def _pct(x: float | None) -> str:
    return "not reached" if x is None else f"{100 * x:+.1f}%"


def sweep_report(results: dict[str, Any]) -> str:
    lines = [
        "# Growth sweep",
        "",
        "Speedups are at the group's scratch final loss (see each group's comparison report).",
        "",
        "| run | N | C (FLOPs) | g | d (tokens) | best val loss | FLOPs speedup | time speedup |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, r in results["runs"].items():
        lines.append(
            f"| {name} | {r['params']:.4g} | {r['compute']:.4g} | {r['growth_factor'] or '-'} | "
            f"{r['growth_tokens'] or '-'} | {r['best_val_loss']:.4f} | "
            f"{_pct(r['speedup_flops'])} | {_pct(r['speedup_time'])} |"
        )
    lines += ["", "Comparisons: " + ", ".join(f"[{g}]({p})" for g, p in results["groups"].items())]
    gl = results.get("guideline") or {}
    lines += ["", "## Guideline fit", ""]
    if "error" in gl:
        lines.append(f"No fit: {gl['error']}.")
    else:
        extra = gl.get("extra", {})
        lines.append(
            f"log10(d) = {gl['alpha']:.4g} log10(N) + {gl['beta']:.4g} / log10(C) "
            f"{gl['gamma']:+.4g}; best growth factor g = {gl['growth_factor']}; fitted "
            f"{', '.join(extra.get('fitted', []))}, fixed at the paper's values: "
            f"{', '.join(extra.get('fixed', {})) or 'none'}. Written to guideline.json "
            "(`growlm plan --guideline guideline.json`)."
        )
        lines += ["", "| N | C | best g | best d | loss |", "|---|---|---|---|---|"]
        for b in extra.get("best", []):
            lines.append(
                f"| {b['params']:.4g} | {b['compute']:.4g} | {b['growth_factor']} | "
                f"{b['growth_tokens']:.4g} | {b['loss']:.4f} |"
            )
    return "\n".join(lines) + "\n"

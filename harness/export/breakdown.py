"""Markdown sections for the import breakdown and the plots of report.md."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from harness.breakdown import DEFAULT_TOP, IMPORTTIME_DIR, diff_phase, top_modules
from harness.export.markdown import escape_markdown, render_table

MAX_DIFF_ROWS = 15
MAX_PACKAGES = 8


def format_ms(microseconds: float) -> str:
    return f"{microseconds / 1000:.1f} ms"


def render_breakdown(
    breakdown: Mapping[str, Any], baseline: str, top: int = DEFAULT_TOP
) -> list[str]:
    """Return the breakdown section: per phase the top modules and the differences."""
    iterations = breakdown.get("iterations", 0)
    lines = [
        "## Import breakdown",
        "",
        f"From {iterations} separate iterations per build run with "
        "`python3 -X importtime`, after the timed ones, so the timings above "
        "carry none of its overhead. Times are medians of each module's own "
        "import time (self) and with its imports (cumulative). These "
        "containers run with a whole core instead of the run's quota, so the "
        "times are import costs, not throttling waits. Raw logs, "
        f"readable by tuna: `{IMPORTTIME_DIR}/<build>-<iteration>.log`.",
    ]
    builds: Mapping[str, Any] = breakdown.get("builds", {})
    for phase in breakdown.get("phases", []):
        lines += ["", f"### {escape_markdown(phase)}"]
        for label, phases in builds.items():
            lines += render_phase_top(label, phases.get(phase, {}), top)
        lines += render_phase_diffs(builds, baseline, phase)
    return lines


def render_phase_top(label: str, phase: Mapping[str, Any], top: int) -> list[str]:
    packages = sorted(phase.get("packages", {}).items(), key=lambda item: -item[1])
    package_text = ", ".join(
        f"{escape_markdown(name)} {format_ms(self_us)}"
        for name, self_us in packages[:MAX_PACKAGES]
    )
    lines = [
        "",
        f"Build {escape_markdown(label)}: {len(phase.get('modules', {}))} modules, "
        f"{format_ms(phase.get('self_us', 0))} in total. "
        f"By package: {package_text or 'none'}.",
    ]
    rows = [
        [escape_markdown(name), format_ms(self_us), format_ms(cumulative_us)]
        for name, self_us, cumulative_us in top_modules(phase, top)
    ]
    if rows:
        lines += ["", *render_table(["module", "self", "cumulative"], rows, 1)]
    return lines


def render_phase_diffs(
    builds: Mapping[str, Any], baseline: str, phase: str
) -> list[str]:
    if baseline not in builds:
        return []
    lines: list[str] = []
    base_phase = builds[baseline].get(phase, {})
    for label, phases in builds.items():
        if label == baseline:
            continue
        diff = diff_phase(base_phase, phases.get(phase, {}))
        lines += render_diff(f"only {label} imports", diff["added"])
        lines += render_diff(f"only {baseline} imports", diff["removed"])
    return lines


def render_diff(title: str, modules: Mapping[str, float]) -> list[str]:
    if not modules:
        return ["", f"Modules {escape_markdown(title)} here: none."]
    ranked = sorted(modules.items(), key=lambda item: -item[1])
    total = sum(modules.values())
    names = ", ".join(
        f"{escape_markdown(name)} ({format_ms(self_us)})"
        for name, self_us in ranked[:MAX_DIFF_ROWS]
    )
    more = len(ranked) - MAX_DIFF_ROWS
    suffix = f", and {more} more" if more > 0 else ""
    return [
        "",
        f"Modules {escape_markdown(title)} here: {len(modules)}, "
        f"{format_ms(total)} self time: {names}{suffix}.",
    ]


def render_plot_links(plots: Sequence[tuple[str, str]]) -> list[str]:
    """Return the plots section: one image link per (title, file name)."""
    if not plots:
        return []
    lines = ["## Plots"]
    for title, filename in plots:
        lines += ["", f"![{escape_markdown(title)}]({filename})"]
    return lines

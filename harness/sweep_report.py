"""The Markdown matrix of a sweep: one row per cell, one column per phase."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from harness.export.markdown import escape_markdown, render_table


def format_cell_time(entry: Mapping[str, Any] | None) -> str:
    """Format a median and its CI, for example ``0.512 s [0.49, 0.55]``."""
    if not entry:
        return "n/a"
    low, high = entry["ci_s"]
    median = f"{entry['median_s']:.3f} s"
    if low is None or high is None or math.isnan(low) or math.isnan(high):
        return median
    return f"{median} [{low:.3f}, {high:.3f}]"


def describe_page_cache(cell: Mapping[str, Any]) -> str:
    if cell["page_cache"] != "dropped":
        return cell["page_cache"]
    if cell["page_cache_dropped"]:
        return "dropped"
    errors = cell.get("page_cache_errors") or ["unknown cause"]
    return f"NOT dropped ({errors[0]})"


def render_sweep_markdown(matrix: Mapping[str, Any], plot: str | None) -> str:
    """Return sweep.md: the matrix of wall-time medians with 95% CIs."""
    # The page cache column below states whether a drop really happened.
    axes = [axis["name"] for axis in matrix["axes"] if axis["name"] != "page-cache"]
    columns = [
        f"{build}: {phase}" for phase in matrix["phases"] for build in matrix["builds"]
    ]
    rows = [render_row(cell, axes, matrix) for cell in matrix["cells"]]
    header = ["cell", *axes, "page cache", "ran on", *columns]
    lines = [
        f"# Sweep of scenario {escape_markdown(matrix['scenario'])}",
        "",
        f"Median wall time per phase over {matrix['iterations']} iterations, "
        "with the 95% bootstrap CI of the median in brackets. Each cell is a run "
        "of its own under `cells/`; the iterations of all cells were interleaved.",
        "",
        *render_table([escape_markdown(text) for text in header], rows, len(axes) + 3),
    ]
    unavailable = [cell for cell in matrix["cells"] if cell.get("unavailable")]
    for cell in unavailable:
        lines += [
            "",
            f"{cell['id']} unavailable: {escape_markdown(cell['unavailable'])}",
        ]
    if plot:
        lines += ["", f"![Phase medians per cell]({plot})"]
    return "\n".join(lines) + "\n"


def render_row(
    cell: Mapping[str, Any], axes: list[str], matrix: Mapping[str, Any]
) -> list[str]:
    settings = cell["settings"]
    values = [escape_markdown(settings.get(axis) or "unset") for axis in axes]
    if cell.get("unavailable"):
        times = ["unavailable"] * (len(matrix["phases"]) * len(matrix["builds"]))
    else:
        times = [
            format_cell_time(cell["phases"].get(phase, {}).get(build))
            for phase in matrix["phases"]
            for build in matrix["builds"]
        ]
    return [
        cell["id"],
        *values,
        escape_markdown(describe_page_cache(cell)),
        escape_markdown(cell.get("ran_on", "n/a")),
        *times,
    ]

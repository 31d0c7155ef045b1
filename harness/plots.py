"""PNG plots written next to report.md, drawn with matplotlib's Agg backend.

Each plot function takes the data it draws and a target path, and returns the
path, or None when there is nothing to draw (for example no breakdown).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from harness.analysis import records_to_frame, scenario_phase_budgets  # noqa: E402
from harness.breakdown import top_modules  # noqa: E402
from harness.models import IterationRecord  # noqa: E402

logger = logging.getLogger(__name__)

DPI = 110
TOP_PLOTTED = 12
JITTER = 0.08
# File name of each run plot, in report order, and its title in report.md.
PLOT_TITLES = {
    "phases.png": "Wall time per phase",
    "budgets.png": "Phases stacked against budgets",
    "cpu-wall.png": "CPU time against wall time",
    "breakdown.png": "Import breakdown",
}


def write_run_plots(
    directory: Path,
    manifest: Mapping[str, Any],
    records: Sequence[IterationRecord],
    breakdown: Mapping[str, Any] | None,
) -> list[tuple[str, str]]:
    """Write every plot of a run; return (title, file name) of those written."""
    phase_budgets = scenario_phase_budgets(manifest)
    frame = records_to_frame(records, phase_budgets=phase_budgets)
    frame = frame[frame["phase"] != "total"]
    # Builds in the manifest's order (baseline first), not in run order.
    order = {build["label"]: i for i, build in enumerate(manifest.get("builds", []))}
    frame = frame.sort_values("build", key=lambda c: c.map(order), kind="stable")
    budgets = manifest.get("scenario", {}).get("budgets", {})
    written = []
    plots: list[tuple[str, Callable[..., Path | None], tuple[Any, ...]]] = [
        ("phases.png", plot_phase_distributions, (frame,)),
        ("budgets.png", plot_budget_stacks, (frame, phase_budgets, budgets)),
        ("cpu-wall.png", plot_cpu_wall, (frame,)),
        ("breakdown.png", plot_breakdown, (breakdown,)),
    ]
    for filename, function, arguments in plots:
        try:
            path = function(*arguments, directory / filename)
        except OSError as error:
            # A full disk must not cost the report: the plots are optional.
            logger.warning("could not write %s: %s", directory / filename, error)
            (directory / filename).unlink(missing_ok=True)
            continue
        if path is not None:
            written.append((PLOT_TITLES[filename], filename))
    return written


def list_plots(directory: Path) -> list[tuple[str, str]]:
    """Return (title, file name) of the run plots present in ``directory``."""
    return [
        (title, filename)
        for filename, title in PLOT_TITLES.items()
        if (directory / filename).is_file()
    ]


def save(figure: Figure, path: Path) -> Path:
    try:
        figure.tight_layout()
        figure.savefig(path, dpi=DPI)
    finally:
        plt.close(figure)
    logger.info("wrote %s", path)
    return path


def plot_phase_distributions(frame: pd.DataFrame, path: Path) -> Path | None:
    """Draw, per phase, each build's wall times as points over a box plot."""
    if frame.empty:
        return None
    phases = list(dict.fromkeys(frame["phase"]))
    builds = list(dict.fromkeys(frame["build"]))
    figure, axes = plt.subplots(
        1, len(phases), figsize=(3.2 * len(phases) + 1, 4), squeeze=False
    )
    rng = np.random.default_rng(0)
    for axis, phase in zip(axes[0], phases, strict=True):
        samples = [
            frame[(frame["phase"] == phase) & (frame["build"] == build)]["wall_s"]
            for build in builds
        ]
        axis.boxplot(samples, widths=0.5, showfliers=False)
        for index, values in enumerate(samples, start=1):
            offsets = rng.uniform(-JITTER, JITTER, len(values))
            axis.plot(index + offsets, values, "o", alpha=0.6, markersize=4)
        axis.set_xticks(range(1, len(builds) + 1), builds, rotation=20)
        axis.set_title(phase)
        axis.set_ylabel("wall time (s)")
        axis.set_ylim(bottom=0)
    figure.suptitle("Wall time per phase and build (each point is one container)")
    return save(figure, path)


def plot_budget_stacks(
    frame: pd.DataFrame,
    phase_budgets: Mapping[str, str],
    budgets: Mapping[str, float],
    path: Path,
) -> Path | None:
    """Draw, per budget, each build's phase medians stacked, with the budget line."""
    if frame.empty or not phase_budgets:
        return None
    builds = list(dict.fromkeys(frame["build"]))
    names = list(dict.fromkeys(phase_budgets.values()))
    figure, axes = plt.subplots(
        1, len(names), figsize=(2.2 * len(builds) * len(names) + 2, 4), squeeze=False
    )
    for axis, budget in zip(axes[0], names, strict=True):
        bottoms = np.zeros(len(builds))
        phases = [p for p, b in phase_budgets.items() if b == budget]
        for phase in phases:
            medians = np.array(
                [median_of(frame, build, phase) for build in builds], dtype=float
            )
            axis.bar(builds, medians, bottom=bottoms, label=phase, width=0.5)
            bottoms += np.nan_to_num(medians)
        limit = budgets.get(budget)
        if limit is not None:
            axis.axhline(
                limit, color="red", linestyle="--", label=f"budget {limit:g} s"
            )
        axis.set_title(f"budget {budget!r}")
        axis.set_ylabel("median wall time (s)")
        axis.legend(fontsize="small")
    figure.suptitle("Phase medians stacked per build against each budget")
    return save(figure, path)


def median_of(frame: pd.DataFrame, build: str, phase: str) -> float:
    values = frame[(frame["build"] == build) & (frame["phase"] == phase)]["wall_s"]
    return float(values.median()) if len(values) else float("nan")


def plot_cpu_wall(frame: pd.DataFrame, path: Path) -> Path | None:
    """Draw CPU time against wall time, one marker per phase and colour per build."""
    if frame.empty:
        return None
    figure, axis = plt.subplots(figsize=(6.5, 5))
    markers = "os^Dvx*"
    phases = list(dict.fromkeys(frame["phase"]))
    for build, group in frame.groupby("build", sort=False):
        color = None
        for index, phase in enumerate(phases):
            rows = group[group["phase"] == phase]
            points = axis.plot(
                rows["cpu_s"],
                rows["wall_s"],
                markers[index % len(markers)],
                color=color,
                alpha=0.7,
                label=f"{build}: {phase}",
            )
            color = points[0].get_color()
    top = float(max(frame["wall_s"].max(), frame["cpu_s"].max()))
    axis.plot([0, top], [0, top], color="grey", linewidth=0.8, label="wall = CPU")
    axis.set_xlabel("CPU time (s)")
    axis.set_ylabel("wall time (s)")
    axis.set_title("CPU against wall time per phase (above the line: waiting)")
    axis.legend(fontsize="small")
    return save(figure, path)


def plot_breakdown(breakdown: Mapping[str, Any] | None, path: Path) -> Path | None:
    """Draw per phase the costliest modules' self times as horizontal bars."""
    if not breakdown or not breakdown.get("builds"):
        return None
    phases = breakdown["phases"]
    builds: Mapping[str, Any] = breakdown["builds"]
    figure, axes = plt.subplots(
        len(phases),
        1,
        figsize=(8, 0.32 * TOP_PLOTTED * len(builds) * len(phases) + 2),
        squeeze=False,
    )
    for axis, phase in zip(axes[:, 0], phases, strict=True):
        draw_breakdown_phase(axis, builds, phase)
    figure.suptitle("Costliest imports per phase (median self time)")
    return save(figure, path)


def draw_breakdown_phase(axis: Any, builds: Mapping[str, Any], phase: str) -> None:
    labels: list[str] = []
    values: list[float] = []
    colors: list[str] = []
    palette = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for index, (build, phases) in enumerate(builds.items()):
        for module, self_us, _ in top_modules(phases.get(phase, {}), TOP_PLOTTED):
            labels.append(f"{build}: {module}")
            values.append(self_us / 1000)
            colors.append(palette[index % len(palette)])
    if not values:
        axis.text(0.5, 0.5, "no modules imported", ha="center", va="center")
        axis.set_axis_off()
        axis.set_title(phase)
        return
    positions = np.arange(len(values))
    axis.barh(positions, values, color=colors)
    axis.set_yticks(positions, labels, fontsize="small")
    axis.invert_yaxis()
    axis.set_xlabel("self import time (ms)")
    axis.set_title(phase)


def plot_sweep_matrix(matrix: Mapping[str, Any], path: Path) -> Path | None:
    """Draw per phase each cell's median wall time with its CI as error bars."""
    cells = [cell for cell in matrix["cells"] if cell["phases"]]
    if not cells:
        return None
    phases = matrix["phases"]
    figure, axes = plt.subplots(
        len(phases),
        1,
        figsize=(max(6, 1.1 * len(cells) + 3), 3 * len(phases)),
        squeeze=False,
    )
    positions = np.arange(len(cells))
    builds = matrix["builds"]
    tick_labels = [label_cell(cell, matrix) for cell in cells]
    for axis, phase in zip(axes[:, 0], phases, strict=True):
        for index, build in enumerate(builds):
            draw_sweep_series(axis, cells, phase, build, positions, index, len(builds))
        axis.set_xticks(positions, tick_labels, fontsize="small")
        axis.set_ylabel("median wall time (s)")
        axis.set_ylim(bottom=0)
        axis.set_title(phase)
        axis.legend(fontsize="small")
    figure.suptitle(f"Sweep of {matrix['scenario']}: medians with 95% CI")
    return save(figure, path)


def label_cell(cell: Mapping[str, Any], matrix: Mapping[str, Any]) -> str:
    """Return a cell's settings on the axes with more than one value, one a line."""
    varying = [axis["name"] for axis in matrix["axes"] if len(axis["values"]) > 1]
    settings = cell["settings"]
    lines = [f"{name}={settings.get(name) or 'unset'}" for name in varying]
    return "\n".join(lines) or cell["label"]


def draw_sweep_series(
    axis: Any,
    cells: Sequence[Mapping[str, Any]],
    phase: str,
    build: str,
    positions: np.ndarray,
    index: int,
    count: int,
) -> None:
    medians, lows, highs = [], [], []
    for cell in cells:
        entry = cell["phases"].get(phase, {}).get(build)
        median = entry["median_s"] if entry else float("nan")
        low, high = entry["ci_s"] if entry else (median, median)
        medians.append(median)
        lows.append(median - low if low is not None else 0.0)
        highs.append(high - median if high is not None else 0.0)
    offset = (index - (count - 1) / 2) * 0.15
    errors = np.nan_to_num(np.array([lows, highs], dtype=float))
    axis.errorbar(
        positions + offset, medians, yerr=errors, fmt="o", capsize=4, label=build
    )

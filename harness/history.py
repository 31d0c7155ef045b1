"""History of runs: an SQLite index under the results root, queries and plots.

``<results root>/index.sqlite`` has one row per run, build and phase with the
medians and their confidence intervals. ``pipeline.finish_run`` adds each run
as it finishes. ``reindex`` rebuilds the index from the run directories, which
remain the source of truth.

A build series is one build label's rows in order of start time. A step change
is flagged between two consecutive runs of a series when the confidence
intervals of the two medians do not overlap AND the median changed by more
than a threshold (10% by default) relative to the earlier run.
"""

from __future__ import annotations

import contextlib
import logging
import math
import sqlite3
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness.analysis import Metric, Summary
from harness.errors import InvalidInput

logger = logging.getLogger(__name__)

INDEX_NAME = "index.sqlite"
# Version of the index schema, stored as SQLite's user_version. An index of
# another version is dropped and rebuilt from the run directories.
INDEX_SCHEMA = 2
DEFAULT_STEP_THRESHOLD = 0.10

SCHEMA = """
CREATE TABLE IF NOT EXISTS phase_results (
    run_id TEXT NOT NULL,
    started_at TEXT NOT NULL,
    scenario TEXT NOT NULL,
    build TEXT NOT NULL,
    spec TEXT,
    version TEXT,
    commit_sha TEXT,
    phase TEXT NOT NULL,
    n INTEGER NOT NULL,
    wall_median REAL,
    wall_ci_low REAL,
    wall_ci_high REAL,
    cpu_median REAL,
    cpu_ci_low REAL,
    cpu_ci_high REAL,
    status TEXT NOT NULL,
    limits TEXT NOT NULL DEFAULT '',
    PRIMARY KEY (run_id, build, phase)
)
"""
COLUMNS = (
    "run_id",
    "started_at",
    "scenario",
    "build",
    "spec",
    "version",
    "commit_sha",
    "phase",
    "n",
    "wall_median",
    "wall_ci_low",
    "wall_ci_high",
    "cpu_median",
    "cpu_ci_low",
    "cpu_ci_high",
    "status",
    "limits",
)


@dataclass(frozen=True)
class HistoryPoint:
    """One build's phase in one run: the median of a metric and its CI, seconds."""

    run_id: str
    started_at: str
    scenario: str
    build: str
    spec: str | None
    version: str | None
    commit: str | None
    phase: str
    n: int
    median: float
    ci_low: float
    ci_high: float
    status: str
    # The run's CPU and memory limits, such as "cpus 0.1" or "lambda-128":
    # runs with different limits form different series.
    limits: str = ""


@dataclass(frozen=True)
class StepChange:
    """A change between two consecutive runs of a series that exceeds the noise."""

    before: HistoryPoint
    after: HistoryPoint

    @property
    def relative(self) -> float:
        return self.after.median / self.before.median - 1


def index_path(results_root: Path) -> Path:
    return results_root / INDEX_NAME


@contextlib.contextmanager
def open_index(results_root: Path) -> Iterator[sqlite3.Connection]:
    """Open (creating if needed) the index and commit when the block succeeds."""
    results_root.mkdir(parents=True, exist_ok=True)
    connection = sqlite3.connect(index_path(results_root))
    try:
        version = connection.execute("PRAGMA user_version").fetchone()[0]
        if version not in (0, INDEX_SCHEMA):
            logger.warning("index schema %d is unknown, so it is recreated", version)
            connection.execute("DROP TABLE IF EXISTS phase_results")
        connection.execute(SCHEMA)
        connection.execute(f"PRAGMA user_version = {INDEX_SCHEMA}")
        with connection:
            yield connection
    finally:
        connection.close()


def finite(value: float | None) -> float | None:
    return value if value is not None and math.isfinite(value) else None


def build_details(manifest: Mapping[str, Any], label: str) -> Mapping[str, Any]:
    for build in manifest.get("builds", []):
        if build.get("label") == label:
            return build
    return {}


def summary_rows(manifest: Mapping[str, Any], summary: Summary) -> list[tuple]:
    """Return one index row per (build, phase) of the summary."""
    rows = []
    scenario = (manifest.get("scenario") or {}).get("name") or ""
    for phase in summary.phase_summaries:
        build = build_details(manifest, phase.build)
        rows.append(
            (
                summary.run_id,
                manifest.get("started_at") or "",
                scenario,
                phase.build,
                (build.get("spec") or {}).get("raw"),
                build.get("version"),
                build.get("commit"),
                phase.phase,
                phase.n,
                finite(phase.wall.median),
                finite(phase.wall.median_ci.low),
                finite(phase.wall.median_ci.high),
                finite(phase.cpu.median),
                finite(phase.cpu.median_ci.low),
                finite(phase.cpu.median_ci.high),
                manifest.get("status") or "complete",
                describe_limits(manifest.get("limits") or {}),
            )
        )
    return rows


def describe_limits(limits: Mapping[str, Any]) -> str:
    """Return a run's limits in a few words: its profile, or --cpus and the rest."""
    if limits.get("profile"):
        return str(limits["profile"])
    parts = [f"cpus {limits.get('cpus', 0.1):g}"]
    if limits.get("init_cpus") is not None:
        parts.append(f"init {limits['init_cpus']:g}")
    if limits.get("cpu_period_us", 100_000) != 100_000:
        parts.append(f"period {limits['cpu_period_us']} us")
    if limits.get("memory_bytes") is not None:
        parts.append(f"memory {limits['memory_bytes'] / 2**20:g} MiB")
    return ", ".join(parts)


def index_run(results_root: Path, manifest: Mapping[str, Any], summary: Summary) -> int:
    """Replace the run's rows in the index; return how many rows were written."""
    rows = summary_rows(manifest, summary)
    placeholders = ", ".join("?" for _ in COLUMNS)
    with open_index(results_root) as connection:
        connection.execute(
            "DELETE FROM phase_results WHERE run_id = ?", (summary.run_id,)
        )
        connection.executemany(
            f"INSERT INTO phase_results ({', '.join(COLUMNS)}) VALUES ({placeholders})",
            rows,
        )
    return len(rows)


def index_run_safely(
    results_root: Path, manifest: Mapping[str, Any], summary: Summary
) -> None:
    """Index a finished run; log a failure, because the run's files are complete."""
    try:
        count = index_run(results_root, manifest, summary)
    except (sqlite3.Error, OSError) as error:
        logger.warning(
            "could not add run %s to %s: %s (rebuild it with "
            "`coldstart history --reindex`)",
            summary.run_id,
            index_path(results_root),
            error,
        )
        return
    logger.debug("indexed %d rows of run %s", count, summary.run_id)


def reindex(results_root: Path) -> tuple[int, int]:
    """Rebuild the index from every run directory and return (runs, rows) indexed.

    A directory that is not a readable run is skipped with a warning.
    """
    from harness.report import build_report

    if not results_root.is_dir():
        raise InvalidInput(f"results directory not found: {results_root}")
    with open_index(results_root) as connection:
        connection.execute("DELETE FROM phase_results")
    runs = rows = 0
    for path in sorted(p for p in results_root.iterdir() if p.is_dir()):
        if not (path / "manifest.json").is_file():
            continue
        try:
            manifest, _, summary = build_report(path)
        except InvalidInput as error:
            logger.warning("skipping %s: %s", path, error)
            continue
        rows += index_run(results_root, manifest, summary)
        runs += 1
    return runs, rows


# --- queries -----------------------------------------------------------------


@dataclass(frozen=True)
class HistoryQuery:
    """Filters and metric of a ``query_history`` call; a None filter matches all."""

    scenario: str | None = None
    phase: str = "total"
    build: str | None = None
    spec_contains: str | None = None
    metric: Metric = "wall"


def query_history(results_root: Path, query: HistoryQuery) -> list[HistoryPoint]:
    """Return the selected rows, oldest run first, for the query's metric."""
    if not index_path(results_root).is_file():
        raise InvalidInput(
            f"no run index at {index_path(results_root)}: run `coldstart run` "
            "first, or `coldstart history --reindex` to build it from the runs"
        )
    conditions, values = ["phase = ?"], [query.phase]
    if query.scenario is not None:
        conditions.append("scenario = ?")
        values.append(query.scenario)
    if query.build is not None:
        conditions.append("build = ?")
        values.append(query.build)
    if query.spec_contains is not None:
        conditions.append("instr(spec, ?) > 0")
        values.append(query.spec_contains)
    metric = "wall" if query.metric == "wall" else "cpu"
    sql = (
        "SELECT run_id, started_at, scenario, build, spec, version, commit_sha, "
        f"phase, n, {metric}_median, {metric}_ci_low, {metric}_ci_high, status, "
        "limits "
        f"FROM phase_results WHERE {' AND '.join(conditions)} "
        f"AND {metric}_median IS NOT NULL ORDER BY started_at, run_id, build"
    )
    with open_index(results_root) as connection:
        rows = connection.execute(sql, values).fetchall()
    return [point_from_row(row) for row in rows]


def point_from_row(row: Sequence[Any]) -> HistoryPoint:
    low, high = row[10], row[11]
    return HistoryPoint(
        run_id=row[0],
        started_at=row[1],
        scenario=row[2],
        build=row[3],
        spec=row[4],
        version=row[5],
        commit=row[6],
        phase=row[7],
        n=row[8],
        median=row[9],
        ci_low=low if low is not None else math.nan,
        ci_high=high if high is not None else math.nan,
        status=row[12],
        limits=row[13],
    )


def group_series(
    points: Sequence[HistoryPoint],
) -> dict[tuple[str, str], list[HistoryPoint]]:
    """Group points by build label and limits, keeping the order of start time.

    A change of --cpus or --profile changes the medians by itself, so runs with
    other limits start another series instead of showing as a step.
    """
    series: dict[tuple[str, str], list[HistoryPoint]] = {}
    for point in points:
        series.setdefault((point.build, point.limits), []).append(point)
    return series


def intervals_overlap(before: HistoryPoint, after: HistoryPoint) -> bool:
    """Return whether the CIs overlap; an undefined CI counts as overlapping."""
    bounds = (before.ci_low, before.ci_high, after.ci_low, after.ci_high)
    if not all(math.isfinite(bound) for bound in bounds):
        return True
    return before.ci_low <= after.ci_high and after.ci_low <= before.ci_high


def find_step_changes(
    points: Sequence[HistoryPoint], threshold: float = DEFAULT_STEP_THRESHOLD
) -> list[StepChange]:
    """Return each consecutive pair in a series whose change exceeds the noise."""
    changes = []
    for series in group_series(points).values():
        for before, after in zip(series, series[1:], strict=False):
            # One iteration gives a median without a real CI.
            if min(before.n, after.n) < 2:
                continue
            if before.median <= 0 or intervals_overlap(before, after):
                continue
            step = StepChange(before, after)
            if abs(step.relative) > threshold:
                changes.append(step)
    return changes


# --- output ------------------------------------------------------------------


def describe_step(change: StepChange) -> str:
    """Describe a step change in one line: series, runs, medians and change."""
    before, after = change.before, change.after
    return (
        f"step change in {after.build} / {after.phase}: {before.median:.3f} s in run "
        f"{before.run_id} -> {after.median:.3f} s in run {after.run_id} "
        f"({change.relative:+.1%}, CIs do not overlap)"
    )


def describe_build_point(point: HistoryPoint) -> str:
    text = point.version or ""
    if point.commit:
        text += f" {point.commit[:12]}"
    return text.strip() or (point.spec or "")


def history_table(
    points: Sequence[HistoryPoint], changes: Sequence[StepChange], query: HistoryQuery
) -> Any:
    """Return a rich Table: one row per point, grouped by series, steps flagged."""
    from rich.table import Table
    from rich.text import Text

    flagged = {(c.after.run_id, c.after.build): c for c in changes}
    table = Table(
        title=f"{query.phase}: median {query.metric} time per run",
        title_justify="left",
    )
    for name in ("build", "limits", "run", "started", "version", "n"):
        table.add_column(name, justify="right" if name == "n" else "left")
    for name in ("median", "CI", "change"):
        table.add_column(name, justify="right")
    table.add_column("step")
    for series in group_series(points).values():
        previous = None
        for point in series:
            step = flagged.get((point.run_id, point.build))
            table.add_row(
                *(Text(cell) for cell in history_cells(point, previous, step))
            )
            previous = point
    return table


def render_history_text(table: Any) -> str:
    """Render the table as plain text at the report's fixed width."""
    import io

    from rich.console import Console

    from harness.export.table import RENDER_WIDTH

    console = Console(
        file=io.StringIO(), record=True, width=RENDER_WIDTH, color_system=None
    )
    console.print(table)
    return console.export_text(styles=False)


def history_cells(
    point: HistoryPoint, previous: HistoryPoint | None, step: StepChange | None
) -> list[str]:
    from harness.export import format_seconds

    change = ""
    if previous is not None and previous.median > 0:
        change = f"{point.median / previous.median - 1:+.1%}"
    interval = "n/a"
    if math.isfinite(point.ci_low) and math.isfinite(point.ci_high):
        interval = f"{point.ci_low:.3f}-{point.ci_high:.3f} s"
    return [
        point.build,
        point.limits,
        point.run_id,
        point.started_at[:19].replace("T", " "),
        describe_build_point(point),
        str(point.n),
        format_seconds(point.median),
        interval,
        change,
        "STEP" if step else "",
    ]


def plot_history(
    points: Sequence[HistoryPoint],
    changes: Sequence[StepChange],
    query: HistoryQuery,
    path: Path,
) -> None:
    """Write a PNG of each series' median over time, with CIs and steps marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.dates import AutoDateFormatter, AutoDateLocator

    figure, axes = plt.subplots(figsize=(9, 5), layout="constrained")
    for (build, limits), series in group_series(points).items():
        times = [to_plot_time(point) for point in series]
        medians = [point.median for point in series]
        errors = [
            [
                max(p.median - p.ci_low, 0) if math.isfinite(p.ci_low) else 0
                for p in series
            ],
            [
                max(p.ci_high - p.median, 0) if math.isfinite(p.ci_high) else 0
                for p in series
            ],
        ]
        label = f"{build} ({limits})" if limits else build
        axes.errorbar(times, medians, yerr=errors, marker="o", capsize=3, label=label)
    for change in changes:
        axes.plot(
            to_plot_time(change.after),
            change.after.median,
            marker="X",
            markersize=12,
            color="red",
            linestyle="none",
        )
    scenario = query.scenario or "all scenarios"
    axes.set_title(f"{scenario}: {query.phase}, median {query.metric} time per run")
    axes.set_xlabel("run start time (UTC)")
    axes.set_ylabel(f"median {query.metric} time (s), with its CI")
    axes.set_ylim(bottom=0)
    locator = AutoDateLocator()
    axes.xaxis.set_major_locator(locator)
    axes.xaxis.set_major_formatter(AutoDateFormatter(locator))
    axes.legend(title="build (red X: step change)")
    figure.autofmt_xdate()
    try:
        figure.savefig(path, format="png", dpi=100)
    except OSError as error:
        raise InvalidInput(f"cannot write the plot to {path}: {error}") from None
    finally:
        plt.close(figure)


def to_plot_time(point: HistoryPoint) -> float:
    """Return the run's start time as a matplotlib date number."""
    from datetime import datetime

    from matplotlib.dates import date2num

    return float(date2num(datetime.fromisoformat(point.started_at)))

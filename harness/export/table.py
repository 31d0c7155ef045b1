"""Terminal report built from rich tables.

``renderables`` returns the tables for printing on a live console, with colour
where the console supports it. ``render`` prints the same renderables to a
recording console and returns plain text, for files and tests. Outside values
go into ``Text`` objects, so rich never interprets them as markup.
"""

from __future__ import annotations

import io

from rich.console import Console, Group, RenderableType
from rich.table import Table
from rich.text import Text

from harness.analysis import Summary
from harness.export import (
    CFS_NOTE,
    PAIRED_NOTE,
    ReportData,
    describe_build,
    describe_environment,
    describe_memory_peaks,
    describe_verdict_rule,
    format_count,
    format_delta,
    format_p_value,
    format_percent,
    format_ratio,
    format_ratio_interval,
    format_seconds,
    format_seconds_interval,
    format_verdict,
)

# Fixed so that rendered text does not depend on the terminal it ran in.
RENDER_WIDTH = 150
VERDICT_STYLES = {"faster": "green", "slower": "red", "inconclusive": "yellow"}
BUDGET_STYLES = {
    "passed": "green",
    "failed": "red",
    "not measured": "yellow",
    "no data": "yellow",
}


def make_table(title: str, columns: list[str], numeric_from: int) -> Table:
    """Create a table whose columns from ``numeric_from`` on are right-aligned."""
    table = Table(title=title, title_justify="left")
    for index, column in enumerate(columns):
        table.add_column(column, justify="right" if index >= numeric_from else "left")
    return table


def render_verdict_line(summary: Summary) -> Text:
    line = Text()
    style = BUDGET_STYLES[summary.budget_verdict]
    line.append(f"{summary.describe_budgets()}.", style=f"bold {style}")
    for comparison in summary.comparisons:
        verdict = comparison.result.verdict.value
        line.append(f" {comparison.candidate} {comparison.phase}: ")
        line.append(verdict, style=VERDICT_STYLES.get(verdict, ""))
        line.append(".")
    return line


def render_comparisons(summary: Summary) -> Table:
    columns = ["phase", "candidate", "baseline", "candidate median", "delta"]
    columns += ["CI of delta", "ratio", "CI of ratio", "p", "verdict"]
    title = f"Comparison with {summary.baseline} ({summary.metric} time, medians)"
    table = make_table(title, columns, numeric_from=2)
    for comparison in summary.comparisons:
        result = comparison.result
        table.add_row(
            Text(comparison.phase),
            Text(comparison.candidate),
            format_seconds(result.baseline_median),
            format_seconds(result.candidate_median),
            format_delta(result.delta),
            format_seconds_interval(result.delta_ci, signed=True),
            format_ratio(result.ratio),
            format_ratio_interval(result.ratio_ci),
            format_p_value(result.p_value),
            Text(
                format_verdict(result),
                style=VERDICT_STYLES.get(result.verdict.value, ""),
            ),
        )
    return table


def render_paired(summary: Summary) -> Table:
    columns = ["phase", "candidate", "rounds", "median ratio", "CI of ratio"]
    title = f"Paired by round ({summary.metric} time, candidate / baseline)"
    table = make_table(title, [*columns, "Wilcoxon p"], numeric_from=2)
    for paired in summary.paired:
        result = paired.result
        table.add_row(
            Text(paired.phase),
            Text(paired.candidate),
            str(result.pairs),
            format_ratio(result.ratio),
            format_ratio_interval(result.ratio_ci),
            format_p_value(result.p_value),
        )
    return table


def render_nodes(summary: Summary) -> Table:
    columns = ["node", "build", "phase", "n", "wall median", "CPU median"]
    table = make_table("Per node (medians)", columns, numeric_from=3)
    for node in summary.nodes:
        table.add_row(
            Text(node.node),
            Text(node.build),
            Text(node.phase),
            str(node.n),
            format_seconds(node.wall_median),
            format_seconds(node.cpu_median),
        )
    return table


def render_budgets(summary: Summary) -> Table:
    columns = ["build", "budget", "phases", "limit", "iterations", "over", "worst"]
    table = make_table("Budgets (wall time)", [*columns, "result"], numeric_from=3)
    for check in summary.budget_checks:
        table.add_row(
            Text(check.build),
            Text(check.budget),
            Text(", ".join(check.phases)),
            format_seconds(check.seconds),
            str(check.n),
            str(check.over),
            format_seconds(check.worst_s),
            Text(
                "FAILED" if check.result == "failed" else check.result,
                style=BUDGET_STYLES[check.result],
            ),
        )
    return table


def render_statistics(summary: Summary, metric: str) -> Table:
    """Describe each build's phases on one metric ("wall" or "cpu").

    The median throttled time sits beside wall time, which it lengthens, and
    the median count of throttled periods beside CPU time.
    """
    columns = ["build", "phase", "n", "median", f"{summary.confidence:.0%} CI"]
    columns += ["mean", "stdev", "min", "max", "p90", "CV"]
    columns.append("throttled time" if metric == "wall" else "throttled periods")
    title = "Wall time per build" if metric == "wall" else "CPU time per build"
    table = make_table(title, columns, numeric_from=2)
    for phase_summary in summary.phase_summaries:
        sample = phase_summary.wall if metric == "wall" else phase_summary.cpu
        cells = [
            str(phase_summary.n),
            format_seconds(sample.median),
            format_seconds_interval(sample.median_ci),
            format_seconds(sample.mean),
            format_seconds(sample.stdev),
            format_seconds(sample.min),
            format_seconds(sample.max),
            format_seconds(sample.p90),
            format_percent(sample.cv),
        ]
        if metric == "wall":
            cells.append(format_seconds(phase_summary.throttled_s_median))
        else:
            cells.append(format_count(phase_summary.nr_throttled_median))
        table.add_row(Text(phase_summary.build), Text(phase_summary.phase), *cells)
    return table


def render_notes(report: ReportData) -> list[RenderableType]:
    """Return environment, builds, failures and warnings as text blocks."""
    notes: list[RenderableType] = [
        Text(describe_verdict_rule(report.summary)),
        Text(describe_environment(report.manifest)),
    ]
    notes += [Text(f"  {describe_build(b)}") for b in report.manifest["builds"]]
    notes.append(Text(CFS_NOTE))
    notes += [Text(line) for line in describe_memory_peaks(report.summary)]
    for failed in report.manifest.get("failed_builds", []):
        notes.append(
            Text(f"build {failed.get('label')} not built: {failed.get('error')}")
        )
    for warning in report.summary.warnings:
        notes.append(Text(f"warning [{warning.code}]: {warning.message}", "yellow"))
    return notes


class TableExporter:
    """Rich tables for the terminal, or the same tables as plain text."""

    name = "table"

    def renderables(self, report: ReportData) -> list[RenderableType]:
        summary = report.summary
        tables: list[RenderableType] = [
            render_verdict_line(summary),
            render_comparisons(summary),
        ]
        if summary.paired:
            tables += [render_paired(summary), Text(PAIRED_NOTE)]
        tables.append(render_budgets(summary))
        if summary.nodes:
            tables.append(render_nodes(summary))
        return [
            *tables,
            render_statistics(summary, "wall"),
            render_statistics(summary, "cpu"),
            *render_notes(report),
        ]

    def render(self, report: ReportData) -> str:
        console = Console(
            file=io.StringIO(), record=True, width=RENDER_WIDTH, color_system=None
        )
        console.print(Group(*self.renderables(report)))
        return console.export_text(styles=False)


EXPORTER = TableExporter()

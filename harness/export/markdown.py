"""Markdown report for a pull-request comment or a CI step summary.

The first line is a hidden HTML comment that marks the report, the second the
verdict, then the comparison, budgets, statistics,
environment, failures and warnings, and the per-iteration data in a collapsed
``<details>`` block. Every value that comes from outside the harness (labels,
phase names, versions, specs, error text) goes through ``escape_markdown``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from typing import Any

from harness.analysis import TOTAL_PHASE, Comparison, SampleStats, Summary
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
from harness.models import IterationRecord

# Characters that Markdown or HTML would interpret, mapped to HTML character
# references, which CommonMark decodes to the literal character outside code.
# A backtick gets a backslash instead, which CommonMark also renders as the
# literal character and which stays readable in the Markdown source.
MARKDOWN_ESCAPES = str.maketrans(
    {
        "&": "&amp;",
        "<": "&lt;",
        ">": "&gt;",
        "|": "&#124;",
        "`": "\\`",
        "@": "&#64;",
        "[": "&#91;",
        "]": "&#93;",
        "\\": "&#92;",
        "*": "&#42;",
        "_": "&#95;",
        "~": "&#126;",
        "#": "&#35;",
        "\n": "<br>",
    }
)
# Bare URLs that GitHub links without any markup.
AUTOLINK_PATTERN = re.compile(r"(://|www\.)", re.IGNORECASE)
# First line of every Markdown report: a CI job finds its earlier pull-request
# comment by this marker and updates it instead of adding another.
REPORT_MARKER = "<!-- coldstart-report -->"
# Longer error text is cut in the report; raw.jsonl keeps all of it.
MAX_ERROR_CHARS = 300


def escape_markdown(text: object) -> str:
    """Escape outside text so that it renders literally in Markdown and HTML.

    Neutralises table cell separators, code spans, HTML tags and entities,
    @mentions, links, emphasis, issue references and bare URLs. Line breaks
    become ``<br>`` so that a value stays inside its table cell.
    """
    value = str(text).replace("\r\n", "\n").replace("\r", "\n")
    escaped = value.translate(MARKDOWN_ESCAPES)
    return AUTOLINK_PATTERN.sub(
        lambda match: match.group(0).replace(":", "&#58;").replace(".", "&#46;"),
        escaped,
    )


def shorten(text: str, limit: int = MAX_ERROR_CHARS) -> str:
    if len(text) <= limit:
        return text
    return text[:limit].rstrip() + " ... (cut, raw.jsonl contains the full text)"


def render_table(
    header: Sequence[str], rows: Iterable[Sequence[str]], numeric_from: int
) -> list[str]:
    """Render a table whose columns from ``numeric_from`` on are right-aligned.

    Cells must already be escaped.
    """
    lines = ["| " + " | ".join(header) + " |"]
    rules = ["---" if index < numeric_from else "---:" for index in range(len(header))]
    lines.append("| " + " | ".join(rules) + " |")
    lines.extend("| " + " | ".join(row) + " |" for row in rows)
    return lines


# --- sections ----------------------------------------------------------------


def render_verdict_line(summary: Summary) -> str:
    """Return the one-line summary: budgets, then each candidate's verdicts."""
    budgets = summary.describe_budgets()
    parts = []
    for candidate in summary.builds:
        verdicts = [
            f"{escape_markdown(c.phase)} {format_short_verdict(c)}"
            for c in summary.comparisons
            if c.candidate == candidate
        ]
        if verdicts:
            parts.append(
                f"{escape_markdown(candidate)} vs {escape_markdown(summary.baseline)} "
                f"({summary.metric} time): " + ", ".join(verdicts)
            )
    if not parts:
        return f"**{budgets}.**"
    return f"**{budgets}.** " + "; ".join(parts) + "."


def format_short_verdict(comparison: Comparison) -> str:
    result = comparison.result
    if result.verdict.value in ("faster", "slower"):
        return (
            f"{result.verdict.value} {format_delta(result.delta)} "
            f"({format_ratio(result.ratio)})"
        )
    return result.verdict.value


def render_comparisons(summary: Summary) -> list[str]:
    header = [
        "phase",
        "candidate",
        "baseline median",
        "candidate median",
        "delta",
        f"{summary.confidence:.0%} CI of delta",
        "ratio",
        f"{summary.confidence:.0%} CI of ratio",
        "p",
        "verdict",
    ]
    rows = []
    for comparison in summary.comparisons:
        result = comparison.result
        phase = escape_markdown(comparison.phase)
        rows.append(
            [
                f"**{phase}**" if comparison.phase == TOTAL_PHASE else phase,
                escape_markdown(comparison.candidate),
                format_seconds(result.baseline_median),
                format_seconds(result.candidate_median),
                format_delta(result.delta),
                format_seconds_interval(result.delta_ci, signed=True),
                format_ratio(result.ratio),
                format_ratio_interval(result.ratio_ci),
                format_p_value(result.p_value),
                format_verdict(result),
            ]
        )
    # A baseline labelled "baseline" would read "with baseline baseline".
    name = (
        ""
        if summary.baseline == "baseline"
        else f" {escape_markdown(summary.baseline)}"
    )
    title = f"### Comparison with baseline{name} ({summary.metric} time, medians)"
    return [
        title,
        "",
        *render_table(header, rows, 2),
        "",
        describe_verdict_rule(summary),
    ]


def render_paired(summary: Summary) -> list[str]:
    """Return the paired comparison: per-round ratios and the Wilcoxon test."""
    if not summary.paired:
        return []
    header = ["phase", "candidate", "rounds", "median ratio"]
    header += [f"{summary.confidence:.0%} CI of ratio", "Wilcoxon p"]
    rows = [
        [
            escape_markdown(paired.phase),
            escape_markdown(paired.candidate),
            str(paired.result.pairs),
            format_ratio(paired.result.ratio),
            format_ratio_interval(paired.result.ratio_ci),
            format_p_value(paired.result.p_value),
        ]
        for paired in summary.paired
    ]
    return [
        f"### Paired by round ({summary.metric} time)",
        "",
        *render_table(header, rows, 2),
        "",
        PAIRED_NOTE,
    ]


def render_nodes(summary: Summary) -> list[str]:
    """Return the medians per node of a swarm run; nothing for a local run."""
    if not summary.nodes:
        return []
    header = ["node", "build", "phase", "n", "wall median", "CPU median"]
    rows = [
        [
            escape_markdown(node.node),
            escape_markdown(node.build),
            escape_markdown(node.phase),
            str(node.n),
            format_seconds(node.wall_median),
            format_seconds(node.cpu_median),
        ]
        for node in summary.nodes
    ]
    return ["### Per node", "", *render_table(header, rows, 3)]


def render_budgets(summary: Summary) -> list[str]:
    header = ["build", "budget", "limit", "phases", "iterations", "over", "worst"]
    header.append("result")
    rows = [
        [
            escape_markdown(check.build),
            escape_markdown(check.budget),
            format_seconds(check.seconds),
            escape_markdown(", ".join(check.phases)),
            str(check.n),
            str(check.over),
            format_seconds(check.worst_s),
            "**FAILED**" if check.result == "failed" else check.result,
        ]
        for check in summary.budget_checks
    ]
    if not rows:
        return ["### Budgets (wall time)", "", "No phase counts against a budget."]
    return ["### Budgets (wall time)", "", *render_table(header, rows, 4)]


def stats_cells(sample: SampleStats) -> list[str]:
    return [
        format_seconds(sample.median),
        format_seconds_interval(sample.median_ci),
        format_seconds(sample.mean),
        format_seconds(sample.stdev),
        format_seconds(sample.min),
        format_seconds(sample.max),
        format_seconds(sample.p90),
        format_percent(sample.cv),
    ]


def render_statistics(summary: Summary) -> list[str]:
    """Render wall and CPU time per build and phase, with the CFS throttling.

    The median throttled time sits beside wall time, which it lengthens, and
    the median count of throttled periods beside CPU time.
    """
    ci = f"{summary.confidence:.0%} CI"
    header = ["build", "phase", "n", "median", ci, "mean", "stdev", "min", "max"]
    header += ["p90", "CV"]
    lines = []
    for metric in ("wall", "cpu"):
        rows = []
        for phase_summary in summary.phase_summaries:
            sample = phase_summary.wall if metric == "wall" else phase_summary.cpu
            cells = [
                escape_markdown(phase_summary.build),
                escape_markdown(phase_summary.phase),
                str(phase_summary.n),
                *stats_cells(sample),
            ]
            if metric == "wall":
                cells.append(format_seconds(phase_summary.throttled_s_median))
            else:
                cells.append(format_count(phase_summary.nr_throttled_median))
            rows.append(cells)
        title = "Wall time" if metric == "wall" else "CPU time"
        extra = "throttled time" if metric == "wall" else "throttled periods"
        columns = [*header, extra]
        lines += [f"#### {title}", "", *render_table(columns, rows, 2), ""]
    return ["### Statistics per build", "", *lines[:-1]]


def render_environment(manifest: Any, summary: Summary) -> list[str]:
    lines = ["### Environment", "", escape_markdown(describe_environment(manifest))]
    lines.append("")
    for build in manifest.get("builds", []):
        lines.append(f"- {escape_markdown(describe_build(build))}")
    peaks = [f"- {escape_markdown(line)}" for line in describe_memory_peaks(summary)]
    if peaks:
        peaks.insert(0, "")
    return [*lines, "", CFS_NOTE, *peaks]


def render_failures(report: ReportData) -> list[str]:
    rows = [
        [
            escape_markdown(failure.build),
            escape_markdown(failure.kind),
            str(failure.count),
            escape_markdown(shorten(failure.first_error or "")),
        ]
        for failure in report.summary.failures
    ]
    # raw.jsonl has a record of kind "build" for each failed build, except in
    # runs written before those records existed.
    recorded = {f.build for f in report.summary.failures if f.kind == "build"}
    for failed in report.manifest.get("failed_builds", []):
        if failed.get("label") in recorded:
            continue
        rows.append(
            [
                escape_markdown(failed.get("label")),
                "not built",
                "all",
                escape_markdown(shorten(str(failed.get("error")))),
            ]
        )
    if not rows:
        return []
    header = ["build", "failure", "iterations", "first error"]
    return ["### Failures", "", *render_table(header, rows, 4)]


def render_warnings(summary: Summary) -> list[str]:
    if not summary.warnings:
        return []
    items = [
        f"- **{warning.code}**: {escape_markdown(shorten(warning.message, 600))}"
        for warning in summary.warnings
    ]
    return ["### Warnings", "", *items]


def render_iterations(report: ReportData) -> list[str]:
    """Render every record in a collapsed block, one row per iteration."""
    phases = [phase for phase in report.summary.phases if phase != TOTAL_PHASE]
    header = ["build", "iteration", "round", "status"]
    for phase in phases:
        header += [f"{escape_markdown(phase)} wall", f"{escape_markdown(phase)} CPU"]
    header.append("error")
    rows = [iteration_cells(record, phases) for record in report.records]
    measured = sum(1 for record in report.records if not record.warmup)
    summary_line = f"Per-iteration data ({measured} iterations)"
    if measured < len(report.records):
        warmups = len(report.records) - measured
        noun = "container" if warmups == 1 else "containers"
        summary_line += f" and {warmups} warm-up {noun}, not counted"
    return [
        "<details>",
        f"<summary>{summary_line}</summary>",
        "",
        *render_table(header, rows, 1),
        "",
        "</details>",
    ]


def iteration_cells(record: IterationRecord, phases: Sequence[str]) -> list[str]:
    timings = {phase.name: phase for phase in record.phases}
    cells = [
        escape_markdown(record.build),
        str(record.iteration),
        str(record.round),
        "ok" if record.ok else f"failed: {escape_markdown(record.failure)}",
    ]
    if record.warmup:
        cells[3] = f"warm-up, {cells[3]}"
    for name in phases:
        phase = timings.get(name)
        cells.append(format_seconds(phase.wall_s) if phase else "")
        cells.append(format_seconds(phase.cpu_s) if phase else "")
    cells.append(escape_markdown(shorten(record.error or "")))
    return cells


class MarkdownExporter:
    """Markdown for a pull-request comment."""

    name = "markdown"

    def render(self, report: ReportData) -> str:
        summary = report.summary
        scenario = report.manifest.get("scenario", {}).get("name")
        sections = [
            [REPORT_MARKER, render_verdict_line(summary)],
            [
                f"## Cold start: scenario {escape_markdown(scenario)}, "
                f"run {escape_markdown(summary.run_id)}"
            ],
            render_comparisons(summary),
            render_paired(summary),
            render_budgets(summary),
            render_nodes(summary),
            render_statistics(summary),
            render_environment(report.manifest, summary),
            render_failures(report),
            render_warnings(summary),
            render_iterations(report),
        ]
        blocks = ["\n".join(section) for section in sections if section]
        return "\n\n".join(blocks) + "\n"


EXPORTER = MarkdownExporter()

"""Build a run's report from its files and write summary.json and report.md."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from harness.analysis import Metric, Summary, summarise
from harness.breakdown import read_breakdown
from harness.export import ReportData, get_exporter
from harness.export.breakdown import render_breakdown, render_plot_links
from harness.models import IterationRecord
from harness.plots import list_plots, write_run_plots
from harness.results import REPORT, SUMMARY, RunDirectory

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class AnalysisOptions:
    """Settings of the verdicts: the metric, significance level and min effect.

    ``min_effect`` is a fraction of the baseline median (0.05 = 5%).
    """

    metric: Metric = "wall"
    alpha: float = 0.05
    min_effect: float = 0.05

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_manifest(cls, manifest: Mapping[str, Any]) -> AnalysisOptions:
        """Return the options a run was made with, or the defaults."""
        stored = manifest.get("analysis") or {}
        known = {key: stored[key] for key in cls.__dataclass_fields__ if key in stored}
        return cls(**known)


def open_run(run_dir: RunDirectory | Path | str) -> RunDirectory:
    if isinstance(run_dir, RunDirectory):
        return run_dir
    return RunDirectory.open(Path(run_dir))


def build_report(
    run_dir: RunDirectory | Path | str,
    *,
    metric: Metric | None = None,
    alpha: float | None = None,
    min_effect: float | None = None,
) -> tuple[dict[str, Any], list[IterationRecord], Summary]:
    """Read a run directory and summarise it with ``analysis.summarise``.

    An option left as None takes the value the run was made with (the
    manifest's "analysis" entry), else the default. Raises InvalidInput when
    the directory contains no readable run.
    """
    directory = open_run(run_dir)
    manifest = directory.read_manifest()
    records = directory.read_records()
    stored = AnalysisOptions.from_manifest(manifest)
    options = AnalysisOptions(
        metric=metric or stored.metric,
        alpha=alpha if alpha is not None else stored.alpha,
        min_effect=min_effect if min_effect is not None else stored.min_effect,
    )
    summary = summarise(
        manifest,
        records,
        metric=options.metric,
        alpha=options.alpha,
        min_effect=options.min_effect,
    )
    return manifest, records, summary


def render(
    fmt: str,
    manifest: Mapping[str, Any],
    records: Sequence[IterationRecord],
    summary: Summary,
) -> str:
    """Render the report in format ``fmt`` ("table", "markdown" or "json")."""
    report = ReportData(manifest=manifest, records=tuple(records), summary=summary)
    return get_exporter(fmt).render(report)


def write_report(
    run_dir: RunDirectory | Path | str,
    summary: Summary,
    manifest: Mapping[str, Any],
    records: Sequence[IterationRecord],
) -> None:
    """Write summary.json, the plots and report.md into the run directory."""
    directory = open_run(run_dir)
    directory.write_text(SUMMARY, render("json", manifest, records, summary))
    breakdown = read_breakdown(directory.path)
    write_run_plots(directory.path, manifest, records, breakdown)
    text = render_markdown_report(directory, manifest, records, summary)
    directory.write_text(REPORT, text)
    logger.info("wrote %s", directory.path / REPORT)


def render_markdown_report(
    run_dir: RunDirectory | Path | str,
    manifest: Mapping[str, Any],
    records: Sequence[IterationRecord],
    summary: Summary,
) -> str:
    """Render report.md: the Markdown report, the import breakdown and plot links.

    The breakdown comes from ``breakdown.json`` and the links from the PNG
    files already in the run directory, so a re-render matches report.md.
    """
    directory = open_run(run_dir)
    sections = [render("markdown", manifest, records, summary).rstrip("\n")]
    breakdown = read_breakdown(directory.path)
    if breakdown is not None:
        sections.append("\n".join(render_breakdown(breakdown, summary.baseline)))
    plots = list_plots(directory.path)
    if plots:
        sections.append("\n".join(render_plot_links(plots)))
    return "\n\n".join(sections) + "\n"

"""Commands over stored runs: gate, compare and history.

They register on the ``cli`` group when ``harness.cli`` imports this module,
and share its error handling. ``run`` and ``report`` reuse the gate and GitHub
helpers defined here.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING

import click

from harness.cli import (
    EXIT_CODE_EPILOG,
    FORMATS,
    FiniteFloatRange,
    configure_logging,
    gate_options,
    github_option,
    output_options,
)
from harness.cli import cli as cli_group
from harness.environment import Environment
from harness.errors import GateFailed, InvalidInput

if TYPE_CHECKING:
    from harness.analysis import Metric
    from harness.gate import GateResult
    from harness.results import RunDirectory

logger = logging.getLogger("harness")


def check_gates(
    run_dir: RunDirectory,
    thresholds: list[tuple[str, float]],
    default: float | None,
    metric: Metric | None = None,
) -> tuple[GateResult, ...]:
    """Evaluate a run's gates, print one line per gate and rewrite report.md.

    ``metric`` None uses the metric the run was made with.

    A failed gate is printed on stderr whatever the log level, and a passed
    gate is logged at info level.
    """
    from harness.export import ReportData
    from harness.gate import apply_gates, format_gate_line
    from harness.report import build_report

    manifest, records, summary = build_report(run_dir, metric=metric)
    report = ReportData(manifest=manifest, records=tuple(records), summary=summary)
    results, _ = apply_gates(run_dir, report, thresholds, default)
    for result in results:
        if result.passed:
            logger.info("%s", format_gate_line(result))
        else:
            click.echo(format_gate_line(result), err=True)
    return results


def publish_to_github(
    run_dir: RunDirectory,
    results: tuple[GateResult, ...] | None,
    metric: Metric | None = None,
) -> None:
    """Write the run's report.md and figures to the GitHub Actions files.

    The report.md on disk is used as it is, so a gates section stays in it. A
    run directory without a report.md gets one rendered from the raw data.
    """
    import os

    from harness.gate import gates_passed
    from harness.github import write_github
    from harness.report import build_report, render
    from harness.results import REPORT

    manifest, records, summary = build_report(run_dir, metric=metric)
    passed = summary.passed if results is None else gates_passed(results)
    passed = passed and not summary.failures
    if not run_dir.report_path.is_file():
        run_dir.write_text(REPORT, render("markdown", manifest, records, summary))
    markdown = run_dir.report_path.read_text(encoding="utf-8")
    write_github(os.environ, summary, markdown, run_dir.report_path, passed)


def check_github_environment() -> None:
    """Raise InvalidInput before any work when a GitHub Actions file is unset."""
    import os

    from harness.github import require_github_files

    require_github_files(os.environ)


def raise_for_gates(results: tuple[GateResult, ...] | None) -> None:
    failed = [result for result in results or () if not result.passed]
    if failed:
        raise GateFailed(
            f"{len(failed)} of {len(results or ())} gates failed (see the "
            "'gate failed' lines above)"
        )


@cli_group.command(epilog=EXIT_CODE_EPILOG)
@click.argument(
    "run_dir", type=click.Path(exists=True, file_okay=False, path_type=Path)
)
@click.option(
    "--metric",
    type=click.Choice(["wall", "cpu"]),
    default=None,
    help="Time that verdicts and regression gates use. Default: the run's --metric.",
)
@gate_options
@github_option
@output_options
@click.pass_obj
def gate(
    env: Environment,
    run_dir: Path,
    metric: Metric | None,
    max_regression: tuple[str, ...],
    max_regression_default: float | None,
    github: bool,
    quiet: bool,
    verbose: bool,
) -> None:
    """Check a stored run against its budgets and maximum regressions.

    \b
    Exits 1 when a gate fails, with one line per failed gate on stderr. The
    gates are appended to the run's report.md.
    """
    from harness.gate import parse_threshold
    from harness.results import RunDirectory

    configure_logging(quiet, verbose, env)
    thresholds = [parse_threshold(text) for text in max_regression]
    if github:
        check_github_environment()
    directory = RunDirectory.open(run_dir)
    results = check_gates(directory, thresholds, max_regression_default, metric)
    if github:
        publish_to_github(directory, results, metric)
    raise_for_gates(results)


@cli_group.command(epilog=EXIT_CODE_EPILOG)
@click.argument("run_a", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.argument("run_b", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option(
    "--build-a",
    metavar="LABEL",
    help="Build of RUN_A used as the baseline. Default: RUN_A's baseline.",
)
@click.option(
    "--build-b",
    metavar="LABEL",
    help="Build of RUN_B used as the candidate. Default: RUN_B's first build "
    "that is not its baseline.",
)
@click.option(
    "--metric",
    type=click.Choice(["wall", "cpu"]),
    default="wall",
    show_default=True,
    help="Time that verdicts use.",
)
@click.option(
    "--format",
    "output_format",
    type=click.Choice(FORMATS),
    default="table",
    show_default=True,
    help="Output format.",
)
@click.pass_obj
def compare(
    env: Environment,
    run_a: Path,
    run_b: Path,
    build_a: str | None,
    build_b: str | None,
    metric: Metric,
    output_format: str,
) -> None:
    """Compare a build of stored run A with a build of stored run B.

    \b
    Both runs must have used the same base image, Python, limits and
    scenario code; otherwise the comparison is rejected with exit code 2.
    """
    from harness.compare import compare_runs, render_comparison

    comparison = compare_runs(
        run_a,
        run_b,
        build_a=build_a,
        build_b=build_b,
        metric=metric,
    )
    text = render_comparison(comparison, output_format)
    env.stdout.print(text, markup=False, highlight=False, soft_wrap=True)


@cli_group.command(epilog=EXIT_CODE_EPILOG)
@click.option(
    "--results",
    "results_root",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("results"),
    show_default=True,
    help="Directory of run directories; its index.sqlite is read.",
)
@click.option("--scenario", metavar="NAME", help="Only runs of this scenario.")
@click.option(
    "--phase",
    default="total",
    show_default=True,
    help="Phase whose median is shown ('total' is the sum of all phases).",
)
@click.option("--build", "build", metavar="LABEL", help="Only builds with this label.")
@click.option(
    "--spec-contains",
    metavar="TEXT",
    help="Only builds whose spec contains TEXT (for example 'stripe==').",
)
@click.option(
    "--metric",
    type=click.Choice(["wall", "cpu"]),
    default="wall",
    show_default=True,
    help="Time shown and used for step changes.",
)
@click.option(
    "--step-threshold",
    type=FiniteFloatRange(min=0),
    default=10.0,
    show_default=True,
    metavar="PERCENT",
    help="A change between consecutive runs of a build is flagged as a step "
    "when the CIs of the medians do not overlap and it exceeds this percentage.",
)
@click.option(
    "--plot",
    type=click.Path(dir_okay=False, path_type=Path),
    metavar="FILE.png",
    help="Also write a PNG plot of the medians over time.",
)
@click.option(
    "--reindex",
    is_flag=True,
    help="Rebuild index.sqlite from the run directories first.",
)
@output_options
@click.pass_obj
def history(
    env: Environment,
    results_root: Path,
    scenario: str | None,
    phase: str,
    build: str | None,
    spec_contains: str | None,
    metric: Metric,
    step_threshold: float,
    plot: Path | None,
    reindex: bool,
    quiet: bool,
    verbose: bool,
) -> None:
    """Show a phase's median over time per build, and flag step changes."""
    from harness import history as runs

    configure_logging(quiet, verbose, env)
    if build is not None and spec_contains is not None:
        raise InvalidInput("--build and --spec-contains exclude each other: pass one")
    if plot is not None and plot.suffix.lower() != ".png":
        raise InvalidInput(
            f"invalid --plot {str(plot)!r}: the plot is a PNG, so name the file "
            "with .png"
        )
    if reindex:
        count, rows = runs.reindex(results_root)
        logger.info("indexed %d runs (%d rows) in %s", count, rows, results_root)
    query = runs.HistoryQuery(scenario, phase, build, spec_contains, metric)
    points = runs.query_history(results_root, query)
    if not points:
        raise InvalidInput(
            f"no indexed runs match phase {phase!r} and the filters in "
            f"{runs.index_path(results_root)} (if runs exist, rebuild the index "
            "with --reindex)"
        )
    changes = runs.find_step_changes(points, step_threshold / 100)
    text = runs.render_history_text(runs.history_table(points, changes, query))
    env.stdout.print(text, markup=False, highlight=False, soft_wrap=True)
    for change in changes:
        logger.warning("%s", runs.describe_step(change))
    if plot is not None:
        runs.plot_history(points, changes, query, plot)
        logger.info("wrote %s", plot)

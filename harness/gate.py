"""Gates that fail a CI job: budgets and maximum regressions per phase.

A budget gate fails when any counted iteration of a build exceeds the budget
(``analysis.BudgetCheck``). A regression gate fails only when a candidate's
verdict on a phase is "slower", so the change is significant, AND the change
of the median exceeds the phase's maximum regression in percent. A large but
insignificant change, or a significant change below the threshold, passes.

``evaluate_gates`` is a pure function of a ``Summary`` and the thresholds, so
it needs no files or Docker.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from harness.analysis import BudgetCheck, Comparison, Summary
from harness.errors import InvalidInput
from harness.export import ReportData
from harness.results import REPORT, RunDirectory
from harness.stats import Verdict

logger = logging.getLogger(__name__)

# Key of a threshold that applies to every phase without its own, the total too.
ALL_PHASES = "*"


@dataclass(frozen=True)
class GateResult:
    """Outcome of one gate on one build.

    ``kind`` is "regression" or "budget". ``subject`` is the phase name of a
    regression gate and the budget name of a budget gate. ``message`` is the
    line printed for it, without the "gate failed:" or "gate passed:" prefix.
    """

    kind: str
    build: str
    subject: str
    passed: bool
    message: str


def parse_threshold(text: str) -> tuple[str, float]:
    """Parse ``PHASE=PERCENT`` from ``--max-regression`` into (phase, percent)."""
    phase, separator, value = text.rpartition("=")
    if not separator or not phase.strip():
        raise InvalidInput(
            f"invalid --max-regression {text!r}: use PHASE=PERCENT, for example "
            "'import stripe=10', '*=10' or 'total=5'"
        )
    return phase.strip(), check_percent(value, f"--max-regression {text!r}")


def check_percent(value: object, where: str) -> float:
    """Return ``value`` as a non-negative percentage or raise InvalidInput."""
    try:
        percent = float(str(value).strip().removesuffix("%"))
    except ValueError:
        percent = math.nan
    if isinstance(value, bool) or not math.isfinite(percent) or percent < 0:
        raise InvalidInput(
            f"invalid {where}: the maximum regression must be a percentage of 0 "
            f"or more, not {value!r}"
        )
    return percent


def merge_thresholds(
    scenario_gates: Mapping[str, float],
    option_thresholds: Iterable[tuple[str, float]],
    default: float | None,
) -> dict[str, float]:
    """Merge the thresholds: options override the scenario, phase by phase.

    ``default`` (``--max-regression-default``) applies as ``*`` unless the
    scenario or an option sets ``*`` itself.
    """
    merged: dict[str, float] = {}
    if default is not None:
        merged[ALL_PHASES] = default
    merged.update(scenario_gates)
    merged.update(option_thresholds)
    return merged


def threshold_for(phase: str, thresholds: Mapping[str, float]) -> float | None:
    """Return the maximum regression of ``phase``: its own, else ``*``, else None."""
    if phase in thresholds:
        return thresholds[phase]
    return thresholds.get(ALL_PHASES)


def check_threshold_phases(
    phases: Iterable[str], thresholds: Mapping[str, float]
) -> None:
    """Raise InvalidInput for a threshold that names none of ``phases``.

    ``phases`` must include "total" where the run has one.
    """
    names = list(phases)
    for phase in thresholds:
        if phase != ALL_PHASES and phase not in names:
            known = ", ".join(repr(name) for name in names)
            raise InvalidInput(
                f"maximum regression set for unknown phase {phase!r}: the run's "
                f"phases are {known}, or use '*' for every phase"
            )


def evaluate_gates(
    summary: Summary, thresholds: Mapping[str, float]
) -> tuple[GateResult, ...]:
    """Evaluate every budget check and every thresholded comparison.

    Raises InvalidInput when a threshold names a phase the run does not have.
    """
    check_threshold_phases(summary.phases, thresholds)
    results = [budget_gate(check) for check in summary.budget_checks]
    for comparison in summary.comparisons:
        limit = threshold_for(comparison.phase, thresholds)
        if limit is not None:
            results.append(regression_gate(comparison, limit, summary.confidence))
    return tuple(results)


def budget_gate(check: BudgetCheck) -> GateResult:
    if check.n == 0:
        detail = "no iteration completed its phases"
    else:
        detail = (
            f"{check.over} of {check.n} iterations over, worst {check.worst_s:.3f} s"
        )
    return GateResult(
        kind="budget",
        build=check.build,
        subject=check.budget,
        passed=check.passed,
        message=(
            f"{printable(check.build)} / budget {printable(check.budget)} "
            f"({check.seconds:g} s): {detail}"
        ),
    )


def regression_gate(
    comparison: Comparison, limit: float, confidence: float
) -> GateResult:
    """Gate one comparison: fail when slower and the change exceeds ``limit``."""
    result = comparison.result
    change = percent_change(result.ratio)
    slower = result.verdict is Verdict.SLOWER
    exceeds = change is not None and change > limit
    failed = slower and exceeds
    if change is None:
        relation = "cannot be checked against"
    else:
        relation = "exceeds" if exceeds else "is within"
    message = (
        f"{printable(comparison.candidate)} / {printable(comparison.phase)}: "
        f"{describe_change(comparison, confidence)} "
        f"{relation} the maximum regression of {limit:g}%"
    )
    if exceeds and not failed:
        # A gate fails only on a significant slowdown (verdict slower).
        message += ", but the change is not significant"
    if not failed:
        message += f" (verdict: {result.verdict.value})"
    return GateResult(
        kind="regression",
        build=comparison.candidate,
        subject=comparison.phase,
        passed=not failed,
        message=message,
    )


def percent_change(ratio: float) -> float | None:
    """Return the change in percent for a ratio of medians, None if undefined."""
    if not math.isfinite(ratio):
        return None
    return (ratio - 1) * 100


def describe_change(comparison: Comparison, confidence: float) -> str:
    """Return the change of the median with its CI, as in ``+76.3% (95% CI ...)``."""
    result = comparison.result
    change = percent_change(result.ratio)
    if change is None:
        return "change n/a"
    low = percent_change(result.ratio_ci.low)
    high = percent_change(result.ratio_ci.high)
    if low is None or high is None:
        return f"{change:+.1f}%"
    return f"{change:+.1f}% ({confidence:.0%} CI {low:+.1f}% .. {high:+.1f}%)"


def gates_passed(results: Iterable[GateResult]) -> bool:
    return all(result.passed for result in results)


def printable(text: str) -> str:
    """Escape control characters, so that a label cannot split a gate's line."""
    return "".join(
        char if char.isprintable() else repr(char)[1:-1] for char in str(text)
    )


def format_gate_line(result: GateResult) -> str:
    status = "passed" if result.passed else "failed"
    return f"gate {status}: {result.message}"


def render_gates_markdown(results: Iterable[GateResult]) -> str:
    """Render the gates as a Markdown section; every message is escaped."""
    from harness.export.markdown import escape_markdown

    items = [
        f"- {'passed' if result.passed else '**FAILED**'}: "
        f"{escape_markdown(result.message)}"
        for result in results
    ]
    if not items:
        return "### Gates\n\nNo gate is configured.\n"
    return "### Gates\n\n" + "\n".join(items) + "\n"


def scenario_gates(manifest: Mapping[str, Any]) -> dict[str, float]:
    """Return the ``[gates]`` table of the scenario recorded in the manifest."""
    gates = (manifest.get("scenario") or {}).get("gates") or {}
    return {
        str(phase): check_percent(value, f"gate {phase!r}")
        for phase, value in gates.items()
    }


def resolve_gate_options(
    manifest: Mapping[str, Any],
    options: Iterable[tuple[str, float]],
    default: float | None,
) -> tuple[list[tuple[str, float]], float | None]:
    """Return the given maximum regressions, else those the run last stored."""
    given = list(options)
    if given or default is not None:
        return given, default
    stored = manifest.get("gate_options") or {}
    phases = stored.get("max_regression") or {}
    return list(phases.items()), stored.get("max_regression_default")


def apply_gates(
    run_dir: RunDirectory,
    report: ReportData,
    options: Iterable[tuple[str, float]],
    default: float | None,
) -> tuple[tuple[GateResult, ...], str]:
    """Evaluate the gates of a run and rewrite its report.md with them.

    Returns the results and the Markdown written: the report, then a "Gates"
    section.
    """
    from harness.export import get_exporter

    options, default = resolve_gate_options(report.manifest, options, default)
    if options or default is not None:
        # Stored so that a later `coldstart gate` or `report --github` without
        # options checks the same maximum regressions.
        run_dir.update_manifest(
            gate_options={
                "max_regression": dict(options),
                "max_regression_default": default,
            }
        )
    thresholds = merge_thresholds(scenario_gates(report.manifest), options, default)
    results = evaluate_gates(report.summary, thresholds)
    markdown = get_exporter("markdown").render(report)
    markdown += "\n" + render_gates_markdown(results)
    run_dir.write_text(REPORT, markdown)
    return results, markdown

"""Aggregate a run's iteration records into statistics, comparisons and checks.

``summarise`` takes the manifest (a dict, as in ``manifest.json``) and the
iteration records. It returns a ``Summary`` of frozen records, which the
exporters render. Nothing here reads files or talks to Docker.
"""

from __future__ import annotations

import logging
import math
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import pandas as pd

from harness import stats
from harness.errors import InvalidInput
from harness.models import RESULT_FORMAT, IterationRecord

logger = logging.getLogger(__name__)

Metric = Literal["wall", "cpu"]
METRIC_COLUMNS: Mapping[str, str] = {"wall": "wall_s", "cpu": "cpu_s"}
TOTAL_PHASE = "total"
# A phase whose coefficient of variation reaches this gets a stability warning.
UNSTABLE_CV = 0.10
# A phase whose median wait for a CPU, beyond its CPU time and the time its
# quota throttled it, exceeds one CFS period (100 ms) gets a warning.
STARVED_WAIT_S = 0.1

FRAME_COLUMNS = [
    "build",
    "iteration",
    "round",
    "phase",
    "budget",
    "wall_s",
    "cpu_s",
    "throttled_s",
    "nr_throttled",
]


@dataclass(frozen=True)
class SampleStats:
    """Descriptive statistics of one metric over a build's iterations of a phase.

    ``stdev`` is the sample standard deviation (n - 1) and ``cv`` is stdev over
    mean; both are None for fewer than two values. ``median_ci`` is the
    percentile bootstrap CI of the median.
    """

    mean: float
    median: float
    stdev: float | None
    min: float
    max: float
    cv: float | None
    p90: float
    median_ci: stats.Interval


@dataclass(frozen=True)
class PhaseSummary:
    """Statistics of one build's phase, for wall and CPU time."""

    build: str
    phase: str
    n: int
    wall: SampleStats
    cpu: SampleStats
    throttled_s_median: float | None = None
    nr_throttled_median: float | None = None


@dataclass(frozen=True)
class MemoryPeak:
    """Peak memory of a build's containers, from the cgroup's memory counter.

    The counter is what the memory limit is enforced against, so it includes
    the page cache of files the container read, not only the Python heap.
    """

    build: str
    n: int
    median_bytes: float
    max_bytes: int


@dataclass(frozen=True)
class Comparison:
    """One phase of a candidate build compared with the baseline build."""

    phase: str
    baseline: str
    candidate: str
    metric: Metric
    result: stats.MedianComparison


@dataclass(frozen=True)
class PairedPhaseComparison:
    """One phase of a candidate build compared with the baseline, round by round."""

    phase: str
    baseline: str
    candidate: str
    metric: Metric
    result: stats.PairedComparison


@dataclass(frozen=True)
class NodeSummary:
    """Medians of one build's phase on one node of a swarm run."""

    node: str
    build: str
    phase: str
    n: int
    wall_median: float
    cpu_median: float


@dataclass(frozen=True)
class BudgetCheck:
    """Iterations of one build against one budget.

    Each iteration counts the sum of the wall times of ``phases``; only
    iterations in which all of those phases completed are counted in ``n``.
    ``passed`` needs at least one counted iteration and none over the limit.
    """

    build: str
    budget: str
    seconds: float
    phases: tuple[str, ...]
    n: int
    over: int
    worst_s: float | None
    passed: bool

    @property
    def result(self) -> str:
        """ "passed", "failed", or "not measured" when no iteration counted."""
        if self.n == 0:
            return "not measured"
        return "passed" if self.passed else "failed"


@dataclass(frozen=True)
class FailureCount:
    """Number of failed iterations of one build for one failure kind."""

    build: str
    kind: str
    count: int
    first_error: str | None


@dataclass(frozen=True)
class ReportWarning:
    """Something the reader should know before trusting the numbers.

    ``message`` names the cause and the next step.
    """

    code: str
    message: str


@dataclass(frozen=True)
class Summary:
    """Everything a report shows, computed from the manifest and records."""

    run_id: str
    metric: Metric
    alpha: float
    min_effect: float
    confidence: float
    baseline: str
    builds: tuple[str, ...]
    phases: tuple[str, ...]
    phase_summaries: tuple[PhaseSummary, ...]
    comparisons: tuple[Comparison, ...]
    budget_checks: tuple[BudgetCheck, ...]
    failures: tuple[FailureCount, ...]
    warnings: tuple[ReportWarning, ...]
    passed: bool
    paired: tuple[PairedPhaseComparison, ...] = ()
    nodes: tuple[NodeSummary, ...] = ()
    memory_peaks: tuple[MemoryPeak, ...] = ()
    warmups: int = 0

    @property
    def budget_verdict(self) -> str:
        """ "passed", "failed", or "no data" when no budget check was measured.

        Checks of a build with no counted iteration (it failed to build, or
        every iteration failed) neither pass nor fail; the failure warnings
        cover them.
        """
        if not any(check.n > 0 for check in self.budget_checks):
            return "no data"
        return "passed" if self.passed else "failed"

    def describe_budgets(self) -> str:
        """Return the budget verdict for the report's first line."""
        verdict = self.budget_verdict
        if verdict == "no data":
            return "No data: no iteration completed a budget's phases"
        if verdict == "failed":
            return "Budgets FAILED"
        missing = sum(1 for check in self.budget_checks if check.n == 0)
        return (
            f"Budgets passed ({missing} not measured)" if missing else "Budgets passed"
        )

    def to_dict(self) -> dict[str, Any]:
        """Convert to JSON-ready data, with None for NaN and infinite values."""
        return {
            "format": RESULT_FORMAT,
            "run_id": self.run_id,
            "metric": self.metric,
            "alpha": self.alpha,
            "min_effect": self.min_effect,
            "confidence": self.confidence,
            "baseline": self.baseline,
            "builds": list(self.builds),
            "phases": list(self.phases),
            "passed": self.passed,
            "stats": [phase_summary_to_dict(s) for s in self.phase_summaries],
            "comparisons": [comparison_to_dict(c) for c in self.comparisons],
            "budgets": [budget_check_to_dict(c) for c in self.budget_checks],
            "failures": [vars(f) for f in self.failures],
            "warnings": [vars(w) for w in self.warnings],
            "paired": [paired_to_dict(c) for c in self.paired],
            "nodes": [node_summary_to_dict(n) for n in self.nodes],
            "memory_peaks": [vars(peak) for peak in self.memory_peaks],
            "warmups": self.warmups,
        }


def to_json_number(value: float | None, digits: int = 6) -> float | None:
    """Round ``value`` for JSON, mapping None, NaN and infinities to None."""
    if value is None or not math.isfinite(value):
        return None
    return round(float(value), digits)


def interval_to_list(interval: stats.Interval) -> list[float | None]:
    return [to_json_number(interval.low), to_json_number(interval.high)]


def sample_stats_to_dict(sample: SampleStats) -> dict[str, Any]:
    return {
        "mean": to_json_number(sample.mean),
        "median": to_json_number(sample.median),
        "median_ci": interval_to_list(sample.median_ci),
        "stdev": to_json_number(sample.stdev),
        "min": to_json_number(sample.min),
        "max": to_json_number(sample.max),
        "p90": to_json_number(sample.p90),
        "cv": to_json_number(sample.cv),
    }


def phase_summary_to_dict(summary: PhaseSummary) -> dict[str, Any]:
    return {
        "build": summary.build,
        "phase": summary.phase,
        "n": summary.n,
        "wall": sample_stats_to_dict(summary.wall),
        "cpu": sample_stats_to_dict(summary.cpu),
        "throttled_s_median": to_json_number(summary.throttled_s_median),
        "nr_throttled_median": to_json_number(summary.nr_throttled_median),
    }


def comparison_to_dict(comparison: Comparison) -> dict[str, Any]:
    result = comparison.result
    return {
        "phase": comparison.phase,
        "baseline": comparison.baseline,
        "candidate": comparison.candidate,
        "metric": comparison.metric,
        "n_baseline": result.n_baseline,
        "n_candidate": result.n_candidate,
        "baseline_median": to_json_number(result.baseline_median),
        "candidate_median": to_json_number(result.candidate_median),
        "delta": to_json_number(result.delta),
        "delta_ci": interval_to_list(result.delta_ci),
        "ratio": to_json_number(result.ratio),
        "ratio_ci": interval_to_list(result.ratio_ci),
        "p_value": to_json_number(result.p_value),
        "verdict": result.verdict.value,
        "reason": result.reason,
        "iterations_needed": result.iterations_needed,
    }


def paired_to_dict(comparison: PairedPhaseComparison) -> dict[str, Any]:
    result = comparison.result
    return {
        "phase": comparison.phase,
        "baseline": comparison.baseline,
        "candidate": comparison.candidate,
        "metric": comparison.metric,
        "pairs": result.pairs,
        "ratio": to_json_number(result.ratio),
        "ratio_ci": interval_to_list(result.ratio_ci),
        "p_value": to_json_number(result.p_value),
    }


def node_summary_to_dict(summary: NodeSummary) -> dict[str, Any]:
    data = vars(summary).copy()
    data["wall_median"] = to_json_number(summary.wall_median)
    data["cpu_median"] = to_json_number(summary.cpu_median)
    return data


def budget_check_to_dict(check: BudgetCheck) -> dict[str, Any]:
    data = vars(check).copy()
    data["phases"] = list(check.phases)
    data["worst_s"] = to_json_number(check.worst_s)
    return data


# --- frame -------------------------------------------------------------------


def as_record(record: IterationRecord | Mapping[str, Any]) -> IterationRecord:
    if isinstance(record, IterationRecord):
        return record
    return IterationRecord.from_dict(record)


def records_to_frame(
    records: Iterable[IterationRecord | Mapping[str, Any]],
    *,
    phase_budgets: Mapping[str, str] | None = None,
) -> pd.DataFrame:
    """Flatten records into one row per (iteration, phase), plus "total" rows.

    Records may be ``IterationRecord`` objects or their ``to_dict()`` form.
    Every phase that completed gets a row, also in a failed iteration.
    ``phase_budgets`` maps each scenario phase, in order, to its budget name.
    A "total" row (the sum over phases, budget None) is added only for an
    iteration that succeeded and completed every phase: the scenario's phases
    when ``phase_budgets`` is given, else every phase seen in the records.
    ``throttled_s`` and ``nr_throttled`` are NaN without cgroup telemetry.
    """
    parsed = [as_record(record) for record in records]
    budgets = dict(phase_budgets or {})
    expected = list(budgets) or unique_phase_names(parsed)
    rows: list[dict[str, Any]] = []
    for record in parsed:
        phase_rows = [phase_row(record, phase, budgets) for phase in record.phases]
        rows.extend(phase_rows)
        completed = {row["phase"] for row in phase_rows}
        if record.ok and expected and set(expected) <= completed:
            counted = [row for row in phase_rows if row["phase"] in expected]
            rows.append(total_row(record, counted))
    return pd.DataFrame(rows, columns=FRAME_COLUMNS)


def unique_phase_names(records: Sequence[IterationRecord]) -> list[str]:
    names: dict[str, None] = {}
    for record in records:
        for phase in record.phases:
            names.setdefault(phase.name, None)
    return list(names)


def phase_row(
    record: IterationRecord, phase: Any, budgets: Mapping[str, str]
) -> dict[str, Any]:
    cgroup = phase.cgroup or {}
    return {
        "build": record.build,
        "iteration": record.iteration,
        "round": record.round,
        "phase": phase.name,
        "budget": budgets.get(phase.name),
        "wall_s": phase.wall_s,
        "cpu_s": phase.cpu_s,
        "throttled_s": float(cgroup.get("throttled_s", math.nan)),
        "nr_throttled": float(cgroup.get("nr_throttled", math.nan)),
    }


def total_row(record: IterationRecord, rows: Sequence[Mapping[str, Any]]) -> dict:
    return {
        "build": record.build,
        "iteration": record.iteration,
        "round": record.round,
        "phase": TOTAL_PHASE,
        "budget": None,
        "wall_s": math.fsum(row["wall_s"] for row in rows),
        "cpu_s": math.fsum(row["cpu_s"] for row in rows),
        # NaN unless every phase carried cgroup counters.
        "throttled_s": sum(row["throttled_s"] for row in rows),
        "nr_throttled": sum(row["nr_throttled"] for row in rows),
    }


# --- descriptive statistics --------------------------------------------------


def describe_sample(values: Sequence[float], confidence: float) -> SampleStats:
    """Compute descriptive statistics of a non-empty sample."""
    array = np.asarray(values, dtype=float)
    mean = float(array.mean())
    stdev = float(array.std(ddof=1)) if len(array) > 1 else None
    cv = stdev / mean if stdev is not None and mean > 0 else None
    return SampleStats(
        mean=mean,
        median=float(np.median(array)),
        stdev=stdev,
        min=float(array.min()),
        max=float(array.max()),
        cv=cv,
        p90=float(np.percentile(array, 90)),
        median_ci=stats.bootstrap_median_ci(values, confidence=confidence),
    )


def summarise_phases(
    frame: pd.DataFrame, builds: Sequence[str], phases: Sequence[str], confidence: float
) -> tuple[PhaseSummary, ...]:
    """Describe each (build, phase) pair that has at least one value."""
    summaries = []
    for build in builds:
        for phase in phases:
            rows = frame[(frame["build"] == build) & (frame["phase"] == phase)]
            if rows.empty:
                continue
            throttled = rows["throttled_s"].dropna()
            periods = rows["nr_throttled"].dropna()
            summaries.append(
                PhaseSummary(
                    build=build,
                    phase=phase,
                    n=len(rows),
                    wall=describe_sample(rows["wall_s"].tolist(), confidence),
                    cpu=describe_sample(rows["cpu_s"].tolist(), confidence),
                    throttled_s_median=(
                        float(throttled.median()) if len(throttled) else None
                    ),
                    nr_throttled_median=(
                        float(periods.median()) if len(periods) else None
                    ),
                )
            )
    return tuple(summaries)


# --- comparisons and budgets -------------------------------------------------


def compare_builds(
    frame: pd.DataFrame,
    *,
    baseline: str,
    candidates: Sequence[str],
    phases: Sequence[str],
    metric: Metric,
    alpha: float,
    min_effect: float,
    confidence: float,
) -> tuple[Comparison, ...]:
    """Compare every candidate with the baseline on every phase and the total."""
    column = METRIC_COLUMNS[metric]
    comparisons = []
    for candidate in candidates:
        for phase in phases:
            in_phase = frame[frame["phase"] == phase]
            result = stats.compare_medians(
                in_phase.loc[in_phase["build"] == baseline, column].tolist(),
                in_phase.loc[in_phase["build"] == candidate, column].tolist(),
                alpha=alpha,
                min_effect=min_effect,
                confidence=confidence,
            )
            comparisons.append(Comparison(phase, baseline, candidate, metric, result))
    return tuple(comparisons)


def compare_rounds(
    frame: pd.DataFrame,
    *,
    baseline: str,
    candidates: Sequence[str],
    phases: Sequence[str],
    metric: Metric,
    confidence: float,
) -> tuple[PairedPhaseComparison, ...]:
    """Pair each candidate's iterations with the baseline's of the same round.

    Rounds where either build has no value for the phase are left out.
    """
    column = METRIC_COLUMNS[metric]
    comparisons = []
    for candidate in candidates:
        for phase in phases:
            in_phase = frame[frame["phase"] == phase]
            base = in_phase[in_phase["build"] == baseline].set_index("round")[column]
            cand = in_phase[in_phase["build"] == candidate].set_index("round")[column]
            rounds = sorted(set(base.index) & set(cand.index))
            result = stats.compare_paired(
                base.loc[rounds].tolist(),
                cand.loc[rounds].tolist(),
                confidence=confidence,
            )
            comparisons.append(
                PairedPhaseComparison(phase, baseline, candidate, metric, result)
            )
    return tuple(comparisons)


def summarise_nodes(
    frame: pd.DataFrame,
    records: Sequence[IterationRecord],
    builds: Sequence[str],
    phases: Sequence[str],
) -> tuple[NodeSummary, ...]:
    """Describe each (node, build, phase) of records that name their node.

    Records of the local backend name no node, so a local run has none.
    """
    node_of = {
        (record.build, record.round): record.telemetry["node"]["hostname"]
        for record in records
        if isinstance(record.telemetry.get("node"), Mapping)
    }
    if not node_of or frame.empty:
        return ()
    keys = zip(frame["build"], frame["round"], strict=True)
    nodes = frame.assign(node=[node_of.get(key) for key in keys]).dropna(
        subset=["node"]
    )
    summaries = []
    for node in sorted(set(nodes["node"])):
        for build in builds:
            for phase in phases:
                rows = nodes[
                    (nodes["node"] == node)
                    & (nodes["build"] == build)
                    & (nodes["phase"] == phase)
                ]
                if rows.empty:
                    continue
                summaries.append(
                    NodeSummary(
                        node=node,
                        build=build,
                        phase=phase,
                        n=len(rows),
                        wall_median=float(rows["wall_s"].median()),
                        cpu_median=float(rows["cpu_s"].median()),
                    )
                )
    return tuple(summaries)


def check_budgets(
    frame: pd.DataFrame,
    *,
    builds: Sequence[str],
    budgets: Mapping[str, float],
    phase_budgets: Mapping[str, str],
) -> tuple[BudgetCheck, ...]:
    """Check each build's iterations against each budget that has phases.

    Budgets always use wall time, whatever the verdict metric, because the
    limits they model (a serverless runtime's init and invoke timeouts) are
    wall-clock limits.
    """
    # NOTE: an iteration that failed before completing a budget's phases (a
    # timeout, for one) is not counted, so it cannot fail the budget. The
    # failed-iterations warning reports such iterations instead.
    checks = []
    for budget, seconds in budgets.items():
        phases = tuple(name for name, used in phase_budgets.items() if used == budget)
        if not phases:
            continue
        for build in builds:
            sums = budget_sums(frame, build, phases)
            over = sum(1 for value in sums if value > seconds)
            checks.append(
                BudgetCheck(
                    build=build,
                    budget=budget,
                    seconds=float(seconds),
                    phases=phases,
                    n=len(sums),
                    over=over,
                    worst_s=max(sums) if sums else None,
                    passed=bool(sums) and over == 0,
                )
            )
    return tuple(checks)


def budgets_passed(checks: Sequence[BudgetCheck]) -> bool:
    """Return whether every measured check passed, with at least one measured."""
    measured = [check for check in checks if check.n > 0]
    return bool(measured) and all(check.passed for check in measured)


def budget_sums(frame: pd.DataFrame, build: str, phases: Sequence[str]) -> list[float]:
    """Return per iteration the wall-time sum of ``phases``, if all completed."""
    rows = frame[(frame["build"] == build) & (frame["phase"].isin(phases))]
    sums = []
    for _, group in rows.groupby("iteration", sort=True):
        if set(group["phase"]) == set(phases):
            sums.append(math.fsum(group["wall_s"]))
    return sums


def summarise_memory(
    records: Sequence[IterationRecord], builds: Sequence[str]
) -> tuple[MemoryPeak, ...]:
    """Describe each build's container memory peaks, where the probe read them."""
    peaks = []
    for build in builds:
        values = [
            peak
            for record in records
            if record.build == build
            and (
                peak := (record.telemetry.get("cgroup") or {}).get("memory_peak_bytes")
            )
        ]
        if values:
            median = float(np.median(values))
            peaks.append(MemoryPeak(build, len(values), median, int(max(values))))
    return tuple(peaks)


def count_failures(records: Sequence[IterationRecord]) -> tuple[FailureCount, ...]:
    """Count failed iterations per build and failure kind, in record order."""
    counts: Counter[tuple[str, str]] = Counter()
    first_errors: dict[tuple[str, str], str | None] = {}
    for record in records:
        if record.failure is None:
            continue
        key = (record.build, record.failure.value)
        counts[key] += 1
        first_errors.setdefault(key, record.error)
    return tuple(
        FailureCount(build, kind, count, first_errors[(build, kind)])
        for (build, kind), count in counts.items()
    )


# --- warnings ----------------------------------------------------------------


def warn_unstable(
    summaries: Sequence[PhaseSummary], metric: Metric
) -> list[ReportWarning]:
    """Warn about each measured phase whose CV on ``metric`` reaches UNSTABLE_CV."""
    warnings = []
    for summary in summaries:
        sample = summary.wall if metric == "wall" else summary.cpu
        if summary.phase == TOTAL_PHASE or sample.cv is None:
            continue
        if sample.cv < UNSTABLE_CV:
            continue
        if metric == "wall":
            causes = (
                "wall time under a CFS quota moves in whole periods, a busy host, "
                "or too few iterations"
            )
            remedies = "more iterations (-n), --metric cpu or a quieter host"
        else:
            causes = "a busy host or too few iterations"
            remedies = "more iterations (-n) or a quieter host"
        warnings.append(
            ReportWarning(
                code="unstable-phase",
                message=(
                    f"{summary.build} / {summary.phase}: {metric} time is unstable, "
                    f"CV {sample.cv:.1%} over {summary.n} iterations. Likely "
                    f"causes: {causes}. Try {remedies}."
                ),
            )
        )
    return warnings


def warn_starved(frame: pd.DataFrame, builds: Sequence[str]) -> list[ReportWarning]:
    """Warn about phases that waited for a CPU the quota would have allowed.

    Wall time under a CFS quota is CPU time plus the time the quota throttled
    the container, plus the time it was runnable but found no free CPU. The
    last part comes from the host, not the code under test: other containers,
    too many parallel jobs, or other load.
    """
    warnings = []
    measured = frame.dropna(subset=["throttled_s"])
    measured = measured[measured["phase"] != TOTAL_PHASE]
    for (build, phase), rows in measured.groupby(["build", "phase"], sort=False):
        if build not in builds:
            continue
        waits = rows["wall_s"] - rows["cpu_s"] - rows["throttled_s"]
        wait = float(waits.median())
        if wait <= STARVED_WAIT_S:
            continue
        warnings.append(
            ReportWarning(
                code="cpu-starved",
                message=(
                    f"{build} / {phase}: waited {wait:.3f} s (median) for a CPU "
                    "beyond its quota, so the host was too busy and wall times "
                    "are inflated. Run fewer containers at once (-j) or on a "
                    "quieter host; CPU times are not affected."
                ),
            )
        )
    return warnings


def warn_failures(
    failures: Sequence[FailureCount], records: Sequence[IterationRecord]
) -> list[ReportWarning]:
    """Warn once per build that has failed iterations."""
    totals = Counter(record.build for record in records)
    by_build: dict[str, list[FailureCount]] = {}
    for failure in failures:
        by_build.setdefault(failure.build, []).append(failure)
    warnings = []
    for build, counts in by_build.items():
        failed = sum(count.count for count in counts)
        kinds = ", ".join(f"{count.count} {count.kind}" for count in counts)
        first_error = counts[0].first_error or "no error text recorded"
        warnings.append(
            ReportWarning(
                code="failed-iterations",
                message=(
                    f"{build}: {failed} of {totals[build]} iterations failed "
                    f"({kinds}); first error: {first_error}. Its statistics "
                    "include each phase that finished, also in a failed "
                    "iteration, and its totals only complete iterations; "
                    "raw.jsonl has every error."
                ),
            )
        )
    return warnings


def warn_no_records(records: Sequence[IterationRecord]) -> list[ReportWarning]:
    if records:
        return []
    message = (
        "The run has no iteration records (raw.jsonl is missing or empty), so "
        "nothing was measured. Run it again, or `coldstart run --resume` it if "
        "it was interrupted."
    )
    return [ReportWarning(code="no-data", message=message)]


def describe_spec(failed: Mapping[str, Any]) -> str:
    """Return a failed build's spec as the user wrote it."""
    spec = failed.get("spec")
    if isinstance(spec, Mapping):
        return str(spec.get("raw"))
    return str(spec)


def warn_manifest(manifest: Mapping[str, Any]) -> list[ReportWarning]:
    """Warn about a stand-in base image, failed builds and an unfinished run."""
    warnings = []
    image = manifest.get("base_image") or {}
    if image.get("stand_in"):
        warnings.append(
            ReportWarning(
                code="stand-in-image",
                message=(
                    f"The base image {image.get('tag')} (Python "
                    f"{image.get('python_version')}) is a {image.get('origin')}, "
                    f"used because {image.get('requested')} could not be pulled, "
                    "so timings may differ from that image. Run `coldstart image` "
                    "on a host that can pull it to measure on it."
                ),
            )
        )
    for failed in manifest.get("failed_builds", []):
        warnings.append(
            ReportWarning(
                code="failed-build",
                message=(
                    f"Build {failed.get('label')} ({describe_spec(failed)}) was not "
                    f"measured: {failed.get('error')}. Fix the spec or the build "
                    "and run again."
                ),
            )
        )
    status = manifest.get("status", "complete")
    # A failed run is one where every build failed, and the failed-build
    # warnings give the causes.
    if status not in ("complete", "failed"):
        warnings.append(
            ReportWarning(
                code="incomplete-run",
                message=(
                    f"The run's status is {status}, so some planned iterations are "
                    "missing. Run again for a complete comparison."
                ),
            )
        )
    return warnings


# --- summary -----------------------------------------------------------------


def scenario_phase_budgets(manifest: Mapping[str, Any]) -> dict[str, str]:
    phases = manifest.get("scenario", {}).get("phases", [])
    return {phase["name"]: phase["budget"] for phase in phases}


def build_labels(
    manifest: Mapping[str, Any], records: Sequence[IterationRecord]
) -> list[str]:
    """Return the baseline first, then the manifest's builds, then any others."""
    labels: dict[str, None] = {manifest["baseline"]: None}
    for build in manifest.get("builds", []):
        labels.setdefault(build["label"], None)
    for record in records:
        labels.setdefault(record.build, None)
    return list(labels)


def summarise(
    manifest: Mapping[str, Any],
    records: Iterable[IterationRecord | Mapping[str, Any]],
    *,
    metric: Metric = "wall",
    alpha: float = 0.05,
    min_effect: float = 0.05,
    confidence: float = stats.DEFAULT_CONFIDENCE,
) -> Summary:
    """Summarise a run: statistics, comparisons with the baseline, budgets.

    ``metric`` chooses the time that verdicts use ("wall" or "cpu"); both are
    always described. Budget checks use wall time (see ``check_budgets``).
    Warm-up records are counted in ``Summary.warmups`` and used nowhere else.
    """
    if metric not in METRIC_COLUMNS:
        raise ValueError(f"metric must be 'wall' or 'cpu', not {metric!r}")
    missing = [key for key in ("run_id", "baseline") if not manifest.get(key)]
    if missing:
        raise InvalidInput(
            f"the manifest has no {' or '.join(missing)}; it was not written by "
            "`coldstart run`, or the run failed before it started"
        )
    every_record = [as_record(record) for record in records]
    parsed = [record for record in every_record if not record.warmup]
    phase_budgets = scenario_phase_budgets(manifest)
    frame = records_to_frame(parsed, phase_budgets=phase_budgets)
    builds = build_labels(manifest, parsed)
    phases = [*(phase_budgets or unique_phase_names(parsed)), TOTAL_PHASE]
    baseline = manifest["baseline"]
    phase_summaries = summarise_phases(frame, builds, phases, confidence)
    comparisons = compare_builds(
        frame,
        baseline=baseline,
        candidates=[build for build in builds if build != baseline],
        phases=phases,
        metric=metric,
        alpha=alpha,
        min_effect=min_effect,
        confidence=confidence,
    )
    paired = compare_rounds(
        frame,
        baseline=baseline,
        candidates=[build for build in builds if build != baseline],
        phases=phases,
        metric=metric,
        confidence=confidence,
    )
    budget_checks = check_budgets(
        frame,
        builds=builds,
        budgets=manifest.get("scenario", {}).get("budgets", {}),
        phase_budgets=phase_budgets,
    )
    failures = count_failures(parsed)
    warnings = (
        warn_no_records(parsed)
        + warn_manifest(manifest)
        + warn_failures(failures, parsed)
        + warn_unstable(phase_summaries, metric)
        + warn_starved(frame, builds)
    )
    logger.debug("summarised %d records of run %s", len(parsed), manifest["run_id"])
    return Summary(
        run_id=manifest["run_id"],
        metric=metric,
        alpha=alpha,
        min_effect=min_effect,
        confidence=confidence,
        baseline=baseline,
        builds=tuple(builds),
        phases=tuple(phases),
        phase_summaries=phase_summaries,
        comparisons=comparisons,
        budget_checks=budget_checks,
        failures=failures,
        warnings=tuple(warnings),
        passed=budgets_passed(budget_checks),
        paired=paired,
        nodes=summarise_nodes(frame, parsed, builds, phases),
        memory_peaks=summarise_memory(parsed, builds),
        warmups=len(every_record) - len(parsed),
    )

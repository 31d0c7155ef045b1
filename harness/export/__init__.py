"""Report exporters: one module per output format behind one interface.

Each exporter turns a ``ReportData`` into text. ``get_exporter`` looks one up by
the name that ``coldstart report --format`` takes. The formatting helpers here
keep numbers identical across formats: seconds with 3 decimals ("0.512 s"),
signed deltas ("+0.401 s") and ratios with 2 decimals ("0.18x").
"""

from __future__ import annotations

import importlib
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from harness.analysis import Summary
from harness.errors import InvalidInput
from harness.models import IterationRecord
from harness.stats import Interval, MedianComparison, Verdict

# Format name -> module under harness.export that defines ``EXPORTER``.
EXPORTER_MODULES: Mapping[str, str] = {
    "table": "harness.export.table",
    "markdown": "harness.export.markdown",
    "json": "harness.export.json",
}

CFS_NOTE = (
    "Under a CFS quota, wall time moves in whole periods (100 ms by default), "
    "which is why CPU time is steadier."
)
PAIRED_NOTE = (
    "Each round runs every build once, so its candidate and baseline form a "
    "pair; the median of the per-round ratios cancels drift slower than a round."
)
NOT_AVAILABLE = "n/a"


@dataclass(frozen=True)
class ReportData:
    """The manifest, records and summary of one run, as every exporter takes them."""

    manifest: Mapping[str, Any]
    records: tuple[IterationRecord, ...]
    summary: Summary


class Exporter(Protocol):
    """Renders a report in one output format."""

    name: str

    def render(self, report: ReportData) -> str: ...


def get_exporter(name: str) -> Exporter:
    """Return the exporter for format ``name``, or raise InvalidInput if unknown."""
    module_name = EXPORTER_MODULES.get(name)
    if module_name is None:
        choices = ", ".join(sorted(EXPORTER_MODULES))
        raise InvalidInput(f"unknown report format {name!r}; choose one of: {choices}")
    exporter: Exporter = importlib.import_module(module_name).EXPORTER
    return exporter


# --- number formatting -------------------------------------------------------


def is_number(value: float | None) -> bool:
    return value is not None and math.isfinite(value)


def format_seconds(value: float | None) -> str:
    return f"{value:.3f} s" if is_number(value) else NOT_AVAILABLE


def format_delta(value: float | None) -> str:
    return f"{value:+.3f} s" if is_number(value) else NOT_AVAILABLE


def format_ratio(value: float | None) -> str:
    return f"{value:.2f}x" if is_number(value) else NOT_AVAILABLE


def format_percent(value: float | None) -> str:
    return f"{value:.1%}" if is_number(value) else NOT_AVAILABLE


def format_p_value(value: float | None) -> str:
    if not is_number(value):
        return NOT_AVAILABLE
    assert value is not None
    return "<0.001" if value < 0.001 else f"{value:.3f}"


def format_seconds_interval(interval: Interval, *, signed: bool = False) -> str:
    if not (is_number(interval.low) and is_number(interval.high)):
        return NOT_AVAILABLE
    sign = "+" if signed else ""
    return f"[{interval.low:{sign}.3f}, {interval.high:{sign}.3f}] s"


def format_ratio_interval(interval: Interval) -> str:
    if not (is_number(interval.low) and is_number(interval.high)):
        return NOT_AVAILABLE
    return f"[{interval.low:.2f}x, {interval.high:.2f}x]"


def format_verdict(result: MedianComparison) -> str:
    """Return the verdict, with the iterations estimate when inconclusive."""
    if result.verdict is not Verdict.INCONCLUSIVE:
        return result.verdict.value
    if result.iterations_needed is not None:
        return f"inconclusive (about {result.iterations_needed} iterations per build)"
    if math.isnan(result.p_value):
        return "inconclusive (too few iterations)"
    return "inconclusive"


def format_memory(memory_bytes: int | None) -> str:
    if not memory_bytes:
        return "no limit"
    return f"{memory_bytes / 2**20:g} MiB"


# --- shared sentences --------------------------------------------------------


def describe_verdict_rule(summary: Summary) -> str:
    return (
        f"Verdicts compare {summary.metric} time medians: faster or slower when "
        f"p < {summary.alpha:g} (Mann-Whitney U), the median changes by at least "
        f"{summary.min_effect:.0%} and the {summary.confidence:.0%} bootstrap CI of "
        "the delta excludes 0; no significant change when the CI of the ratio lies "
        f"within {1 - summary.min_effect:.2f}x-{1 + summary.min_effect:.2f}x; "
        "otherwise inconclusive."
    )


def describe_image(manifest: Mapping[str, Any]) -> str:
    """Name the base image that really ran and, for a stand-in, what it replaces."""
    image = manifest.get("base_image") or {}
    text = f"image {image.get('tag')} (Python {image.get('python_version')}"
    if image.get("stand_in"):
        text += f", stand-in for {image.get('requested')}"
    return text + ")"


def describe_cpu(limits: Mapping[str, Any]) -> str:
    """Describe the CPU share, its CFS period and the init share, if any."""
    period = limits.get("cpu_period_us") or 100_000
    text = f"cpus {limits.get('cpus')} per {period / 1000:g} ms CFS period"
    if limits.get("init_cpus") is not None:
        text += f" (init phases: cpus {limits['init_cpus']})"
    if limits.get("profile"):
        text += f", profile {limits['profile']}"
    return text


def describe_environment(manifest: Mapping[str, Any]) -> str:
    """Describe image, limits, iterations and host in one sentence."""
    limits = manifest.get("limits") or {}
    plan = manifest.get("plan") or {}
    host = manifest.get("host") or {}
    tool = manifest.get("tool") or {}
    return (
        f"Base {describe_image(manifest)}, {describe_cpu(limits)}, "
        f"memory {format_memory(limits.get('memory_bytes'))}, "
        f"{count_noun(plan.get('iterations'), 'iteration')} per build in "
        f"{plan.get('order')} "
        f"order{describe_warmup(plan)}, host kernel {host.get('kernel')} on "
        f"{host.get('cpu_model')} ({host.get('cpus')} CPUs), "
        f"{tool.get('name')} {tool.get('version')}."
    )


def count_noun(count: Any, noun: str) -> str:
    """Return "1 iteration" or "5 iterations": the count with its noun."""
    return f"{count} {noun}" if count == 1 else f"{count} {noun}s"


def describe_warmup(plan: Mapping[str, Any]) -> str:
    """Return ", after N unrecorded warm-up containers per build", or ""."""
    count = plan.get("warmup")
    if not count:
        return ""
    noun = "container" if count == 1 else "containers"
    return f" after {count} unrecorded warm-up {noun} per build"


def describe_memory_peaks(summary: Summary) -> list[str]:
    """Return one sentence per build on its containers' peak memory."""
    return [
        f"Peak memory of {peak.build}: median {peak.median_bytes / 2**20:.1f} MiB, "
        f"max {peak.max_bytes / 2**20:.1f} MiB over "
        f"{count_noun(peak.n, 'container')} "
        "(cgroup counter, page cache included)."
        for peak in summary.memory_peaks
    ]


def format_count(value: float | None) -> str:
    return f"{value:g}" if is_number(value) else NOT_AVAILABLE


def describe_build(build: Mapping[str, Any]) -> str:
    """Describe a prepared build as label, distribution, version, commit, image."""
    spec = build.get("spec") or {}
    text = (
        f"{build.get('label')}: {build.get('distribution')} {build.get('version')} "
        f"from {spec.get('raw')}"
    )
    if build.get("commit"):
        text += f" at commit {str(build['commit'])[:12]}"
    return text + f", image {str(build.get('image_id'))[:19]}"

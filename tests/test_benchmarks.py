"""Tests for the statistics benchmark's tables, without running containers."""

from benchmarks.statistics import (
    DetectionRun,
    StatisticsOptions,
    render_detection,
    render_false_positives,
)
from harness.stats import Verdict

SLOWER = {"cpu": Verdict.SLOWER, "wall": Verdict.SLOWER}
MISSED = {"cpu": Verdict.INCONCLUSIVE, "wall": Verdict.INCONCLUSIVE}
CPU_ONLY = {"cpu": Verdict.SLOWER, "wall": Verdict.INCONCLUSIVE}


def detection_run(effect: float, verdicts: dict[str, Verdict]) -> DetectionRun:
    return DetectionRun(effect, verdicts, 1 + effect, True)


def test_detection_smallest_reliable_effect() -> None:
    runs = [
        detection_run(0.2, SLOWER),
        detection_run(0.2, SLOWER),
        detection_run(0.1, CPU_ONLY),
        detection_run(0.1, CPU_ONLY),
        detection_run(0.05, MISSED),
        detection_run(0.05, SLOWER),
    ]
    lines = render_detection(runs, StatisticsOptions())
    assert "| +20% | 2 | 2 | 2 | 1.200x | 2 |" in lines
    assert "| +10% | 2 | 2 | 0 | 1.100x | 2 |" in lines
    assert "| +5% | 2 | 1 | 1 | 1.050x | 2 |" in lines
    assert lines[-1] == (
        "Smallest change detected in every run, and every larger change too: "
        "CPU time +10%, wall time +20%."
    )


def test_detection_gap_stops_the_search() -> None:
    """A smaller effect detected by luck after a miss does not count."""
    runs = [
        detection_run(0.2, MISSED),
        detection_run(0.1, SLOWER),
    ]
    lines = render_detection(runs, StatisticsOptions())
    assert lines[-1].endswith(
        "CPU time none of those tried, wall time none of those tried."
    )


def test_false_positive_rate_per_metric() -> None:
    verdicts = [
        {"wall": Verdict.SLOWER, "cpu": Verdict.NO_CHANGE},
        {"wall": Verdict.INCONCLUSIVE, "cpu": Verdict.NO_CHANGE},
        {"wall": Verdict.FASTER, "cpu": Verdict.INCONCLUSIVE},
        {"wall": Verdict.NO_CHANGE, "cpu": Verdict.NO_CHANGE},
    ]
    lines = render_false_positives(verdicts, StatisticsOptions())
    assert lines[0].startswith("### False positives: 2 A/A runs")
    assert "| wall | 4 | 2 | 50.0% | 1 |" in lines
    assert "| cpu | 4 | 0 | 0.0% | 3 |" in lines

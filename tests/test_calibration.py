"""The statistics on real runs: A/A comparisons and an injected CPU change.

Each test runs interleaved containers of tiny synthetic SDKs on the real
engine, writes a real run directory and reads the verdicts back from it the way
``coldstart report`` does.
"""

from __future__ import annotations

import uuid
from dataclasses import replace
from pathlib import Path

import docker
import pytest
from images import TEST_LABELS, build_test_image

from harness.analysis import Comparison, Summary, summarise
from harness.display import SilentDisplay
from harness.environment import Environment
from harness.models import Limits, Phase, PreparedBuild, Scenario
from harness.report import build_report
from harness.results import RunDirectory
from harness.runner import plan_iterations, run_plan
from harness.stats import Interval, Verdict

# Work is a fixed number of loop iterations, not a fixed CPU time, so the CPU
# time varies as it does for real code and the candidate's extra work is known
# exactly: 5,000,000 iterations take about 0.05 s of CPU on the test host.
SDK_SOURCE = """\
def spin(count):
    for _ in range(count):
        pass


spin({import_loops})


class Client:
    def __init__(self):
        spin({client_loops})
"""
BASE_LOOPS = 5_000_000
ITERATIONS = 8
SCENARIO = Scenario(
    name="synthetic",
    description="Import a synthetic SDK, then construct its client.",
    phases=(
        Phase("import sdk", "import sdk", "init"),
        Phase("Client()", "sdk.Client()", "invoke"),
    ),
    budgets={"init": 10.0, "invoke": 3.0},
)
# A full CPU keeps each container short; CPU time does not depend on the quota.
LIMITS = Limits(cpus=1.0, timeout_s=60.0)
AA_ALPHA = 0.001
AA_MIN_EFFECT = 0.30
# Cap on the iterations per build when an inconclusive calibration run is
# extended, which bounds the test's time on a loaded host.
MAX_ITERATIONS = 32


def sdk_build(
    client: docker.DockerClient, label: str, import_loops: int, client_loops: int
) -> PreparedBuild:
    source = SDK_SOURCE.format(import_loops=import_loops, client_loops=client_loops)
    build = build_test_image(client, "calibration", {"sdk.py": source})
    return replace(build, spec=replace(build.spec, label=label))


def start_run(builds: dict[str, PreparedBuild], results: Path) -> RunDirectory:
    """Create a run directory whose manifest requests verdicts on CPU time."""
    run_dir = RunDirectory.create(results, f"test-{uuid.uuid4().hex[:8]}")
    run_dir.write_manifest(
        {
            "run_id": run_dir.run_id,
            "status": "complete",
            "baseline": next(iter(builds)),
            "scenario": SCENARIO.to_dict(),
            "builds": [build.to_dict() for build in builds.values()],
            "limits": LIMITS.to_dict(),
            "plan": {"iterations": ITERATIONS, "order": "shuffle", "warmup": 1},
            "analysis": {"metric": "cpu", "alpha": 0.05, "min_effect": 0.05},
        }
    )
    return run_dir


def run_rounds(
    builds: dict[str, PreparedBuild],
    run_dir: RunDirectory,
    rounds: range,
    warmup: int = 0,
) -> None:
    """Run interleaved containers for ``rounds`` (numbered from 1) of every build."""
    env = Environment(quiet=True, docker_factory=docker.from_env)
    plan = plan_iterations(list(builds), len(rounds), "shuffle", rounds[0], warmup)
    offset = rounds[0] - 1
    plan = [
        planned
        if planned.warmup
        else replace(
            planned, round=planned.round + offset, iteration=planned.iteration + offset
        )
        for planned in plan
    ]
    records = run_plan(
        env,
        run_dir,
        builds,
        SCENARIO,
        LIMITS,
        plan,
        SilentDisplay(),
        labels=TEST_LABELS,
    )
    failed = [record.error for record in records if not record.ok]
    assert failed == []


def comparison_of(summary: Summary, phase: str) -> Comparison:
    (match,) = [c for c in summary.comparisons if c.phase == phase]
    return match


@pytest.mark.docker
def test_same_build_no_significant_change(tmp_path: Path) -> None:
    """A/A: one image as both baseline and candidate changes nothing.

    Verdicts use CPU time, because the engine is shared with other test runs
    on two cores, so wall time here moves with their load. At the default
    alpha of 0.05 an A/A phase comes out faster or slower about one time in
    twenty by design (BENCHMARKS.md measures the rate on this host), so the
    test uses alpha 0.001. Its minimum effect of 30% is sized for the
    CPU-time CV of 15-17% seen on this host while other suites ran.
    """
    client = docker.from_env()
    builds = {
        label: sdk_build(client, label, BASE_LOOPS, BASE_LOOPS)
        for label in ("baseline", "candidate")
    }
    assert builds["baseline"].image_id == builds["candidate"].image_id
    run_dir = start_run(builds, tmp_path)
    run_rounds(builds, run_dir, range(1, ITERATIONS + 1), warmup=1)
    _, _, summary = build_report(run_dir, alpha=AA_ALPHA, min_effect=AA_MIN_EFFECT)
    assert summary.metric == "cpu"
    assert summary.warmups == 2
    assert [c.phase for c in summary.comparisons] == ["import sdk", "Client()", "total"]
    for comparison in summary.comparisons:
        result = comparison.result
        assert result.n_baseline == ITERATIONS
        assert result.n_candidate == ITERATIONS
        # NOTE: when other jobs saturate both cores, about half the containers
        # run 20-60% slower and the CI can be too wide even for 30%, so the
        # verdict may be inconclusive. It must never be faster or slower.
        assert result.verdict is not Verdict.FASTER, (comparison.phase, result)
        assert result.verdict is not Verdict.SLOWER, (comparison.phase, result)
        if result.verdict is not Verdict.NO_CHANGE:
            assert result.verdict is Verdict.INCONCLUSIVE
            assert result.iterations_needed is not None


def run_calibration(tmp_path: Path, percent: int) -> RunDirectory:
    """Run a candidate whose Client() loops ``percent``% more than the baseline's.

    An inconclusive result is extended once to the iterations per build that
    the report estimates would settle it (MAX_ITERATIONS without an estimate),
    at most MAX_ITERATIONS.
    """
    client = docker.from_env()
    slower_loops = BASE_LOOPS * (100 + percent) // 100
    builds = {
        "baseline": sdk_build(client, "baseline", BASE_LOOPS, BASE_LOOPS),
        "candidate": sdk_build(client, "candidate", BASE_LOOPS, slower_loops),
    }
    run_dir = start_run(builds, tmp_path)
    run_rounds(builds, run_dir, range(1, ITERATIONS + 1), warmup=1)
    _, _, summary = build_report(run_dir)
    result = comparison_of(summary, "Client()").result
    if result.verdict is Verdict.INCONCLUSIVE:
        needed = result.iterations_needed or MAX_ITERATIONS
        total = max(ITERATIONS + 1, min(needed, MAX_ITERATIONS))
        run_rounds(builds, run_dir, range(ITERATIONS + 1, total + 1))
    return run_dir


def ratio_ci_99(run_dir: RunDirectory) -> Interval:
    """Return the 99% CI of Client()'s CPU-time ratio, candidate over baseline."""
    manifest = run_dir.read_manifest()
    wide = summarise(manifest, run_dir.read_records(), metric="cpu", confidence=0.99)
    return comparison_of(wide, "Client()").result.ratio_ci


@pytest.mark.docker
def test_injected_10_percent_within_ci(tmp_path: Path) -> None:
    """Calibration: 10% more loop iterations in Client() lies within the CI.

    The injected ratio is defined by the loop counts (1.10). The measured CPU
    ratio is a little lower because the phase also pays for a function call
    and the probe's own bookkeeping, which do not grow. At 0.05 s of work that
    overhead is well under 1%, so the CI must contain 1.10 within 0.01. It is
    a 99% CI, so the check fails about one run in a hundred by chance.

    The verdict may be inconclusive: with other suites running on this 2-core
    host, 10 iterations detected +10% in two of three runs (BENCHMARKS.md).
    It must never point the wrong way.
    """
    run_dir = run_calibration(tmp_path, 10)
    ratio_ci = ratio_ci_99(run_dir)
    assert ratio_ci.low - 0.01 <= 1.10 <= ratio_ci.high + 0.01, ratio_ci
    _, _, summary = build_report(run_dir)
    result = comparison_of(summary, "Client()").result
    assert result.verdict in (Verdict.SLOWER, Verdict.INCONCLUSIVE), result
    # The import phase did not change: no verdict at a strict alpha.
    _, _, strict = build_report(run_dir, alpha=AA_ALPHA)
    unchanged = comparison_of(strict, "import sdk").result
    assert unchanged.verdict is not Verdict.SLOWER, unchanged
    assert unchanged.verdict is not Verdict.FASTER, unchanged


@pytest.mark.docker
def test_injected_25_percent_detected(tmp_path: Path) -> None:
    """Calibration: 25% more loop iterations in Client() comes out slower.

    25% is above the +20% that 10 iterations detected in every run on this
    host while other suites ran (BENCHMARKS.md).
    """
    # NOTE: when other jobs saturate both cores, CPU time becomes bimodal
    # (about half the containers run 20-60% slower), and a run that puts more
    # slow containers on the baseline has seen the median ratio fall to 1.07
    # at 32 iterations. This test then fails; it passes on a host that is not
    # saturated.
    run_dir = run_calibration(tmp_path, 25)
    _, _, summary = build_report(run_dir)
    result = comparison_of(summary, "Client()").result
    assert result.verdict is Verdict.SLOWER, result
    assert result.ratio > 1.1
    ratio_ci = ratio_ci_99(run_dir)
    assert ratio_ci.low - 0.01 <= 1.25 <= ratio_ci.high + 0.01, ratio_ci

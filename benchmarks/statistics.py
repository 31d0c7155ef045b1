"""Trustworthiness of the verdicts: noise, false positives and detection power.

Three measurements, all with 10 iterations per build by default:

- the CV of each phase, wall and CPU time, in the default experiment (stripe
  15.3.0 against 15.3.1 from PyPI at --cpus 0.1);
- the false-positive rate of A/A runs (one synthetic SDK image as baseline and
  candidate), repeated for as long as the time budget allows;
- the detection rate of injected CPU changes: the candidate's Client() runs a
  fixed fraction more loop iterations than the baseline's.
"""

from __future__ import annotations

import logging
import os
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from benchmarks import synthetic
from harness.analysis import TOTAL_PHASE, Metric, Summary
from harness.baseimage import resolve_base_image
from harness.display import SilentDisplay
from harness.engine import engine_info, host_info
from harness.environment import Environment
from harness.models import PreparedBuild
from harness.pipeline import RunRequest, run_experiment
from harness.report import AnalysisOptions, build_report
from harness.results import RunDirectory
from harness.runner import plan_iterations, run_plan
from harness.scenario import load_scenario
from harness.shaping import resolve_limits
from harness.specs import parse_spec
from harness.stats import Verdict

logger = logging.getLogger(__name__)

DECISIVE = (Verdict.FASTER, Verdict.SLOWER)
METRICS: tuple[Metric, ...] = ("wall", "cpu")
IMAGE = "python:3.11-slim"


COMMAND = "python -m benchmarks statistics"


@dataclass(frozen=True)
class StatisticsOptions:
    """Sizes of the three measurements; the defaults are what BENCHMARKS.md uses.

    ``aa_seconds`` is the time budget of the repeated A/A runs (at least one
    runs). ``effects`` are injected CPU changes as fractions, each run
    ``repeats`` times.
    """

    iterations: int = 10
    aa_seconds: float = 600.0
    effects: tuple[float, ...] = (0.05, 0.1, 0.2)
    repeats: int = 3
    results: Path = Path("results/benchmarks")


@dataclass(frozen=True)
class DetectionRun:
    """One calibration run: the injected change and the resulting verdicts."""

    effect: float
    verdicts: dict[str, Verdict]
    ratio: float
    ratio_ci_contains: bool


def run(options: StatisticsOptions | None = None) -> str:
    """Run the three measurements and return the section's Markdown."""
    options = options or StatisticsOptions()
    env = Environment(quiet=True)
    started = datetime.now(UTC)
    load_before = os.getloadavg()
    base = resolve_base_image(env.docker, IMAGE, cache_dir=env.cache_dir)
    noise = measure_default_experiment(env, options)
    false_positives = measure_false_positives(env, base.tag, options)
    detection = measure_detection(env, base.tag, options)
    machine = describe_machine(env, base.tag, load_before, os.getloadavg())
    return render_section(options, started, machine, noise, false_positives, detection)


# --- runs --------------------------------------------------------------------


def measure_default_experiment(env: Environment, options: StatisticsOptions) -> Summary:
    request = RunRequest(
        specs=(
            parse_spec("baseline", "stripe==15.3.0"),
            parse_spec("candidate", "stripe==15.3.1"),
        ),
        baseline="baseline",
        scenario=load_scenario("stripe-lambda"),
        limits=resolve_limits(cpus=0.1),
        iterations=options.iterations,
        image=IMAGE,
        results_root=options.results,
        command=("python", "-m", "benchmarks", "statistics"),
    )
    outcome = run_experiment(env, request)
    logger.info("default experiment written to %s", outcome.run_dir.path)
    summary: Summary = outcome.summary
    return summary


def run_synthetic(
    env: Environment,
    builds: dict[str, PreparedBuild],
    options: StatisticsOptions,
    seed: int,
) -> RunDirectory:
    """Run one interleaved comparison of synthetic builds with one warm-up each."""
    run_dir = RunDirectory.create(options.results, f"bench-{uuid.uuid4().hex[:8]}")
    run_dir.write_manifest(
        {
            "run_id": run_dir.run_id,
            "status": "complete",
            "baseline": next(iter(builds)),
            "scenario": synthetic.SCENARIO.to_dict(),
            "builds": [build.to_dict() for build in builds.values()],
            "limits": synthetic.LIMITS.to_dict(),
            "plan": {"iterations": options.iterations, "order": "shuffle"},
            "analysis": AnalysisOptions().to_dict(),
        }
    )
    plan = plan_iterations(list(builds), options.iterations, "shuffle", seed, 1)
    limits = synthetic.LIMITS
    display = SilentDisplay()
    labels = synthetic.LABELS
    run_plan(
        env, run_dir, builds, synthetic.SCENARIO, limits, plan, display, labels=labels
    )
    return run_dir


def measure_false_positives(
    env: Environment, base_tag: str, options: StatisticsOptions
) -> list[dict[str, Verdict]]:
    """Repeat A/A runs until the time budget is spent; return each verdict.

    Each item maps "wall" and "cpu" to the verdict of one phase of one run.
    """
    builds = {
        label: synthetic.build_sdk(env.docker, base_tag, label)
        for label in ("baseline", "candidate")
    }
    verdicts: list[dict[str, Verdict]] = []
    deadline = time.monotonic() + options.aa_seconds
    seed = 0
    while seed == 0 or time.monotonic() < deadline:
        run_dir = run_synthetic(env, builds, options, seed)
        verdicts += phase_verdicts(run_dir)
        seed += 1
        logger.info("A/A run %d done: %s", seed, run_dir.path)
    return verdicts


def phase_verdicts(run_dir: RunDirectory) -> list[dict[str, Verdict]]:
    """Return, per phase (not the total), the verdict on each metric."""
    by_phase: dict[str, dict[str, Verdict]] = {}
    for metric in METRICS:
        _, _, summary = build_report(run_dir, metric=metric)
        for comparison in summary.comparisons:
            if comparison.phase != TOTAL_PHASE:
                by_phase.setdefault(comparison.phase, {})[metric] = (
                    comparison.result.verdict
                )
    return list(by_phase.values())


def measure_detection(
    env: Environment, base_tag: str, options: StatisticsOptions
) -> list[DetectionRun]:
    effects = options.effects
    baseline = synthetic.build_sdk(env.docker, base_tag, "baseline")
    runs = []
    for effect in effects:
        candidate = synthetic.build_sdk(env.docker, base_tag, "candidate", 1 + effect)
        builds = {"baseline": baseline, "candidate": candidate}
        for repeat in range(options.repeats):
            run_dir = run_synthetic(env, builds, options, seed=1000 + repeat)
            runs.append(read_detection(run_dir, effect))
            logger.info("effect %+.0f%% run %d done", effect * 100, repeat + 1)
    return runs


def read_detection(run_dir: RunDirectory, effect: float) -> DetectionRun:
    verdicts: dict[str, Verdict] = {}
    ratio = float("nan")
    contains = False
    for metric in METRICS:
        _, _, summary = build_report(run_dir, metric=metric)
        (comparison,) = [c for c in summary.comparisons if c.phase == "Client()"]
        verdicts[metric] = comparison.result.verdict
        if metric == "cpu":
            ratio = comparison.result.ratio
            contains = comparison.result.ratio_ci.contains(1 + effect)
    return DetectionRun(effect, verdicts, ratio, contains)


# --- report ------------------------------------------------------------------


def describe_machine(
    env: Environment,
    base_tag: str,
    load_before: tuple[float, float, float],
    load_after: tuple[float, float, float],
) -> str:
    host = host_info()
    engine = engine_info(env.docker)
    return (
        f"{host['cpus']} CPUs ({host['cpu_model']}), {engine['os']}, kernel "
        f"{host['kernel']}, Docker {engine['server_version']} with cgroup "
        f"v{engine['cgroup_version']}, base image {base_tag}; 1-minute load "
        f"average {load_before[0]:.1f} at the start and {load_after[0]:.1f} at "
        "the end (other jobs shared the host)"
    )


def render_section(
    options: StatisticsOptions,
    started: datetime,
    machine: str,
    noise: Summary,
    false_positives: Sequence[dict[str, Verdict]],
    detection: Sequence[DetectionRun],
) -> str:
    lines = [
        "## Statistics: noise, false positives, detection",
        "",
        f"Command: `{COMMAND}` (`make benchmark` runs every section). "
        f"Run {started:%Y-%m-%d %H:%M} UTC on {machine}.",
        "",
        *render_noise(noise, options.iterations),
        "",
        *render_false_positives(false_positives, options),
        "",
        *render_detection(detection, options),
    ]
    return "\n".join(lines)


def render_noise(summary: Summary, iterations: int) -> list[str]:
    rows = [
        f"| {s.build} | {s.phase} | {s.n} | {s.wall.median:.3f} s | "
        f"{format_cv(s.wall.cv)} | {s.cpu.median:.3f} s | {format_cv(s.cpu.cv)} |"
        for s in summary.phase_summaries
    ]
    return [
        f"### CV per phase: stripe 15.3.0 against 15.3.1, {iterations} iterations, "
        "--cpus 0.1",
        "",
        "| build | phase | n | wall median | wall CV | CPU median | CPU CV |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: |",
        *rows,
    ]


def format_cv(cv: float | None) -> str:
    return f"{cv:.1%}" if cv is not None else "n/a"


def render_false_positives(
    verdicts: Sequence[dict[str, Verdict]], options: StatisticsOptions
) -> list[str]:
    runs = len(verdicts) // len(synthetic.SCENARIO.phases)
    rows = []
    for metric in METRICS:
        decisive = sum(1 for item in verdicts if item[metric] in DECISIVE)
        unchanged = sum(1 for item in verdicts if item[metric] is Verdict.NO_CHANGE)
        rows.append(
            f"| {metric} | {len(verdicts)} | {decisive} | "
            f"{decisive / len(verdicts):.1%} | {unchanged} |"
        )
    return [
        f"### False positives: {runs} A/A runs of a synthetic SDK, "
        f"{options.iterations} iterations, --cpus 0.1",
        "",
        "One image as baseline and candidate; two phases of about 0.05 s of CPU "
        "each. A false positive is a phase verdict of faster or slower (alpha "
        "0.05, minimum effect 5%).",
        "",
        "| metric | phase comparisons | faster or slower | rate | no significant "
        "change |",
        "| --- | ---: | ---: | ---: | ---: |",
        *rows,
    ]


def render_detection(
    runs: Sequence[DetectionRun], options: StatisticsOptions
) -> list[str]:
    rows = []
    # The smallest effect that, like every larger one, was detected in every run.
    reliable: dict[str, float | None] = {metric: None for metric in METRICS}
    missed: set[str] = set()
    for effect in sorted({run.effect for run in runs}, reverse=True):
        group = [run for run in runs if run.effect == effect]
        detected = {
            metric: sum(1 for run in group if run.verdicts[metric] is Verdict.SLOWER)
            for metric in METRICS
        }
        for metric in METRICS:
            if detected[metric] < len(group):
                missed.add(metric)
            elif metric not in missed:
                reliable[metric] = effect
        ratios = sorted(run.ratio for run in group)
        contains = sum(1 for run in group if run.ratio_ci_contains)
        rows.append(
            f"| +{effect:.0%} | {len(group)} | {detected['cpu']} | {detected['wall']} "
            f"| {ratios[len(ratios) // 2]:.3f}x | {contains} |"
        )
    return [
        f"### Detection: injected CPU change in Client(), {options.iterations} "
        "iterations, --cpus 0.1",
        "",
        "The candidate's Client() runs the stated fraction more loop iterations "
        "than the baseline's. Detected means the verdict on that phase is slower.",
        "",
        "| injected | runs | detected (CPU) | detected (wall) | median CPU ratio | "
        "CPU ratio CI contains the injected ratio |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
        *rows,
        "",
        "Smallest change detected in every run, and every larger change too: "
        f"CPU time {format_effect(reliable['cpu'])}, "
        f"wall time {format_effect(reliable['wall'])}.",
    ]


def format_effect(effect: float | None) -> str:
    return f"+{effect:.0%}" if effect is not None else "none of those tried"

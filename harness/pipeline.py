"""The main job as a pipeline: scenario, builds, plan, run, analyse, report."""

from __future__ import annotations

import logging
import platform
import signal
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from harness import __version__, resume
from harness.backends import Execution, resolve_execution, run_measurements
from harness.baseimage import resolve_base_image
from harness.breakdown import BREAKDOWN_FILE, run_breakdown
from harness.builds import prepare_build
from harness.clean import warn_about_dead_runs
from harness.display import make_display
from harness.engine import engine_info, host_info
from harness.environment import Environment
from harness.errors import BuildFailed, EngineUnavailable, Interrupted
from harness.history import index_run_safely
from harness.models import (
    BaseImage,
    BuildSpec,
    FailureKind,
    IterationRecord,
    Limits,
    PreparedBuild,
    Scenario,
)
from harness.report import AnalysisOptions, build_report, write_report
from harness.results import ResultsUnwritable, RunDirectory, new_run_id
from harness.runner import plan_iterations, run_plan
from harness.shaping import plan_quota_switch

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class RunRequest:
    """Everything ``coldstart run`` was asked to do."""

    specs: tuple[BuildSpec, ...]
    baseline: str
    scenario: Scenario
    limits: Limits
    iterations: int
    image: str
    results_root: Path
    order: str = "shuffle"
    seed: int = 0
    command: tuple[str, ...] = ()
    retries: int = 0
    execution: Execution = field(default_factory=Execution)
    warmup: int = 1
    analysis: AnalysisOptions = AnalysisOptions()
    # Extra -X importtime iterations per build after the timed ones; 0: none.
    breakdown: int = 0
    # Build checkouts' wheels in a container with no network, not on the host.
    build_in_container: bool = False


@dataclass
class RunOutcome:
    """Result of a finished run: its directory, summary, failed builds and records."""

    run_dir: RunDirectory
    summary: Any
    failed_builds: list[BuildFailed] = field(default_factory=list)
    records: list[IterationRecord] = field(default_factory=list)


def run_experiment(env: Environment, request: RunRequest) -> RunOutcome:
    """Prepare every build, run the interleaved plan and write the report.

    A build that fails to prepare is recorded and skipped so that the others
    are still measured. On a signal the manifest is marked interrupted, the
    report is written from what was measured, and Interrupted propagates.
    """
    # Raises InvalidInput before anything is built if the phases cannot switch.
    plan_quota_switch(request.scenario, request.limits)
    execution = resolve_execution(env, request.execution, request.limits)
    request = replace(request, execution=execution)
    base = resolve_base_image(env.docker, request.image, cache_dir=env.cache_dir)
    warn_about_dead_runs(env.docker)
    run_dir = RunDirectory.create(request.results_root, new_run_id(env.now()))
    logger.info("results go to %s", run_dir.path)
    run_dir.write_manifest(initial_manifest(env, request, base, run_dir.run_id))

    with stop_on_failure(env, run_dir):
        prepared, failures = prepare_builds(env, request, base, run_dir)
        records = measure(env, request, run_dir, prepared)
        breakdown_builds(
            env, run_dir, prepared, request.scenario, request.limits, request.breakdown
        )
    # "complete" even when some builds failed (the manifest lists them under
    # failed_builds); "failed" when no build could be measured.
    status = "complete" if prepared else "failed"
    summary = finish_run(env, run_dir, status=status)
    return RunOutcome(run_dir, summary, failures, records)


@contextmanager
def stop_on_failure(env: Environment, run_dir: RunDirectory) -> Iterator[None]:
    """Mark the run interrupted and write its report when the block stops it.

    A signal, an engine that stopped responding and a results directory that
    can no longer be written all stop a run. What was measured stays in
    raw.jsonl, and ``coldstart run --resume`` completes the run later.
    """
    try:
        yield
    except KeyboardInterrupt as error:
        # Outside raise_on_signals (while builds are prepared) Ctrl-C arrives
        # as KeyboardInterrupt.
        mark_interrupted(env, run_dir, Interrupted(signal.SIGINT))
        raise Interrupted(signal.SIGINT, run_dir.path) from error
    except Interrupted as error:
        mark_interrupted(env, run_dir, error)
        raise Interrupted(error.signal_number, run_dir.path) from error
    except (EngineUnavailable, ResultsUnwritable) as error:
        mark_interrupted(env, run_dir, error)
        raise


def mark_interrupted(env: Environment, run_dir: RunDirectory, error: Exception) -> None:
    """Write the report of a stopped run and mark its manifest interrupted."""
    logger.error("run %s stopped: %s", run_dir.run_id, error)
    try:
        finish_run(env, run_dir, status="interrupted", stop_reason=str(error))
    except ResultsUnwritable as write_error:
        logger.error("could not mark the run interrupted: %s", write_error)


def resume_experiment(env: Environment, path: Path, retries: int = 0) -> RunOutcome:
    """Run the iterations an interrupted run is missing, then write its report.

    Raises InvalidInput, before anything runs, when the run's builds, base
    image or scenario can no longer be reproduced.
    """
    run_dir = RunDirectory.open(path)
    manifest = resume.load_resumable(run_dir)
    scenario = resume.scenario_from_manifest(manifest)
    resume.check_base_image(env, manifest)
    prepared = resume.builds_from_manifest(env, manifest)
    plan = resume.remaining_plan(manifest, prepared, run_dir.read_records())
    warn_about_dead_runs(env.docker)
    resumed_at = [*manifest.get("resumed_at", []), env.now().isoformat()]
    run_dir.update_manifest(status="running", resumed_at=resumed_at)
    logger.info("resuming run %s: %d iterations left", run_dir.run_id, len(plan))
    limits = resume.limits_from_manifest(manifest)
    builds = {build.label: build for build in prepared}
    with stop_on_failure(env, run_dir):
        run_plan(
            env, run_dir, builds, scenario, limits, plan, make_display(env), retries
        )
        if not (run_dir.path / BREAKDOWN_FILE).exists():
            # A run recorded before the plan stored "breakdown" gets none.
            count = manifest["plan"].get("breakdown", 0)
            breakdown_builds(env, run_dir, prepared, scenario, limits, count)
    summary = finish_run(env, run_dir, status="complete")
    failed = [BuildFailed(f["label"], f["error"]) for f in manifest["failed_builds"]]
    return RunOutcome(run_dir, summary, failed, run_dir.read_records())


def breakdown_builds(
    env: Environment,
    run_dir: RunDirectory,
    prepared: list[PreparedBuild],
    scenario: Scenario,
    limits: Limits,
    iterations: int,
) -> None:
    """Run the import breakdown's iterations, unless there are none to run."""
    if not iterations or not prepared:
        return
    logger.info("import breakdown: %d iterations per build", iterations)
    run_breakdown(env.docker, run_dir, prepared, scenario, limits, iterations)


def initial_manifest(
    env: Environment, request: RunRequest, base: BaseImage, run_id: str
) -> dict[str, Any]:
    """Return the manifest as written before the first build is prepared."""
    return {
        "tool": {"name": "coldstart", "version": __version__},
        "run_id": run_id,
        "command": list(request.command),
        "status": "running",
        "started_at": env.now().isoformat(),
        "finished_at": None,
        "scenario": request.scenario.to_dict(),
        "baseline": request.baseline,
        "builds": [],
        "failed_builds": [],
        "base_image": base.to_dict(),
        "limits": request.limits.to_dict(),
        "plan": {
            "iterations": request.iterations,
            "order": request.order,
            "seed": request.seed,
            "warmup": request.warmup,
            "build_in_container": request.build_in_container,
            "breakdown": request.breakdown,
        },
        "analysis": request.analysis.to_dict(),
        "host": host_info(),
        "engine": engine_info(env.docker),
        "harness_python": platform.python_version(),
        "python_versions": [],
    }


def prepare_builds(
    env: Environment, request: RunRequest, base: BaseImage, run_dir: RunDirectory
) -> tuple[list[PreparedBuild], list[BuildFailed]]:
    """Prepare all builds at once; record a failed build and go on with the rest.

    Measurement starts when every build is ready, because each round needs
    every build. Preparing them concurrently overlaps their downloads and
    image builds. Results keep the order of ``request.specs``.
    """
    # NOTE: Ctrl-C during preparation stops the run at once, but a pip or
    # image build already started goes on without its parent until it ends.
    with ThreadPoolExecutor(max_workers=len(request.specs) or 1) as executor:
        futures = [
            executor.submit(
                prepare_one,
                env,
                spec,
                request.scenario,
                base,
                request.build_in_container,
            )
            for spec in request.specs
        ]
    prepared: list[PreparedBuild] = []
    failures: list[BuildFailed] = []
    for spec, future in zip(request.specs, futures, strict=True):
        outcome = future.result()
        if isinstance(outcome, BuildFailed):
            failures.append(outcome)
            record_build_failure(env, run_dir, spec, outcome)
            continue
        prepared.append(outcome)
    run_dir.update_manifest(builds=[b.to_dict() for b in prepared])
    return prepared, failures


def prepare_one(
    env: Environment,
    spec: BuildSpec,
    scenario: Scenario,
    base: BaseImage,
    build_in_container: bool = False,
) -> PreparedBuild | BuildFailed:
    """Prepare one build in a worker thread; return its failure instead of raising."""
    logger.info("preparing build %s (%s)", spec.label, spec.raw)
    try:
        return prepare_build(
            env, spec, scenario, base, build_in_container=build_in_container
        )
    except BuildFailed as error:
        # The cause goes into the final error: line, so it is not repeated here.
        logger.warning(
            "build %r failed; the final error line and the report give the cause",
            spec.label,
        )
        return error


def record_build_failure(
    env: Environment, run_dir: RunDirectory, spec: BuildSpec, error: BuildFailed
) -> None:
    manifest = run_dir.read_manifest()
    failed = manifest.get("failed_builds", [])
    failed.append({"label": spec.label, "spec": spec.to_dict(), "error": error.cause})
    run_dir.update_manifest(failed_builds=failed)
    record = IterationRecord(
        build=spec.label,
        iteration=0,
        round=0,
        started_at=env.now().isoformat(),
        container_s=0.0,
        failure=FailureKind.BUILD,
        error=error.cause,
    )
    run_dir.append_record(record)


def measure(
    env: Environment,
    request: RunRequest,
    run_dir: RunDirectory,
    prepared: list[PreparedBuild],
) -> list[IterationRecord]:
    """Run the interleaved plan over the prepared builds."""
    if not prepared:
        return []
    labels = [build.label for build in prepared]
    plan = plan_iterations(
        labels, request.iterations, request.order, request.seed, request.warmup
    )
    logger.info(
        "running %d containers: %d builds x (%d warm-up + %d iterations) at --cpus %g",
        len(plan),
        len(labels),
        request.warmup,
        request.iterations,
        request.limits.cpus,
    )
    display = make_display(env)
    builds = {build.label: build for build in prepared}
    return run_measurements(
        env,
        request.execution,
        run_dir,
        builds,
        request.scenario,
        request.limits,
        plan,
        display,
        request.retries,
    )


def finish_run(
    env: Environment, run_dir: RunDirectory, status: str, stop_reason: str | None = None
) -> Any:
    """Mark the run finished, write summary.json and report.md, index the run."""
    records = run_dir.read_records()
    versions = sorted({r.python_version for r in records if r.python_version})
    run_dir.update_manifest(
        status=status,
        finished_at=env.now().isoformat(),
        python_versions=versions,
        stop_reason=stop_reason,
    )
    manifest, records, summary = build_report(run_dir)
    write_report(run_dir, summary, manifest, records)
    index_run_safely(run_dir.path.parent, manifest, summary)
    return summary

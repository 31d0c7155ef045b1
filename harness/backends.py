"""Choose how the plan runs: one container at a time, several, or on a swarm.

``-j 1`` on the local backend keeps the one-at-a-time runner, whose records
arrive in plan order. Larger ``-j`` and the swarm backend run iterations
concurrently, with records in finishing order.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

from harness.display import Display
from harness.environment import Environment
from harness.errors import InvalidInput
from harness.models import IterationRecord, Limits, PreparedBuild, Scenario
from harness.parallel import engine_cores, resolve_jobs, run_plan_parallel
from harness.results import RunDirectory
from harness.runner import PlannedIteration, run_plan

logger = logging.getLogger(__name__)

BACKENDS = ("local", "swarm")


@dataclass(frozen=True)
class Execution:
    """Backend and job count of a run, with None for the default job count."""

    backend: str = "local"
    jobs: int | None = None
    registry: str | None = None

    def check(self) -> None:
        if self.backend not in BACKENDS:
            raise InvalidInput(
                f"invalid --backend {self.backend!r}: choose local or swarm"
            )
        if self.registry is not None and self.backend != "swarm":
            raise InvalidInput(
                "--registry is only used by --backend swarm: drop it or add "
                "--backend swarm"
            )


def resolve_execution(
    env: Environment, execution: Execution, limits: Limits
) -> Execution:
    """Return ``execution`` with its job count checked or defaulted.

    Raises InvalidInput for a count that oversubscribes the host or swarm,
    and EngineUnavailable for --backend swarm on an engine that is no swarm
    manager, both before any build is prepared.
    """
    execution.check()
    if execution.backend == "swarm":
        from harness.swarm import default_swarm_jobs, list_nodes

        nodes = list_nodes(env.docker)
        slots = default_swarm_jobs(nodes, limits.cpus)
        if execution.jobs is not None and execution.jobs > max(slots, 1):
            raise InvalidInput(
                f"--jobs {execution.jobs} at --cpus {limits.cpus:g} oversubscribes "
                f"the swarm: its {len(nodes)} nodes fit {slots} containers after "
                f"one core of headroom each; use --jobs {slots} or fewer"
            )
        return replace(execution, jobs=execution.jobs or slots)
    cores = engine_cores(env.docker)
    check_cpu_share(limits, cores)
    # With --init-cpus a container keeps the larger quota during its init phases.
    if limits.init_cpus is not None and limits.init_cpus > limits.cpus:
        jobs = resolve_jobs(execution.jobs, cores, limits.init_cpus, "--init-cpus")
    else:
        jobs = resolve_jobs(execution.jobs, cores, limits.cpus)
    return replace(execution, jobs=jobs)


def check_cpu_share(limits: Limits, cores: float) -> None:
    """Raise InvalidInput for a CPU quota larger than the engine's host.

    Such a quota never throttles, so the run would not measure what it names.
    """
    shares = [("--cpus", limits.cpus), ("--init-cpus", limits.init_cpus)]
    for option, cpus in shares:
        if cpus is not None and cpus > cores + 1e-9:
            source = (
                f"{option} or --profile {limits.profile}" if limits.profile else option
            )
            raise InvalidInput(
                f"invalid {source}: {cpus:g} cores exceed the {cores:g} cores of "
                "the engine's host, so the quota would never throttle; use at "
                f"most {cores:g} or run on a larger host"
            )


def run_measurements(
    env: Environment,
    execution: Execution,
    run_dir: RunDirectory,
    builds: dict[str, PreparedBuild],
    scenario: Scenario,
    limits: Limits,
    plan: list[PlannedIteration],
    display: Display,
    retries: int = 0,
) -> list[IterationRecord]:
    """Run the plan on the chosen backend; record the backend in the manifest.

    ``execution`` must have come through ``resolve_execution``. Engine errors
    are retried up to ``retries`` times on the local backend only.
    """
    if execution.backend == "swarm":
        if scenario.sidecar is not None:
            # A swarm task cannot join another container's network namespace.
            raise InvalidInput(
                f"scenario {scenario.name!r} starts a sidecar, which the swarm "
                "backend does not support: use --backend local"
            )
        return run_on_swarm(
            env, execution, run_dir, builds, scenario, limits, plan, display
        )
    jobs = execution.jobs or 1
    cores = engine_cores(env.docker)
    record_execution(run_dir, {"backend": "local", "jobs": jobs, "cores": cores})
    logger.info("running up to %d containers at once on %g cores", jobs, cores)
    if jobs == 1:
        return run_plan(env, run_dir, builds, scenario, limits, plan, display, retries)
    return run_plan_parallel(
        env, run_dir, builds, scenario, limits, plan, display, jobs, retries=retries
    )


def run_on_swarm(
    env: Environment,
    execution: Execution,
    run_dir: RunDirectory,
    builds: dict[str, PreparedBuild],
    scenario: Scenario,
    limits: Limits,
    plan: list[PlannedIteration],
    display: Display,
) -> list[IterationRecord]:
    """Run the plan as swarm jobs, after making the images reachable."""
    from harness.swarm import (
        describe_image_distribution,
        list_nodes,
        resolve_image_refs,
        run_plan_swarm,
    )

    nodes = list_nodes(env.docker)
    jobs = execution.jobs or 1
    images = resolve_image_refs(env.docker, builds, execution.registry)
    record_execution(
        run_dir,
        {
            "backend": "swarm",
            "jobs": jobs,
            "nodes": [node.to_dict() for node in nodes],
            "images": {
                **describe_image_distribution(execution.registry),
                "refs": images,
            },
        },
    )
    logger.info("running up to %d swarm jobs at once on %d nodes", jobs, len(nodes))
    return run_plan_swarm(
        env, run_dir, builds, images, scenario, limits, plan, display, jobs
    )


def record_execution(run_dir: RunDirectory, execution: Mapping[str, Any]) -> None:
    """Store the backend, job count and nodes in the manifest's plan."""
    plan = run_dir.read_manifest().get("plan", {})
    run_dir.update_manifest(plan={**plan, "execution": dict(execution)})

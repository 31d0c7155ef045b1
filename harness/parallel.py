"""Run the plan with several containers at once, without oversubscribing the host.

The number of slots comes from the host's cores and the CPU share of each
container (see ``default_jobs``). Worker threads run the iterations, and the
main thread alone appends records, advances the display and handles signals,
so RunDirectory and the display are never used from two threads at once.
"""

from __future__ import annotations

import logging
import math
import os
import threading
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from typing import TYPE_CHECKING

from harness.display import Display
from harness.environment import Environment
from harness.errors import Interrupted, InvalidInput
from harness.models import FailureKind, IterationRecord, Limits, PreparedBuild, Scenario
from harness.results import RunDirectory
from harness.runner import (
    PlannedIteration,
    check_engine,
    raise_on_signals,
    remove_run_containers,
    run_with_retries,
)

if TYPE_CHECKING:
    import docker

logger = logging.getLogger(__name__)

# Cores left to dockerd, the harness and the rest of the host.
HEADROOM_CORES = 1.0
# Upper bound of the default: each container costs the engine a create, start,
# wait and remove whatever its CPU share, and past a few dozen the engine's
# own CPU time, not the quota, limits the throughput.
MAX_DEFAULT_JOBS = 32
# Engine CPU per running slot, in cores. NOTE: an estimate. Here (2 cores,
# Docker 20.10) a container at --cpus 0.1 lives about 1.5 s and costs dockerd,
# containerd, the shim and runc 0.1-0.3 s of CPU. Counting quotas alone (10
# slots on 2 cores) doubled the wall time of a 0.5 s phase, because the
# containers waited for a CPU; CPU times did not change.
ENGINE_CORES_PER_SLOT = 0.25

# Runs one planned iteration and returns its record; called in worker threads.
IterationRunner = Callable[[PlannedIteration], IterationRecord]


def engine_cores(client: docker.DockerClient) -> float:
    """Return the CPU count of the engine's host, where the containers run."""
    return float(client.info().get("NCPU") or os.cpu_count() or 1)


def usable_cores(cores: float) -> float:
    """Return the cores containers may use together: all but the headroom.

    A host of one core has no core to spare, so there it is the whole core.
    """
    return max(cores - HEADROOM_CORES, 1.0)


def default_jobs(cores: float, cpus: float) -> int:
    """Return how many containers of ``cpus`` cores to run at once by default.

    The rule is floor((cores - 1) / (cpus + ENGINE_CORES_PER_SLOT)), at most
    MAX_DEFAULT_JOBS and at least 1: each running slot is charged its quota and
    the engine's unthrottled work of creating, starting and removing its
    containers. 2 cores at --cpus 0.1 give 2, and 16 cores give 42 capped to 32.
    """
    # The epsilon keeps 1.0 / 0.5 = 1.999... from rounding down to 1.
    slots = math.floor(usable_cores(cores) / (cpus + ENGINE_CORES_PER_SLOT) + 1e-9)
    return max(1, min(slots, MAX_DEFAULT_JOBS))


def max_jobs(cores: float, cpus: float) -> int:
    """Return the most containers whose quotas fit the usable cores."""
    return max(1, math.floor(usable_cores(cores) / cpus + 1e-9))


def check_jobs(jobs: int, cores: float, cpus: float, option: str = "--cpus") -> None:
    """Raise InvalidInput when ``jobs`` containers would oversubscribe the host.

    One job is always allowed, because a single container that requests more
    than the host has is limited by the host, not by its neighbours.
    """
    if jobs < 1:
        raise InvalidInput(f"invalid --jobs {jobs}: must be at least 1")
    total = jobs * cpus
    usable = usable_cores(cores)
    if jobs > 1 and total > usable + 1e-9:
        raise InvalidInput(
            f"--jobs {jobs} at {option} {cpus:g} requests {total:g} cores, but this "
            f"host has {cores:g} cores and keeps {HEADROOM_CORES:g} free for the "
            f"engine, leaving {usable:g} usable; use --jobs "
            f"{max_jobs(cores, cpus)} or fewer"
        )


def resolve_jobs(
    jobs: int | None, cores: float, cpus: float, option: str = "--cpus"
) -> int:
    """Return ``jobs`` after checking it, or the default when it is None.

    ``option`` names the option that set ``cpus`` in the error message.
    """
    if jobs is None:
        return default_jobs(cores, cpus)
    check_jobs(jobs, cores, cpus, option)
    return jobs


def run_concurrently(
    plan: list[PlannedIteration],
    run_one: IterationRunner,
    run_dir: RunDirectory,
    display: Display,
    jobs: int,
    *,
    on_interrupt: Callable[[], None],
    on_engine_failure: Callable[[IterationRecord], None] = lambda record: None,
) -> list[IterationRecord]:
    """Run ``plan`` with up to ``jobs`` iterations at once; return the records.

    Iterations start in plan order, so the containers running at any moment
    come from at most a few consecutive rounds, and every build keeps about
    the same share of them. Records are appended in the order they finish.
    On SIGINT or SIGTERM, ``on_interrupt`` removes what is still running
    before Interrupted propagates. ``on_engine_failure`` is called with each
    engine failure and may raise to stop the run. The iterations in flight
    then end before the exception propagates, and are not recorded.
    """
    records: list[IterationRecord] = []
    pending = iter(plan)
    executor = ThreadPoolExecutor(max_workers=jobs, thread_name_prefix="iteration")
    # Cleanup runs inside raise_on_signals, so that a second Ctrl-C is ignored
    # instead of cutting the removal of the running containers short.
    with raise_on_signals():
        try:
            running = submit_next(executor, pending, run_one, jobs)
            while running:
                done, running = wait(running, return_when=FIRST_COMPLETED)
                for future in done:
                    record = future.result()
                    run_dir.append_record(record)
                    records.append(record)
                    display.advance(record)
                    if record.failure is FailureKind.ENGINE:
                        on_engine_failure(record)
                running |= submit_next(executor, pending, run_one, jobs - len(running))
        except Interrupted:
            on_interrupt()
            executor.shutdown(wait=True, cancel_futures=True)
            # A worker that was creating its container during the first sweep
            # has finished by now; this removes what it may have left.
            on_interrupt()
            raise
        finally:
            executor.shutdown(wait=True, cancel_futures=True)
    return records


def submit_next(
    executor: ThreadPoolExecutor,
    pending: Iterator[PlannedIteration],
    run_one: IterationRunner,
    count: int,
) -> set[Future[IterationRecord]]:
    """Submit up to ``count`` further iterations of the plan, in plan order."""
    futures = set()
    for _ in range(count):
        planned = next(pending, None)
        if planned is None:
            break
        futures.add(executor.submit(run_one, planned))
    return futures


class ThreadClients:
    """One Docker client per worker thread, created on the thread's first use.

    docker-py does not promise that one client is safe to share between
    threads, and a shared client's connection pool (10 connections by
    default) would be smaller than the number of concurrent wait() calls.
    """

    def __init__(
        self, factory: Callable[[], docker.DockerClient], *, owned: bool
    ) -> None:
        self.factory = factory
        self.owned = owned
        self.local = threading.local()
        self.made: list[docker.DockerClient] = []
        self.lock = threading.Lock()

    def get(self) -> docker.DockerClient:
        client = getattr(self.local, "client", None)
        if client is None:
            client = self.factory()
            self.local.client = client
            with self.lock:
                self.made.append(client)
        return client

    def close(self) -> None:
        """Close the clients made here when they are owned, not shared."""
        with self.lock:
            made, self.made = self.made, []
        if self.owned:
            for client in made:
                client.close()


def run_plan_parallel(
    env: Environment,
    run_dir: RunDirectory,
    builds: dict[str, PreparedBuild],
    scenario: Scenario,
    limits: Limits,
    plan: list[PlannedIteration],
    display: Display,
    jobs: int,
    client_factory: Callable[[], docker.DockerClient] | None = None,
    *,
    labels: Mapping[str, str] | None = None,
    retries: int = 0,
) -> list[IterationRecord]:
    """Run the plan on the local engine with up to ``jobs`` containers at once.

    Like runner.run_plan, but records arrive in finishing order. Each worker
    thread gets its own client from ``client_factory`` (default: a new client
    from the environment's DOCKER_HOST), which this function closes.
    ``labels`` are added to each container's labels, and engine errors are
    retried up to ``retries`` times as in runner.run_plan. SIGINT and SIGTERM
    remove every container of the run before Interrupted propagates.
    """
    import docker

    clients = ThreadClients(
        client_factory or docker.from_env, owned=client_factory is None
    )

    def run_one(planned: PlannedIteration) -> IterationRecord:
        build = builds[planned.build]
        client = clients.get()
        return run_with_retries(
            client,
            build,
            scenario,
            limits,
            planned,
            run_dir.run_id,
            env.now,
            retries=retries,
            extra_labels=labels,
        )

    display.start(len(plan), f"{scenario.name}: {len(builds)} builds, -j {jobs}")
    try:
        return run_concurrently(
            plan,
            run_one,
            run_dir,
            display,
            jobs,
            on_interrupt=lambda: remove_run_containers(env.docker, run_dir.run_id),
            on_engine_failure=lambda record: check_engine(env.docker, record),
        )
    finally:
        display.stop()
        clients.close()

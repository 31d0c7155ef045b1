"""Tests for the job count rule and for running the plan concurrently.

Pure logic runs against a fake iteration runner. Tests marked ``docker`` run
real containers and check that parallel iterations do not disturb each other's
timings.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import docker
import numpy as np
import pytest
from images import TEST_LABELS, build_test_image, prepared_build

from harness.backends import check_cpu_share
from harness.display import SilentDisplay
from harness.environment import Environment
from harness.errors import EngineUnavailable, Interrupted, InvalidInput
from harness.models import (
    FailureKind,
    IterationRecord,
    Limits,
    Phase,
    PreparedBuild,
    Scenario,
)
from harness.parallel import (
    check_jobs,
    default_jobs,
    engine_cores,
    max_jobs,
    resolve_jobs,
    run_concurrently,
    run_plan_parallel,
)
from harness.results import RunDirectory
from harness.runner import PlannedIteration, plan_iterations, run_plan
from harness.stats import Verdict, compare_medians

# Burns 50 ms of CPU time at import, so at --cpus 0.1 the phase takes about
# five CFS periods of wall time.
BURNER_SOURCE = """\
import time

_end = time.process_time() + 0.05
while time.process_time() < _end:
    pass
"""


# ---------------------------------------------------------------------------
# job count rule


@pytest.mark.parametrize(
    ("cores", "cpus", "jobs"),
    [
        (2, 0.1, 2),
        (2, 0.25, 2),
        (2, 0.3, 1),
        (2, 1.0, 1),
        (2, 2.0, 1),
        (4, 0.5, 4),
        (1, 0.1, 2),
        (16, 0.1, 32),
        (64, 0.1, 32),
    ],
)
def test_default_jobs_charges_engine_work(cores: int, cpus: float, jobs: int) -> None:
    assert default_jobs(cores, cpus) == jobs


def test_check_jobs_rejects_oversubscription() -> None:
    with pytest.raises(InvalidInput) as caught:
        check_jobs(11, 2, 0.1)
    assert str(caught.value) == (
        "--jobs 11 at --cpus 0.1 requests 1.1 cores, but this host has 2 cores "
        "and keeps 1 free for the engine, leaving 1 usable; use --jobs 10 or fewer"
    )
    assert caught.value.exit_code == 2


def test_check_jobs_accepts_exact_fit() -> None:
    check_jobs(10, 2, 0.1)
    check_jobs(3, 4, 1.0)


def test_single_job_always_allowed() -> None:
    check_jobs(1, 2, 4.0)
    assert resolve_jobs(1, 2, 4.0) == 1


def test_resolve_jobs_defaults_when_none() -> None:
    assert resolve_jobs(None, 2, 0.1) == 2
    assert resolve_jobs(3, 2, 0.1) == 3


# ---------------------------------------------------------------------------
# run_concurrently with a fake runner


class ThreadCheckingDirectory(RunDirectory):
    """A run directory that records which thread appended each record."""

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.append_threads: list[threading.Thread] = []

    def append_record(self, record: IterationRecord) -> None:
        self.append_threads.append(threading.current_thread())
        super().append_record(record)


def make_run_dir(tmp_path: Path, name: str = "run") -> ThreadCheckingDirectory:
    RunDirectory.create(tmp_path, name).write_manifest({"status": "running"})
    return ThreadCheckingDirectory(tmp_path / name)


def fake_record(planned: PlannedIteration, **fields: Any) -> IterationRecord:
    return IterationRecord(
        build=planned.build,
        iteration=planned.iteration,
        round=planned.round,
        started_at=datetime(2026, 1, 1).isoformat(),
        container_s=0.0,
        **fields,
    )


class FakeRunner:
    """Sleeps per iteration and tracks start order and peak concurrency."""

    def __init__(self, sleep_s: float = 0.02) -> None:
        self.sleep_s = sleep_s
        self.lock = threading.Lock()
        self.running = 0
        self.peak = 0
        self.started: list[PlannedIteration] = []

    def __call__(self, planned: PlannedIteration) -> IterationRecord:
        with self.lock:
            self.running += 1
            self.peak = max(self.peak, self.running)
            self.started.append(planned)
        time.sleep(self.sleep_s)
        with self.lock:
            self.running -= 1
        return fake_record(planned)


def test_concurrent_run_records_each_once(tmp_path: Path) -> None:
    run_dir = make_run_dir(tmp_path)
    plan = plan_iterations(["baseline", "candidate"], 10, "shuffle", seed=1)
    runner = FakeRunner()
    records = run_concurrently(
        plan, runner, run_dir, SilentDisplay(), 4, on_interrupt=lambda: None
    )
    keys = sorted((r.build, r.round) for r in records)
    assert keys == sorted((p.build, p.round) for p in plan)
    assert sorted((r.build, r.round) for r in run_dir.read_records()) == keys
    assert runner.peak == 4
    assert runner.started[:4] == plan[:4]


def test_concurrent_run_appends_from_main_thread(tmp_path: Path) -> None:
    run_dir = make_run_dir(tmp_path)
    plan = plan_iterations(["a", "b", "c"], 4, "shuffle", seed=2)
    run_concurrently(
        plan, FakeRunner(), run_dir, SilentDisplay(), 6, on_interrupt=lambda: None
    )
    assert len(run_dir.append_threads) == 12
    assert set(run_dir.append_threads) == {threading.main_thread()}


def test_concurrent_run_starts_in_plan_order(tmp_path: Path) -> None:
    run_dir = make_run_dir(tmp_path)
    plan = plan_iterations(["a", "b"], 6, "shuffle", seed=3)
    runner = FakeRunner(sleep_s=0.01)
    run_concurrently(
        plan, runner, run_dir, SilentDisplay(), 1, on_interrupt=lambda: None
    )
    assert runner.started == plan
    assert runner.peak == 1


def test_engine_failure_check_stops_run(tmp_path: Path) -> None:
    run_dir = make_run_dir(tmp_path)
    plan = plan_iterations(["a", "b"], 20, "alternate", seed=0)

    def fail_round_two(planned: PlannedIteration) -> IterationRecord:
        if planned.round == 2:
            return fake_record(planned, failure=FailureKind.ENGINE, error="gone")
        time.sleep(0.01)
        return fake_record(planned)

    def raise_unavailable(record: IterationRecord) -> None:
        raise EngineUnavailable(f"engine gone at round {record.round}")

    with pytest.raises(EngineUnavailable, match="engine gone at round 2"):
        run_concurrently(
            plan,
            fail_round_two,
            run_dir,
            SilentDisplay(),
            2,
            on_interrupt=lambda: None,
            on_engine_failure=raise_unavailable,
        )
    assert len(run_dir.read_records()) < len(plan)


def test_signal_interrupts_concurrent_run(tmp_path: Path) -> None:
    run_dir = make_run_dir(tmp_path)
    plan = plan_iterations(["a", "b"], 10, "alternate", seed=0)
    release = threading.Event()
    interrupts: list[float] = []

    def wait_for_release(planned: PlannedIteration) -> IterationRecord:
        release.wait(timeout=30)
        return fake_record(planned)

    def on_interrupt() -> None:
        interrupts.append(time.monotonic())
        release.set()

    timer = threading.Timer(0.5, os.kill, (os.getpid(), signal.SIGINT))
    timer.start()
    try:
        with pytest.raises(Interrupted) as caught:
            run_concurrently(
                plan,
                wait_for_release,
                run_dir,
                SilentDisplay(),
                3,
                on_interrupt=on_interrupt,
            )
    finally:
        timer.cancel()
        release.set()
    assert caught.value.exit_code == 130
    assert len(interrupts) == 2
    assert run_dir.read_records() == []


def test_cli_rejects_oversubscribing_jobs() -> None:
    """One job more than the quotas allow oversubscribes the engine's host."""
    client = docker.from_env()
    cores = engine_cores(client)
    client.close()
    jobs = max_jobs(cores, 0.1) + 1
    result = subprocess.run(
        [sys.executable, "-m", "harness", "run", "--baseline", "x==1", "-j", str(jobs)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert result.stderr.startswith(f"error: --jobs {jobs} at --cpus 0.1 requests ")
    assert f"use --jobs {jobs - 1} or fewer" in result.stderr


# ---------------------------------------------------------------------------
# real containers


@pytest.fixture(scope="module")
def client() -> Iterator[docker.DockerClient]:
    engine = docker.from_env()
    yield engine
    engine.close()


@pytest.fixture(scope="module")
def burner_build(client: docker.DockerClient) -> PreparedBuild:
    return build_test_image(client, "burner", {"burner.py": BURNER_SOURCE})


def burner_builds(build: PreparedBuild) -> dict[str, PreparedBuild]:
    return {
        label: prepared_build(label, build.image_tag, build.image_id)
        for label in ("baseline", "candidate")
    }


def burner_scenario() -> Scenario:
    return Scenario(
        name="burner",
        description="",
        phases=(Phase("import burner", "import burner", "init"),),
        budgets={"init": 10.0},
    )


def phase_values(records: list[IterationRecord], field: str) -> list[float]:
    return [getattr(r.phases[0], field) for r in records if r.ok]


def max_overlap(records: list[IterationRecord]) -> int:
    """Return the largest number of containers that ran at the same moment."""
    events = []
    for record in records:
        start = datetime.fromisoformat(record.started_at).timestamp()
        events += [(start, 1), (start + record.container_s, -1)]
    running = peak = 0
    for _, change in sorted(events):
        running += change
        peak = max(peak, running)
    return peak


@pytest.mark.docker
def test_parallel_matches_serial_medians(
    client: docker.DockerClient, burner_build: PreparedBuild, tmp_path: Path
) -> None:
    """At the default -j the phases' CPU times match those of -j 1."""
    limits = Limits(cpus=0.1, timeout_s=60)
    jobs = default_jobs(engine_cores(client), limits.cpus)
    assert jobs >= 2
    plan = plan_iterations(["baseline", "candidate"], 6, "shuffle", seed=5)
    env = Environment(docker_factory=lambda: client, quiet=True)
    builds = burner_builds(burner_build)
    serial_dir = make_run_dir(tmp_path, "serial")
    serial = run_plan(
        env,
        serial_dir,
        builds,
        burner_scenario(),
        limits,
        plan,
        SilentDisplay(),
        labels=TEST_LABELS,
    )
    parallel_dir = make_run_dir(tmp_path, "parallel")
    parallel = run_plan_parallel(
        env,
        parallel_dir,
        builds,
        burner_scenario(),
        limits,
        plan,
        SilentDisplay(),
        jobs,
        client_factory=docker.from_env,
        labels=TEST_LABELS,
    )
    assert all(record.ok for record in serial + parallel)
    assert max_overlap(parallel) >= 2
    serial_cpu = phase_values(serial, "cpu_s")
    parallel_cpu = phase_values(parallel, "cpu_s")
    assert abs(np.median(parallel_cpu) / np.median(serial_cpu) - 1) < 0.1
    # The product's own criterion: the CI of the ratio lies within +-5%. A
    # plain Mann-Whitney test flags shifts of 0.3% in CPU times this steady.
    cpu_verdict = compare_medians(serial_cpu, parallel_cpu).verdict
    assert cpu_verdict is Verdict.NO_CHANGE
    serial_wall = phase_values(serial, "wall_s")
    parallel_wall = phase_values(parallel, "wall_s")
    # Wall time under a 100 ms CFS period moves in whole periods, so a 20%
    # tolerance is about one period of this 0.5 s phase.
    assert abs(np.median(parallel_wall) / np.median(serial_wall) - 1) < 0.2


@pytest.mark.docker
def test_signal_removes_parallel_containers(
    client: docker.DockerClient, tmp_path: Path
) -> None:
    slow = build_test_image(
        client, "slow", {"sleepy.py": "import time\ntime.sleep(60)\n"}
    )
    run_dir = make_run_dir(tmp_path, f"test-par-{uuid.uuid4().hex[:6]}")
    plan = plan_iterations(["a", "b"], 3, "alternate", seed=0)
    builds = {
        label: prepared_build(label, slow.image_tag, slow.image_id)
        for label in ("a", "b")
    }
    scenario = Scenario(
        name="slow",
        description="",
        phases=(Phase("import sleepy", "import sleepy", "init"),),
        budgets={"init": 10.0},
    )
    env = Environment(docker_factory=lambda: client, quiet=True)
    timer = threading.Timer(4.0, os.kill, (os.getpid(), signal.SIGINT))
    timer.start()
    started = time.monotonic()
    try:
        with pytest.raises(Interrupted):
            run_plan_parallel(
                env,
                run_dir,
                builds,
                scenario,
                Limits(cpus=0.1, timeout_s=50),
                plan,
                SilentDisplay(),
                4,
                client_factory=docker.from_env,
                labels=TEST_LABELS,
            )
    finally:
        timer.cancel()
    assert time.monotonic() - started < 30
    leftovers = client.containers.list(
        all=True, filters={"label": f"coldstart.run={run_dir.run_id}"}
    )
    assert leftovers == []


@pytest.mark.parametrize(
    ("limits", "message"),
    [
        (
            Limits(cpus=64),
            "invalid --cpus: 64 cores exceed the 2 cores of the engine's host, so "
            "the quota would never throttle; use at most 2 or run on a larger host",
        ),
        (
            Limits(cpus=0.1, init_cpus=3),
            "invalid --init-cpus: 3 cores exceed the 2 cores of the engine's host, "
            "so the quota would never throttle; use at most 2 or run on a larger "
            "host",
        ),
        (
            Limits(cpus=5.79, profile="lambda-10240"),
            "invalid --cpus or --profile lambda-10240: 5.79 cores exceed the 2 "
            "cores of the engine's host, so the quota would never throttle; use "
            "at most 2 or run on a larger host",
        ),
    ],
)
def test_cpu_share_above_host_rejected(limits: Limits, message: str) -> None:
    with pytest.raises(InvalidInput) as caught:
        check_cpu_share(limits, 2.0)
    assert str(caught.value) == message


def test_cpu_share_of_whole_host_accepted() -> None:
    check_cpu_share(Limits(cpus=2.0, init_cpus=2.0), 2.0)


def test_jobs_check_counts_init_quota() -> None:
    from types import SimpleNamespace

    from harness.backends import Execution, resolve_execution

    engine = SimpleNamespace(info=lambda: {"NCPU": 2})
    env = SimpleNamespace(docker=engine)
    limits = Limits(cpus=0.1, init_cpus=1.0)
    with pytest.raises(InvalidInput) as caught:
        resolve_execution(env, Execution(jobs=5), limits)
    assert str(caught.value).startswith("--jobs 5 at --init-cpus 1 requests 5 cores")
    default = resolve_execution(env, Execution(), limits)
    assert default.jobs == 1

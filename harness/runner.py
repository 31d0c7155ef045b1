"""Run the plan: one fresh, throttled container per iteration, interleaved.

Each iteration starts a container from a build's image, runs the probe in it,
turns the outcome into an IterationRecord (failures included) and removes the
container. Records reach raw.jsonl as soon as each container finishes.
"""

from __future__ import annotations

import logging
import random
import signal
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import datetime
from types import FrameType
from typing import TYPE_CHECKING, Any

import requests
from docker.errors import APIError, DockerException, ImageNotFound, NotFound
from urllib3.exceptions import ReadTimeoutError

from harness.clean import harness_labels
from harness.display import Display
from harness.environment import Environment, utc_now
from harness.errors import EngineUnavailable, Interrupted, InvalidInput
from harness.models import (
    FailureKind,
    IterationRecord,
    Limits,
    PhaseResult,
    PreparedBuild,
    Scenario,
)
from harness.probe import (
    ProbeOutputError,
    excerpt_tail,
    find_finished_phases,
    find_last_phase,
    parse_probe_output,
    probe_command,
)
from harness.results import RunDirectory
from harness.shaping import (
    QuotaFollower,
    initial_quota_us,
    plan_quota_switch,
)
from harness.sidecar import SidecarNotReady, sidecar_network

if TYPE_CHECKING:
    import docker
    from docker.models.containers import Container

logger = logging.getLogger(__name__)

ORDERS = ("shuffle", "alternate")

# Time allowed for the engine to report a killed container's exit.
KILL_WAIT_S = 30
# Isolation of the code under test: user and group 65534 are "nobody" in
# Debian and in the python images. 256 processes is far above what an SDK's
# import needs and low enough to stop a fork bomb.
CONTAINER_USER = "65534:65534"
PIDS_LIMIT = 256
CONTAINER_HOME = "/tmp"
TMPFS_SIZE = "64m"
# Pause before retrying after an engine error, times the attempt number.
RETRY_DELAY_S = 1.0
# Options of containers.create() that would widen what the container reaches.
ESCAPE_OPTIONS = ("volumes", "mounts", "volumes_from", "devices", "privileged")
REQUIRED_OPTIONS: dict[str, Any] = {
    "network_mode": "none",
    "cap_drop": ["ALL"],
    "security_opt": ["no-new-privileges"],
    "user": CONTAINER_USER,
    "read_only": True,
}


@dataclass(frozen=True)
class PlannedIteration:
    """One container run of one build; round and iteration count from 1.

    Warm-up runs come before round 1 and are numbered in round 0.
    """

    round: int
    build: str
    iteration: int
    warmup: bool = False


def plan_iterations(
    labels: list[str], iterations: int, order: str, seed: int, warmup: int = 0
) -> list[PlannedIteration]:
    """Return the run order: each round runs every build once.

    "alternate" keeps the label order in every round (A B A B ...). "shuffle"
    shuffles each round with ``random.Random(seed)``, so the same seed gives the
    same plan. Either way machine drift spreads over all builds, because no
    build runs twice before every other build has run once. ``warmup`` runs
    per build, in label order, come first.
    """
    validate_plan(labels, iterations, order)
    if warmup < 0:
        raise InvalidInput(f"invalid warm-up count {warmup}: must be 0 or more")
    rng = random.Random(seed)
    plan = [
        PlannedIteration(round=0, build=label, iteration=number, warmup=True)
        for number in range(1, warmup + 1)
        for label in labels
    ]
    for round_number in range(1, iterations + 1):
        round_labels = list(labels)
        if order == "shuffle":
            rng.shuffle(round_labels)
        plan += [
            PlannedIteration(round=round_number, build=label, iteration=round_number)
            for label in round_labels
        ]
    return plan


def validate_plan(labels: list[str], iterations: int, order: str) -> None:
    if not labels:
        raise InvalidInput("no builds to run: name at least one build")
    if len(set(labels)) != len(labels):
        raise InvalidInput(f"build labels must be unique, got {labels}")
    if iterations < 1:
        raise InvalidInput(f"invalid iterations {iterations}: must be at least 1")
    if order not in ORDERS:
        raise InvalidInput(f"invalid order {order!r}: choose shuffle or alternate")


@dataclass(frozen=True)
class ContainerRun:
    """Exit status, timeout and OOM flags, and logs of one finished container."""

    exit_code: int | None
    timed_out: bool
    oom_killed: bool
    stdout: bytes
    stderr: bytes
    container_s: float


def run_iteration(
    client: docker.DockerClient,
    build: PreparedBuild,
    scenario: Scenario,
    limits: Limits,
    planned: PlannedIteration,
    run_id: str,
    now: Callable[[], datetime] = utc_now,
    *,
    labels: Mapping[str, str] | None = None,
) -> IterationRecord:
    """Run one container and return its record; a failure is a record too.

    Engine errors become FailureKind.ENGINE records instead of exceptions, so the
    caller decides whether the engine is still there. ``labels`` are added to
    the container's ``coldstart.run`` and ``coldstart.build`` labels.
    """
    started_at = now().isoformat()
    container_labels = {
        "coldstart.run": run_id,
        "coldstart.build": build.label,
        **(labels or {}),
    }
    try:
        with sidecar_network(client, build, scenario, container_labels) as sidecar:
            run = run_container(
                client,
                build,
                scenario,
                limits,
                container_labels,
                network_mode=sidecar.network_mode,
            )
            sidecar_log = sidecar.read_log()
    except (DockerException, requests.RequestException, SidecarNotReady) as error:
        logger.error(
            "iteration %d of build %s failed on the engine: %s",
            planned.iteration,
            build.label,
            error,
        )
        return IterationRecord(
            build=build.label,
            iteration=planned.iteration,
            round=planned.round,
            started_at=started_at,
            container_s=0.0,
            failure=FailureKind.ENGINE,
            error=describe_engine_error(error, build),
            warmup=planned.warmup,
        )
    record = interpret_run(run, build.label, planned, started_at, limits)
    record = replace(record, warmup=planned.warmup)
    if sidecar_log is None:
        return record
    return replace(record, telemetry={**record.telemetry, "sidecar_log": sidecar_log})


def container_options(
    build: PreparedBuild,
    scenario: Scenario,
    limits: Limits,
    labels: Mapping[str, str],
    command: list[str] | None = None,
) -> dict[str, Any]:
    """Return the create() arguments: limits, isolation, scenario env only.

    The code under test runs as ``nobody`` with no network, no capabilities,
    at most PIDS_LIMIT processes and a read-only root filesystem. Only /tmp is
    writable, a tmpfs of TMPFS_SIZE that counts against the memory limit.
    ``command`` replaces the probe command, for runs that add interpreter
    options such as ``-X importtime``.
    """
    switch = plan_quota_switch(scenario, limits)
    options: dict[str, Any] = {
        "image": build.image_tag,
        "command": command
        or probe_command(
            scenario, (switch.phase_index, switch.quota_us) if switch else None
        ),
        # HOME and the scenario's variables: nothing from the host's
        # environment. A scenario may set HOME itself.
        "environment": {"HOME": CONTAINER_HOME, **scenario.env},
        # The period is set explicitly so that the quantum of throttling is
        # known, even where the engine's default differs.
        "cpu_period": limits.cpu_period_us,
        "cpu_quota": initial_quota_us(limits),
        "network_mode": "none",
        "cap_drop": ["ALL"],
        "security_opt": ["no-new-privileges"],
        "user": CONTAINER_USER,
        "pids_limit": PIDS_LIMIT,
        "read_only": True,
        "tmpfs": {CONTAINER_HOME: f"rw,nosuid,nodev,size={TMPFS_SIZE},mode=1777"},
        "labels": dict(labels),
        "detach": True,
    }
    if limits.memory_bytes is not None:
        # Swap equal to the limit means no swap, so an overrun is an OOM kill.
        options["mem_limit"] = limits.memory_bytes
        options["memswap_limit"] = limits.memory_bytes
    check_isolation(options)
    return options


def check_isolation(options: Mapping[str, Any]) -> None:
    """Raise ValueError if container options could let the code under test out.

    Measurement containers mount nothing: a mounted Docker socket would hand
    the code under test the whole engine, so any mount option is an error.
    """
    for key in ESCAPE_OPTIONS:
        if options.get(key):
            raise ValueError(f"container option {key!r} is not allowed")
    for key, value in REQUIRED_OPTIONS.items():
        if options.get(key) != value:
            raise ValueError(f"container option {key!r} must be {value!r}")


def run_container(
    client: docker.DockerClient,
    build: PreparedBuild,
    scenario: Scenario,
    limits: Limits,
    labels: Mapping[str, str],
    *,
    command: list[str] | None = None,
    network_mode: str = "none",
) -> ContainerRun:
    """Create, start and wait for one container; always remove it.

    ``network_mode`` may name ``container:<id>`` to join a sidecar's network
    namespace, which must itself have no network beyond loopback.
    """
    options = container_options(build, scenario, limits, labels, command)
    if network_mode != "none":
        if not network_mode.startswith("container:"):
            raise ValueError(f"network mode {network_mode!r} is not allowed")
        options["network_mode"] = network_mode
    switch = plan_quota_switch(scenario, limits)
    container = client.containers.create(**options)
    try:
        start = time.monotonic()
        container.start()
        follower = QuotaFollower(container, switch) if switch else None
        if follower:
            follower.start()
        exit_code, timed_out = wait_or_kill(container, limits.timeout_s)
        container_s = time.monotonic() - start
        if follower:
            follower.join()
        container.reload()
        return ContainerRun(
            exit_code=exit_code,
            timed_out=timed_out,
            oom_killed=bool(container.attrs["State"].get("OOMKilled")),
            stdout=container.logs(stdout=True, stderr=False),
            stderr=container.logs(stdout=False, stderr=True),
            container_s=container_s,
        )
    finally:
        remove_container(container)


def wait_or_kill(container: Container, timeout_s: float) -> tuple[int | None, bool]:
    """Wait for the container to exit; kill it after ``timeout_s`` seconds.

    Returns (exit code, whether it was killed for the timeout).
    """
    try:
        result = container.wait(timeout=timeout_s)
        return result.get("StatusCode"), False
    except requests.RequestException as error:
        if not is_read_timeout(error):
            raise
    logger.info("container %s timed out after %g s", container.short_id, timeout_s)
    timed_out = kill_container(container)
    result = container.wait(timeout=KILL_WAIT_S)
    return result.get("StatusCode"), timed_out


def kill_container(container: Container) -> bool:
    """Kill the container; return False if it exited before the kill."""
    try:
        container.kill()
    except APIError as error:
        # 409 Conflict: the container is no longer running.
        if error.status_code != 409:
            raise
        logger.info("container %s exited before it was killed", container.short_id)
        return False
    return True


def is_read_timeout(error: requests.RequestException) -> bool:
    """Tell a wait() that timed out from an engine that went away.

    docker-py 7 reports a wait timeout as a ConnectionError that wraps
    urllib3's ReadTimeoutError, not as requests' ReadTimeout.
    """
    if isinstance(error, requests.ReadTimeout):
        return True
    cause = error.args[0] if error.args else None
    return isinstance(cause, ReadTimeoutError)


def remove_container(container: Container) -> None:
    try:
        container.remove(force=True)
    except NotFound:
        logger.debug("container %s was already removed", container.short_id)
    except (DockerException, requests.RequestException) as error:
        logger.warning("could not remove container %s: %s", container.short_id, error)


def interpret_run(
    run: ContainerRun,
    label: str,
    planned: PlannedIteration,
    started_at: str,
    limits: Limits,
) -> IterationRecord:
    """Turn a finished container into a record, naming the cause of a failure."""
    fields: dict[str, Any] = {
        "build": label,
        "iteration": planned.iteration,
        "round": planned.round,
        "started_at": started_at,
        "container_s": run.container_s,
        "telemetry": {"exit_code": run.exit_code},
    }
    phase = find_last_phase(run.stderr)
    # Without the probe's record, the phases it reported on stderr as they
    # finished are the only timings of a killed container.
    finished = tuple(
        PhaseResult.from_dict(data) for data in find_finished_phases(run.stderr)
    )
    if run.timed_out:
        error = describe_timeout(phase, limits.timeout_s)
        return IterationRecord(
            **fields, phases=finished, failure=FailureKind.TIMEOUT, error=error
        )
    if run.oom_killed:
        error = describe_out_of_memory(phase, limits.memory_bytes)
        return IterationRecord(
            **fields, phases=finished, failure=FailureKind.OUT_OF_MEMORY, error=error
        )
    try:
        probe = parse_probe_output(run.stdout)
    except ProbeOutputError as problem:
        error = describe_probe_output_error(problem, run)
        return IterationRecord(
            **fields, phases=finished, failure=FailureKind.PROBE_OUTPUT, error=error
        )
    return record_from_probe(probe, fields)


def record_from_probe(probe: dict[str, Any], fields: dict[str, Any]) -> IterationRecord:
    """Build the record of a container whose probe wrote its record."""
    telemetry = {
        **fields["telemetry"],
        "cgroup": probe.get("cgroup"),
        "interpreter_start_s": probe.get("interpreter_start_s"),
        "quota_switch": probe.get("quota_switch"),
        "implementation": probe.get("implementation"),
        "executable": probe.get("executable"),
    }
    phases = tuple(PhaseResult.from_dict(phase) for phase in probe["phases"])
    record = IterationRecord(
        **{**fields, "telemetry": telemetry},
        phases=phases,
        python_version=probe.get("python_version"),
        peak_rss_kb=probe.get("peak_rss_kb"),
    )
    raised = probe.get("error")
    if raised is None:
        return record
    error = f"phase {raised['phase']!r} raised {raised['message']}"
    return replace(record, failure=FailureKind.PHASE_RAISED, error=error)


def describe_timeout(phase: str | None, timeout_s: float) -> str:
    if phase is None:
        return f"container timed out after {timeout_s:g} s before the first phase"
    return f"phase {phase!r} timed out after {timeout_s:g} s"


def describe_out_of_memory(phase: str | None, memory_bytes: int | None) -> str:
    limit = (
        f"the {format_bytes(memory_bytes)} memory limit"
        if memory_bytes is not None
        else "the host's memory (no --memory limit set)"
    )
    where = f"phase {phase!r}" if phase else "the container"
    return f"{where} ran out of memory: killed for exceeding {limit}"


def describe_probe_output_error(problem: ProbeOutputError, run: ContainerRun) -> str:
    stderr = excerpt_tail(run.stderr.decode("utf-8", errors="replace"))
    return (
        f"probe output unusable: {problem.problem} (exit code {run.exit_code}); "
        f"stderr ends with: {stderr!r}"
    )


def describe_engine_error(error: Exception, build: PreparedBuild) -> str:
    if isinstance(error, SidecarNotReady):
        return str(error)
    if isinstance(error, ImageNotFound):
        return f"image {build.image_tag} not found (prepare the build again)"
    explanation = getattr(error, "explanation", None)
    return f"Docker engine error: {explanation or error}"


def format_bytes(size: int) -> str:
    """Format a byte count in binary units: 67108864 -> '64 MiB'."""
    for unit, scale in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if size >= scale:
            return f"{size / scale:g} {unit}"
    return f"{size} B"


def run_plan(
    env: Environment,
    run_dir: RunDirectory,
    builds: dict[str, PreparedBuild],
    scenario: Scenario,
    limits: Limits,
    plan: list[PlannedIteration],
    display: Display,
    retries: int = 0,
    *,
    labels: Mapping[str, str] | None = None,
) -> list[IterationRecord]:
    """Run every planned iteration in order, one container at a time.

    An engine error is retried up to ``retries`` times before it is recorded.

    Each record is appended to raw.jsonl before the next container starts.
    SIGINT and SIGTERM raise Interrupted, after the running container is
    removed. ``labels`` are added to each container's labels. Setting the
    manifest's status is the caller's job. Raises
    EngineUnavailable, after recording the failed iteration, when the engine
    stops responding.
    """
    client = env.docker
    records: list[IterationRecord] = []
    display.start(len(plan), f"{scenario.name}: {len(builds)} builds")
    try:
        with raise_on_signals():
            for planned in plan:
                record = run_with_retries(
                    client,
                    builds[planned.build],
                    scenario,
                    limits,
                    planned,
                    run_dir.run_id,
                    env.now,
                    retries=retries,
                    extra_labels=labels,
                )
                run_dir.append_record(record)
                records.append(record)
                display.advance(record)
                if record.failure is FailureKind.ENGINE:
                    check_engine(client, record)
    except Interrupted:
        remove_run_containers(client, run_dir.run_id)
        raise
    finally:
        display.stop()
    return records


def run_with_retries(
    client: docker.DockerClient,
    build: PreparedBuild,
    scenario: Scenario,
    limits: Limits,
    planned: PlannedIteration,
    run_id: str,
    now: Callable[[], datetime] = utc_now,
    *,
    retries: int = 0,
    sleep: Callable[[float], None] = time.sleep,
    extra_labels: Mapping[str, str] | None = None,
) -> IterationRecord:
    """Run one iteration, running it again after an engine error.

    Only FailureKind.ENGINE failures are retried, after RETRY_DELAY_S times the
    attempt number. A retried record notes its ``engine_retries`` in telemetry.
    ``extra_labels`` are added to the container's labels.
    """
    labels = {**harness_labels(), **(extra_labels or {})}
    attempt = 0
    while True:
        record = run_iteration(
            client, build, scenario, limits, planned, run_id, now, labels=labels
        )
        if record.failure is not FailureKind.ENGINE or attempt >= retries:
            break
        attempt += 1
        logger.warning(
            "retrying iteration %d of build %s (retry %d of %d) after: %s",
            planned.iteration,
            build.label,
            attempt,
            retries,
            record.error,
        )
        sleep(RETRY_DELAY_S * attempt)
    if attempt:
        telemetry = {**record.telemetry, "engine_retries": attempt}
        record = replace(record, telemetry=telemetry)
    return record


def remove_run_containers(client: docker.DockerClient, run_id: str) -> None:
    """Remove any container left with this run's label.

    run_container removes its own container, but a signal that arrives while
    create() is in flight leaves one that it never saw.
    """
    try:
        # sparse: a full list inspects each container, which fails with 404
        # for one that run_container removed in between.
        leftovers = client.containers.list(
            all=True, sparse=True, filters={"label": f"coldstart.run={run_id}"}
        )
    except (DockerException, requests.RequestException) as error:
        logger.warning("could not list containers of run %s: %s", run_id, error)
        return
    for container in leftovers:
        logger.info("removing container %s of run %s", container.short_id, run_id)
        remove_container(container)


def check_engine(client: docker.DockerClient, record: IterationRecord) -> None:
    """Raise EngineUnavailable unless the engine responds to a ping."""
    try:
        client.ping()
    except (DockerException, requests.RequestException) as error:
        raise EngineUnavailable(
            f"the Docker engine stopped responding during iteration "
            f"{record.iteration} of build {record.build!r}: {error} "
            "(check that dockerd is running with `docker info`)"
        ) from error


@contextmanager
def raise_on_signals(
    signal_numbers: tuple[int, ...] = (signal.SIGINT, signal.SIGTERM),
) -> Iterator[None]:
    """Make SIGINT and SIGTERM raise Interrupted in the main thread.

    Only the first signal raises. Later ones are logged and ignored until the
    block ends, so that the cleanup the first one started (removing the
    running container) is not cut short. Outside the main thread, where Python
    cannot install handlers, this does nothing.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    received: list[int] = []

    def handle(signal_number: int, frame: FrameType | None) -> None:
        if received:
            logger.warning("signal %d ignored: already stopping", signal_number)
            return
        received.append(signal_number)
        raise Interrupted(signal_number)

    previous = {number: signal.signal(number, handle) for number in signal_numbers}
    try:
        yield
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)

"""Run iterations as Docker Swarm jobs, so one run can use several hosts.

Each iteration is a replicated-job service with one task, the same CPU quota,
memory limit and labels as a local container, on a network with no route
out. Its record is read back from the service's logs. Every round's builds
run on one node
(placement constraint ``node.id==...``), so a difference between hosts lands
on all builds of a round alike instead of on the comparison.

Services refer to images by image id when no registry is given. An image id
is the digest of the image's configuration, so it is the same on every node
that has the image, and the engine does not try to pull a reference by id.
With ``--registry`` the images are pushed there under their tag, and each
node pulls them.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

import requests
from docker.errors import APIError, DockerException, NotFound
from docker.types import (
    ContainerSpec,
    Placement,
    Resources,
    RestartPolicy,
    ServiceMode,
    TaskTemplate,
)

from harness.display import Display
from harness.environment import Environment, utc_now
from harness.errors import EngineUnavailable, InvalidInput
from harness.models import FailureKind, IterationRecord, Limits, PreparedBuild, Scenario
from harness.parallel import ThreadClients, default_jobs, run_concurrently
from harness.probe import probe_command
from harness.results import RunDirectory
from harness.runner import (
    ContainerRun,
    PlannedIteration,
    interpret_run,
    remove_container,
    remove_run_containers,
)

if TYPE_CHECKING:
    import docker
    from docker.models.services import Service

logger = logging.getLogger(__name__)

# Task states after which a task never runs again.
FINAL_TASK_STATES = {"complete", "failed", "rejected", "shutdown", "orphaned", "remove"}
# Seconds between two polls of a task's state.
POLL_INTERVAL_S = 0.1
# Seconds a task may wait for a node before the container's own timeout starts.
SCHEDULE_WAIT_S = 60
NANO = 1_000_000_000
STOP_GRACE_NS = NANO // 10


@dataclass(frozen=True)
class SwarmNode:
    """A node that accepts tasks: id, hostname and CPU cores."""

    node_id: str
    hostname: str
    cpus: float

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.node_id, "hostname": self.hostname}


def list_nodes(client: docker.DockerClient) -> list[SwarmNode]:
    """Return the ready, active nodes, sorted by hostname.

    Raises EngineUnavailable when the engine is not a swarm manager or no node
    can take tasks.
    """
    try:
        nodes = client.nodes.list()
    except APIError as error:
        raise EngineUnavailable(
            f"--backend swarm needs a swarm manager, but the engine returned: "
            f"{error.explanation} (run `docker swarm init` on this host, or point "
            "DOCKER_HOST at a manager)"
        ) from error
    usable = [
        SwarmNode(
            node_id=node.id,
            hostname=node.attrs["Description"]["Hostname"],
            cpus=node.attrs["Description"]["Resources"]["NanoCPUs"] / NANO,
        )
        for node in nodes
        if node.attrs["Status"]["State"] == "ready"
        and node.attrs["Spec"].get("Availability") == "active"
    ]
    if not usable:
        raise EngineUnavailable(
            "the swarm has no ready, active node (check `docker node ls`)"
        )
    return sorted(usable, key=lambda node: node.hostname)


def default_swarm_jobs(nodes: list[SwarmNode], cpus: float) -> int:
    """Return the sum over nodes of each node's default local job count."""
    return sum(default_jobs(node.cpus, cpus) for node in nodes)


def assign_rounds(
    plan: list[PlannedIteration], nodes: list[SwarmNode]
) -> dict[int, SwarmNode]:
    """Give each round one node, in turn, so all builds of a round share it."""
    rounds = sorted({planned.round for planned in plan})
    return {number: nodes[(number - 1) % len(nodes)] for number in rounds}


def resolve_image_refs(
    client: docker.DockerClient,
    builds: Mapping[str, PreparedBuild],
    registry: str | None,
) -> dict[str, str]:
    """Return the image reference each build's services use.

    Without a registry that is the image id, which every node must have.
    With one, each image is tagged and pushed as ``REGISTRY/<tag>``.
    """
    if registry is None:
        return {label: build.image_id for label, build in builds.items()}
    return {
        label: push_image(client, build, registry) for label, build in builds.items()
    }


def push_image(client: docker.DockerClient, build: PreparedBuild, registry: str) -> str:
    """Tag the build's image for ``registry`` and push it; return the reference."""
    repository, tag = build.image_tag.rsplit(":", 1)
    target = f"{registry}/{repository}"
    image = client.images.get(build.image_id)
    image.tag(target, tag)
    logger.info("pushing %s:%s for build %s", target, tag, build.label)
    for event in client.images.push(target, tag, stream=True, decode=True):
        if "error" in event:
            raise InvalidInput(
                f"pushing {target}:{tag} to --registry {registry} failed: "
                f"{event['error']} (check that the registry runs and accepts "
                "pushes from this host)"
            )
    return f"{target}:{tag}"


def describe_image_distribution(registry: str | None) -> dict[str, Any]:
    """Return the manifest's record of how images reach the nodes."""
    if registry is None:
        return {"method": "assumed-present", "reference": "image id"}
    return {"method": "registry", "registry": registry, "reference": "tag"}


def task_template(
    image: str,
    scenario: Scenario,
    limits: Limits,
    labels: Mapping[str, str],
    node: SwarmNode,
    network: str,
) -> TaskTemplate:
    """Return a one-shot task with the local backend's limits, on ``node``.

    The task joins only ``network``, the run's internal overlay network (see
    ``create_run_network``).
    """
    # NOTE: swarm sets no memory-swap limit, so where the node has swap an
    # overrun swaps before it is killed, unlike a local container.
    container = ContainerSpec(
        image=image,
        command=probe_command(scenario),
        env=dict(scenario.env),
        labels=dict(labels),
        cap_drop=["ALL"],
        # The probe is PID 1, which ignores SIGTERM, so a removed service's
        # container would otherwise live out the default 10 s grace period.
        stop_grace_period=STOP_GRACE_NS,
    )
    return TaskTemplate(
        container_spec=container,
        resources=Resources(
            cpu_limit=int(limits.cpus * NANO), mem_limit=limits.memory_bytes
        ),
        restart_policy=RestartPolicy(condition="none"),
        placement=Placement(constraints=[f"node.id=={node.node_id}"]),
        networks=[network],
    )


def create_run_network(
    client: docker.DockerClient, run_id: str, labels: Mapping[str, str]
) -> str:
    """Create the run's internal overlay network and return its id.

    Swarm (Docker 20.10) has no "none" network for services, and a service
    without networks gets a default route through docker_gwbridge. An internal
    overlay network has no gateway, so its tasks reach only each other.
    """
    network = client.networks.create(
        f"coldstart-{run_id}",
        driver="overlay",
        internal=True,
        labels={"coldstart.run": run_id, **labels},
    )
    return str(network.id)


def remove_run_networks(
    client: docker.DockerClient, run_id: str, attempts: int = 40
) -> None:
    """Remove the networks that carry this run's label.

    A removed service's task detaches from the network a moment later, so a
    removal that finds the network still in use is tried again. The manager
    may accept the removal and delete the network only once its last task
    has stopped.
    """
    for attempt in range(attempts):
        try:
            networks = client.networks.list(
                filters={"label": f"coldstart.run={run_id}"}
            )
            for network in networks:
                network.remove()
            return
        except APIError as error:
            if attempt + 1 == attempts:
                logger.warning("could not remove network of run %s: %s", run_id, error)
                return
            time.sleep(POLL_INTERVAL_S * 2.5)
        except (DockerException, requests.RequestException) as error:
            logger.warning("could not remove network of run %s: %s", run_id, error)
            return


def run_swarm_iteration(
    client: docker.DockerClient,
    build: PreparedBuild,
    image: str,
    scenario: Scenario,
    limits: Limits,
    planned: PlannedIteration,
    run_id: str,
    node: SwarmNode,
    network: str,
    now: Callable[[], datetime] = utc_now,
    *,
    labels: Mapping[str, str] | None = None,
) -> IterationRecord:
    """Run one iteration as a swarm job on ``node``; a failure is a record too.

    ``network`` is the id of the run's network (see ``create_run_network``).
    """
    started_at = now().isoformat()
    service_labels = {
        "coldstart.run": run_id,
        "coldstart.build": build.label,
        **(labels or {}),
    }
    try:
        template = task_template(image, scenario, limits, service_labels, node, network)
        run, task = run_job(client, template, service_labels, limits.timeout_s)
    except (DockerException, requests.RequestException) as error:
        logger.error(
            "swarm iteration %d of %s failed: %s", planned.iteration, build.label, error
        )
        return engine_failure(build, planned, started_at, f"swarm error: {error}", node)
    record = record_task(run, task, build, image, planned, started_at, limits)
    telemetry = {**record.telemetry, "node": node.to_dict()}
    return IterationRecord.from_dict({**record.to_dict(), "telemetry": telemetry})


def engine_failure(
    build: PreparedBuild,
    planned: PlannedIteration,
    started_at: str,
    error: str,
    node: SwarmNode,
    container_s: float = 0.0,
) -> IterationRecord:
    return IterationRecord(
        build=build.label,
        iteration=planned.iteration,
        round=planned.round,
        started_at=started_at,
        container_s=container_s,
        failure=FailureKind.ENGINE,
        error=error,
        telemetry={"node": node.to_dict()},
    )


def run_job(
    client: docker.DockerClient,
    template: TaskTemplate,
    labels: Mapping[str, str],
    timeout_s: float,
) -> tuple[ContainerRun, dict[str, Any]]:
    """Create the job, wait for its task, read its logs; always remove it."""
    start = time.monotonic()
    created = client.api.create_service(
        template,
        labels=dict(labels),
        mode=ServiceMode("replicated-job", concurrency=1, replicas=1),
    )
    service = client.services.get(created["ID"])
    try:
        task, timed_out = wait_for_task(service, timeout_s)
        container_s = time.monotonic() - start
        status = task.get("Status", {})
        exit_code = status.get("ContainerStatus", {}).get("ExitCode")
        run = ContainerRun(
            exit_code=exit_code,
            timed_out=timed_out,
            oom_killed=False,
            stdout=read_logs(service, stdout=True),
            stderr=read_logs(service, stdout=False),
            container_s=container_s,
        )
        return run, task
    finally:
        remove_service(service)
        remove_task_container(client, service.id)


def wait_for_task(service: Service, timeout_s: float) -> tuple[dict[str, Any], bool]:
    """Poll the service's task until it ends; return it and whether it timed out.

    The timeout counts from the task's start. Before it starts, the task may
    wait up to SCHEDULE_WAIT_S longer for the node to schedule and prepare it.
    """
    deadline = time.monotonic() + timeout_s + SCHEDULE_WAIT_S
    started: float | None = None
    task: dict[str, Any] = {}
    while True:
        tasks = service.tasks()
        if tasks:
            task = tasks[0]
            state = task["Status"]["State"]
            if state in FINAL_TASK_STATES:
                return task, False
            if state == "running" and started is None:
                started = time.monotonic()
                deadline = started + timeout_s
        if time.monotonic() >= deadline:
            return task, True
        time.sleep(POLL_INTERVAL_S)


def read_logs(service: Service, *, stdout: bool) -> bytes:
    """Return one stream of the service's logs.

    NOTE: unlike container logs, service logs are not known to rejoin lines
    that dockerd split at 16 KiB, so a probe record longer than that may be
    unreadable on this backend.
    """
    chunks = service.logs(stdout=stdout, stderr=not stdout, follow=False)
    return b"".join(chunks)


def remove_task_container(client: docker.DockerClient, service_id: str) -> None:
    """Remove the container of a removed service's task on this node, if any.

    Docker 20.10 leaves a removed job's running container to run until it
    exits, which after a timeout could be minutes.
    """
    filters = {"label": f"com.docker.swarm.service.id={service_id}"}
    try:
        containers = client.containers.list(all=True, filters=filters)
    except (DockerException, requests.RequestException) as error:
        logger.warning("could not list containers of service %s: %s", service_id, error)
        return
    for container in containers:
        remove_container(container)


def remove_service(service: Service) -> None:
    try:
        service.remove()
    except NotFound:
        pass
    except (DockerException, requests.RequestException) as error:
        logger.warning("could not remove service %s: %s", service.id, error)


def record_task(
    run: ContainerRun,
    task: dict[str, Any],
    build: PreparedBuild,
    image: str,
    planned: PlannedIteration,
    started_at: str,
    limits: Limits,
) -> IterationRecord:
    """Turn a finished task into a record; a rejected task is an engine failure."""
    status = task.get("Status", {})
    state = status.get("State")
    container_id = status.get("ContainerStatus", {}).get("ContainerID")
    if not container_id and not run.timed_out:
        # A rejected task reports exit code 0 but never had a container.
        cause = status.get("Err") or f"task state {state}"
        error = f"task of build {build.label!r} did not run: {cause}"
        if "No such image" in cause:
            error = (
                f"image {image} not found on the node ({cause}); load it on every "
                "node or pass --registry"
            )
        return IterationRecord(
            build=build.label,
            iteration=planned.iteration,
            round=planned.round,
            started_at=started_at,
            container_s=run.container_s,
            failure=FailureKind.ENGINE,
            error=error,
        )
    if run.exit_code == 137 and not run.timed_out and limits.memory_bytes:
        # Swarm reports no OOM flag, so a SIGKILL the harness did not send is
        # taken for the memory limit.
        run = ContainerRun(**{**vars(run), "oom_killed": True})
    return interpret_run(run, build.label, planned, started_at, limits)


def remove_run_services(client: docker.DockerClient, run_id: str) -> None:
    """Remove every service that carries this run's label, and its containers.

    NOTE: only containers on the manager's own node are removed; a task that
    is running on another node keeps going until it exits or times out.
    """
    try:
        services = client.services.list(filters={"label": f"coldstart.run={run_id}"})
    except (DockerException, requests.RequestException) as error:
        logger.warning("could not list services of run %s: %s", run_id, error)
        return
    for service in services:
        logger.info("removing service %s of run %s", service.name, run_id)
        remove_service(service)
    # Docker 20.10 keeps a removed job's running container until it exits.
    remove_run_containers(client, run_id)


def run_plan_swarm(
    env: Environment,
    run_dir: RunDirectory,
    builds: dict[str, PreparedBuild],
    images: Mapping[str, str],
    scenario: Scenario,
    limits: Limits,
    plan: list[PlannedIteration],
    display: Display,
    jobs: int,
    *,
    labels: Mapping[str, str] | None = None,
    client_factory: Callable[[], docker.DockerClient] | None = None,
) -> list[IterationRecord]:
    """Run the plan as swarm jobs, up to ``jobs`` at once, one node per round.

    ``images`` maps each build label to the image reference its services use
    (see ``resolve_image_refs``). Worker threads get clients as in
    parallel.run_plan_parallel. SIGINT and SIGTERM remove every service of
    the run before Interrupted propagates.
    """
    import docker

    client = env.docker
    nodes = list_nodes(client)
    placement = assign_rounds(plan, nodes)
    network = create_run_network(client, run_dir.run_id, labels or {})
    clients = ThreadClients(
        client_factory or docker.from_env, owned=client_factory is None
    )

    def run_one(planned: PlannedIteration) -> IterationRecord:
        return run_swarm_iteration(
            clients.get(),
            builds[planned.build],
            images[planned.build],
            scenario,
            limits,
            planned,
            run_dir.run_id,
            placement[planned.round],
            network,
            env.now,
            labels=labels,
        )

    names = ", ".join(node.hostname for node in nodes)
    display.start(len(plan), f"{scenario.name}: swarm of {len(nodes)} ({names})")
    try:
        return run_concurrently(
            plan,
            run_one,
            run_dir,
            display,
            jobs,
            on_interrupt=lambda: remove_run_services(client, run_dir.run_id),
        )
    finally:
        display.stop()
        clients.close()
        remove_run_services(client, run_dir.run_id)
        remove_run_networks(client, run_dir.run_id)

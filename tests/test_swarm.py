"""Tests for the swarm backend.

Tests marked ``docker`` run on a single-node swarm. When the engine is not in
a swarm, the module fixture creates one (``docker swarm init --advertise-addr
127.0.0.1``) and leaves it at the end, also after a failure. An engine that is
already in a swarm is reused and left as it was.
"""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import docker
import numpy as np
import pytest
from docker.errors import APIError
from images import TEST_LABELS, build_test_image, prepared_build

from harness.analysis import summarise
from harness.display import SilentDisplay
from harness.environment import Environment
from harness.errors import EngineUnavailable, Interrupted
from harness.models import FailureKind, Limits, Phase, PreparedBuild, Scenario
from harness.parallel import run_plan_parallel
from harness.results import RunDirectory
from harness.runner import ContainerRun, PlannedIteration, plan_iterations
from harness.swarm import (
    SwarmNode,
    assign_rounds,
    create_run_network,
    describe_image_distribution,
    list_nodes,
    record_task,
    remove_run_networks,
    run_plan_swarm,
    run_swarm_iteration,
)

BURNER_SOURCE = """\
import time

_end = time.process_time() + 0.05
while time.process_time() < _end:
    pass
"""
NODE_A = SwarmNode("a1", "alpha", 2.0)
NODE_B = SwarmNode("b2", "beta", 4.0)


def make_scenario(name: str, code: str) -> Scenario:
    return Scenario(
        name="swarm-test",
        description="",
        phases=(Phase(name, code, "init"),),
        budgets={"init": 10.0},
    )


# ---------------------------------------------------------------------------
# pure logic


def test_rounds_alternate_between_nodes() -> None:
    plan = plan_iterations(["a", "b"], 5, "shuffle", seed=1)
    placement = assign_rounds(plan, [NODE_A, NODE_B])
    assert placement == {1: NODE_A, 2: NODE_B, 3: NODE_A, 4: NODE_B, 5: NODE_A}


def test_image_distribution_in_manifest() -> None:
    assert describe_image_distribution(None) == {
        "method": "assumed-present",
        "reference": "image id",
    }
    assert describe_image_distribution("127.0.0.1:5000")["method"] == "registry"


def test_rejected_task_names_missing_image() -> None:
    run = ContainerRun(
        exit_code=0,
        timed_out=False,
        oom_killed=False,
        stdout=b"",
        stderr=b"",
        container_s=0.3,
    )
    task = {
        "Status": {
            "State": "rejected",
            "Err": "No such image: sha256:0000",
            "ContainerStatus": {"ContainerID": "", "ExitCode": 0},
        }
    }
    build = prepared_build("sdk", "coldstart-test/sdk:x")
    planned = PlannedIteration(round=1, build="sdk", iteration=1)
    record = record_task(run, task, build, "sha256:0000", planned, "t", Limits())
    assert record.failure is FailureKind.ENGINE
    assert record.error == (
        "image sha256:0000 not found on the node (No such image: sha256:0000); "
        "load it on every node or pass --registry"
    )


class NotManagerNodes:
    def list(self) -> list[Any]:
        raise APIError("503", explanation="This node is not a swarm manager.")


class NotManagerClient:
    nodes = NotManagerNodes()


def test_not_a_manager_is_engine_unavailable() -> None:
    with pytest.raises(EngineUnavailable) as caught:
        list_nodes(NotManagerClient())  # type: ignore[arg-type]
    assert str(caught.value) == (
        "--backend swarm needs a swarm manager, but the engine returned: This node "
        "is "
        "not a swarm manager. (run `docker swarm init` on this host, or point "
        "DOCKER_HOST at a manager)"
    )
    assert caught.value.exit_code == 3


# ---------------------------------------------------------------------------
# a real single-node swarm


def swarm_state(client: docker.DockerClient) -> str:
    return str(client.info()["Swarm"]["LocalNodeState"])


def network_names(client: docker.DockerClient) -> set[str]:
    return {network.name for network in client.networks.list()}


@pytest.fixture(scope="module")
def client() -> Iterator[docker.DockerClient]:
    engine = docker.from_env()
    yield engine
    engine.close()


@pytest.fixture(scope="module")
def swarm(client: docker.DockerClient) -> Iterator[list[SwarmNode]]:
    """The engine's swarm nodes, after creating a swarm if there was none."""
    created = swarm_state(client) == "inactive"
    networks_before = network_names(client)
    if created:
        subprocess.run(
            ["docker", "swarm", "init", "--advertise-addr", "127.0.0.1"],
            check=True,
            capture_output=True,
        )
    try:
        yield list_nodes(client)
    finally:
        if created:
            subprocess.run(
                ["docker", "swarm", "leave", "--force"], check=True, capture_output=True
            )
            # swarm init creates docker_gwbridge, which leaving keeps.
            if "docker_gwbridge" not in networks_before:
                subprocess.run(
                    ["docker", "network", "rm", "docker_gwbridge"], capture_output=True
                )


@pytest.fixture(scope="module")
def burner_build(client: docker.DockerClient) -> PreparedBuild:
    return build_test_image(client, "burner", {"burner.py": BURNER_SOURCE})


def wait_for_network_removal(
    client: docker.DockerClient, name: str, timeout_s: float = 20
) -> set[str]:
    """Return the network names once ``name`` is gone, or at the timeout.

    The swarm manager deletes a network whose removal it accepted only after
    the tasks attached to it have stopped.
    """
    deadline = time.monotonic() + timeout_s
    names = network_names(client)
    while name in names and time.monotonic() < deadline:
        time.sleep(0.2)
        names = network_names(client)
    return names


def make_run_dir(tmp_path: Path, name: str) -> RunDirectory:
    run_dir = RunDirectory.create(tmp_path, name)
    run_dir.write_manifest({"status": "running"})
    return run_dir


@pytest.mark.docker
def test_swarm_task_has_no_outside_route(
    client: docker.DockerClient, swarm: list[SwarmNode], burner_build: PreparedBuild
) -> None:
    """The task's only interface besides loopback has no default route."""
    code = (
        "import os\n"
        "routes = open('/proc/net/route').read().splitlines()[1:]\n"
        "default = [r for r in routes if r.split()[1] == '00000000']\n"
        "raise Exception(f'{sorted(os.listdir(\"/sys/class/net\"))} {len(default)}')\n"
    )
    run_id = f"test-{uuid.uuid4().hex[:8]}"
    network = create_run_network(client, run_id, TEST_LABELS)
    try:
        record = run_swarm_iteration(
            client,
            burner_build,
            burner_build.image_id,
            make_scenario("network", code),
            Limits(cpus=1.0),
            PlannedIteration(round=1, build=burner_build.label, iteration=1),
            run_id,
            swarm[0],
            network,
            labels=TEST_LABELS,
        )
    finally:
        remove_run_networks(client, run_id)
    assert record.error == "phase 'network' raised Exception: ['eth0', 'lo'] 0"
    assert record.telemetry["node"] == swarm[0].to_dict()


@pytest.mark.docker
def test_swarm_missing_image_fails_task(
    client: docker.DockerClient, swarm: list[SwarmNode], burner_build: PreparedBuild
) -> None:
    missing = "sha256:" + "0" * 64
    run_id = f"test-{uuid.uuid4().hex[:8]}"
    network = create_run_network(client, run_id, TEST_LABELS)
    try:
        record = run_swarm_iteration(
            client,
            burner_build,
            missing,
            make_scenario("import burner", "import burner"),
            Limits(cpus=1.0),
            PlannedIteration(round=1, build=burner_build.label, iteration=1),
            run_id,
            swarm[0],
            network,
            labels=TEST_LABELS,
        )
    finally:
        remove_run_networks(client, run_id)
    assert record.failure is FailureKind.ENGINE
    assert record.error == (
        f"image {missing} not found on the node (No such image: {missing}); "
        "load it on every node or pass --registry"
    )


@pytest.mark.docker
def test_swarm_run_matches_local_run(
    client: docker.DockerClient,
    swarm: list[SwarmNode],
    burner_build: PreparedBuild,
    tmp_path: Path,
) -> None:
    builds = {
        label: prepared_build(label, burner_build.image_tag, burner_build.image_id)
        for label in ("baseline", "candidate")
    }
    images = {label: burner_build.image_id for label in builds}
    scenario = make_scenario("import burner", "import burner")
    limits = Limits(cpus=0.1, timeout_s=60)
    plan = plan_iterations(list(builds), 4, "shuffle", seed=7)
    env = Environment(docker_factory=lambda: client, quiet=True)
    swarm_dir = make_run_dir(tmp_path, f"test-swarm-{uuid.uuid4().hex[:6]}")
    on_swarm = run_plan_swarm(
        env,
        swarm_dir,
        builds,
        images,
        scenario,
        limits,
        plan,
        SilentDisplay(),
        2,
        labels=TEST_LABELS,
        client_factory=docker.from_env,
    )
    local = run_plan_parallel(
        env,
        make_run_dir(tmp_path, "local"),
        builds,
        scenario,
        limits,
        plan,
        SilentDisplay(),
        2,
        client_factory=docker.from_env,
        labels=TEST_LABELS,
    )
    assert [r.error for r in on_swarm if not r.ok] == []
    assert all(record.ok for record in local)
    swarm_cpu = [r.phases[0].cpu_s for r in on_swarm]
    local_cpu = [r.phases[0].cpu_s for r in local]
    assert abs(np.median(swarm_cpu) / np.median(local_cpu) - 1) < 0.15

    # Swarm applies the same CFS quota as a local container.
    for record in on_swarm:
        assert record.telemetry["cgroup"]["cpu_quota_us"] == 10_000
        assert record.telemetry["node"] == swarm[0].to_dict()

    manifest = {
        "run_id": swarm_dir.run_id,
        "baseline": "baseline",
        "scenario": scenario.to_dict(),
    }
    summary = summarise(manifest, on_swarm)
    nodes = {(n.node, n.build, n.phase) for n in summary.nodes}
    assert (swarm[0].hostname, "baseline", "import burner") in nodes
    assert (
        client.services.list(filters={"label": f"coldstart.run={swarm_dir.run_id}"})
        == []
    )
    assert f"coldstart-{swarm_dir.run_id}" not in network_names(client)


@pytest.mark.docker
def test_signal_removes_swarm_services(
    client: docker.DockerClient, swarm: list[SwarmNode], tmp_path: Path
) -> None:
    slow = build_test_image(
        client, "slow", {"sleepy.py": "import time\ntime.sleep(60)\n"}
    )
    builds = {"a": prepared_build("a", slow.image_tag, slow.image_id)}
    run_dir = make_run_dir(tmp_path, f"test-swarm-sig-{uuid.uuid4().hex[:6]}")
    env = Environment(docker_factory=lambda: client, quiet=True)
    timer = threading.Timer(4.0, os.kill, (os.getpid(), signal.SIGINT))
    timer.start()
    started = time.monotonic()
    try:
        with pytest.raises(Interrupted):
            run_plan_swarm(
                env,
                run_dir,
                builds,
                {"a": slow.image_id},
                make_scenario("import sleepy", "import sleepy"),
                Limits(cpus=0.5, timeout_s=50),
                plan_iterations(["a"], 2, "alternate", seed=0),
                SilentDisplay(),
                2,
                labels=TEST_LABELS,
                client_factory=docker.from_env,
            )
    finally:
        timer.cancel()
    assert time.monotonic() - started < 30
    label = f"coldstart.run={run_dir.run_id}"
    assert client.services.list(filters={"label": label}) == []
    assert client.containers.list(all=True, filters={"label": label}) == []
    network = f"coldstart-{run_dir.run_id}"
    assert network not in wait_for_network_removal(client, network)

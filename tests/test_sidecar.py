"""Sidecar stub server: reached over the measured container's own loopback."""

from __future__ import annotations

import uuid
from dataclasses import replace

import docker
import pytest
from images import TEST_LABELS

from harness.builds import prepare_build
from harness.environment import Environment
from harness.models import BaseImage, Limits, Sidecar
from harness.runner import PlannedIteration, run_iteration
from harness.scenario import load_scenario
from harness.specs import parse_spec

REQUEST_LINE = '"GET /v1/customers/cus_123 HTTP/1.1" 200'


def containers_with_label(client: docker.DockerClient, run_id: str) -> list:
    return client.containers.list(
        all=True, filters={"label": f"coldstart.run={run_id}"}
    )


@pytest.mark.docker
def test_first_request_reaches_stub(
    env: Environment, base_image: BaseImage, docker_client: docker.DockerClient
):
    scenario = load_scenario("stripe-first-request")
    build = prepare_build(env, parse_spec("s", "stripe==15.3.1"), scenario, base_image)
    run_id = f"test-{uuid.uuid4().hex[:8]}"
    record = run_iteration(
        docker_client,
        build,
        scenario,
        Limits(cpus=0.5, timeout_s=60),
        PlannedIteration(1, "s", 1),
        run_id,
        labels=TEST_LABELS,
    )
    assert record.ok, record.error
    names = [phase.name for phase in record.phases]
    assert names == ["import stripe", "StripeClient()", "first request"]
    request_phase = record.phases[2]
    assert request_phase.wall_s > 0
    assert request_phase.cpu_s > 0
    assert REQUEST_LINE in record.telemetry["sidecar_log"]
    # Both the sidecar and the measured container are gone.
    assert containers_with_label(docker_client, run_id) == []


@pytest.mark.docker
def test_sidecar_that_never_listens_fails_iteration(
    env: Environment, base_image: BaseImage, docker_client: docker.DockerClient
):
    scenario = load_scenario("stripe-first-request")
    build = prepare_build(env, parse_spec("s", "stripe==15.3.1"), scenario, base_image)
    broken = replace(scenario, sidecar=Sidecar(code="raise SystemExit(3)", port=12111))
    run_id = f"test-{uuid.uuid4().hex[:8]}"
    record = run_iteration(
        docker_client,
        build,
        broken,
        Limits(cpus=0.5, timeout_s=60),
        PlannedIteration(1, "s", 1),
        run_id,
        labels=TEST_LABELS,
    )
    assert record.failure is not None
    assert record.failure.value == "engine"
    assert record.error is not None
    assert record.error.startswith("sidecar did not print 'ready' within 30 s")
    assert "status exited" in record.error
    assert containers_with_label(docker_client, run_id) == []

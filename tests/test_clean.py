"""Tests for finding and removing what dead runs left on the engine."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import uuid
from collections.abc import Iterator
from typing import Any

import docker
import pytest
from images import TEST_LABELS

from harness.clean import (
    clean,
    find_dead_runs,
    harness_labels,
    is_dead_run,
    remove_build_images,
)


def test_harness_labels_name_this_process() -> None:
    labels = harness_labels()
    assert labels == {
        "coldstart.pid": str(os.getpid()),
        "coldstart.host": socket.gethostname(),
    }
    assert not is_dead_run(labels)


def test_run_of_exited_process_is_dead() -> None:
    labels = {"coldstart.pid": "12345", "coldstart.host": socket.gethostname()}
    assert is_dead_run(labels, alive=lambda pid: False)
    assert not is_dead_run(labels, alive=lambda pid: True)


def test_run_of_other_host_is_not_dead() -> None:
    labels = {"coldstart.pid": "12345", "coldstart.host": "elsewhere"}
    assert not is_dead_run(labels, alive=lambda pid: False)


def test_run_without_process_label_is_dead() -> None:
    assert is_dead_run({"coldstart.run": "old"})


@pytest.fixture
def dead_run(docker_client: docker.DockerClient, base_image: Any) -> Iterator[str]:
    """A run id whose two containers belong to a process that has exited."""
    finished = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                              capture_output=True, text=True, check=True)  # fmt: skip
    run_id = f"test-dead-{uuid.uuid4().hex[:8]}"
    labels = {
        "coldstart.run": run_id,
        "coldstart.pid": finished.stdout.strip(),
        "coldstart.host": socket.gethostname(),
        **TEST_LABELS,
    }
    for _ in range(2):
        docker_client.containers.create(base_image.tag, ["true"], labels=labels)
    yield run_id
    for container in docker_client.containers.list(
        all=True, filters={"label": f"coldstart.run={run_id}"}
    ):
        container.remove(force=True)


@pytest.mark.docker
def test_dead_run_found_and_cleaned(
    docker_client: docker.DockerClient, dead_run: str
) -> None:
    dead = find_dead_runs(docker_client)
    assert len(dead[dead_run]) == 2
    result = clean(docker_client, run_id=dead_run)
    assert len(result.containers) == 2
    assert result.errors == ()
    assert dead_run not in find_dead_runs(docker_client)


@pytest.mark.docker
def test_run_warns_about_dead_run(
    docker_client: docker.DockerClient, dead_run: str, tmp_path: Any
) -> None:
    """The warning comes before the builds are prepared, so a bad spec ends it."""
    result = subprocess.run(
        [sys.executable, "-m", "harness", "run", "--build", "a=nope==1",
         "--results", str(tmp_path), "--image", "python:3.11-slim"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert dead_run in result.stderr
    assert "remove them with `coldstart clean`" in result.stderr


@pytest.mark.docker
def test_clean_removes_labelled_images(
    docker_client: docker.DockerClient, base_image: Any
) -> None:
    key = f"test-{uuid.uuid4().hex[:8]}"
    label = f"coldstart.test.clean={key}"
    container = docker_client.containers.create(base_image.tag, ["true"])
    image = container.commit(
        repository="coldstart-test/clean", tag=key,
        changes=[f"LABEL coldstart.test.clean={key} coldstart.test=1"],
    )  # fmt: skip
    container.remove()
    removed, errors = remove_build_images(docker_client, label=label)
    assert removed == (f"coldstart-test/clean:{key}",)
    assert errors == ()
    with pytest.raises(docker.errors.ImageNotFound):
        docker_client.images.get(image.id)


def test_clean_with_run_and_images_help() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "harness", "clean", "--help"],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    assert "--run RUN_ID" in result.stdout
    assert "Also remove every build image" in result.stdout

"""Session fixtures shared by the tests that use the real Docker engine."""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from pathlib import Path

import docker
import pytest

from harness.baseimage import resolve_base_image
from harness.engine import connect
from harness.environment import Environment
from harness.models import BaseImage

GitRunner = Callable[..., str]


@pytest.fixture(scope="session")
def docker_client() -> docker.DockerClient:
    return connect()


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A cache directory shared by the session, so wheelhouses are built once."""
    return tmp_path_factory.mktemp("coldstart-cache")


@pytest.fixture(scope="session")
def env(cache_dir: Path, docker_client: docker.DockerClient) -> Environment:
    return Environment(
        cache_dir=cache_dir, docker_factory=lambda: docker_client, quiet=True
    )


@pytest.fixture(scope="session")
def base_image(docker_client: docker.DockerClient, cache_dir: Path) -> BaseImage:
    """``python:3.11-slim``, or the stand-in built where it cannot be pulled."""
    return resolve_base_image(docker_client, "python:3.11-slim", cache_dir=cache_dir)


def run_git(repository: Path, *arguments: str) -> str:
    """Run git in ``repository`` with a fixed identity and return its stdout."""
    completed = subprocess.run(
        ["git", "-C", str(repository), "-c", "user.name=coldstart tests"]
        + ["-c", "user.email=tests@coldstart.invalid", *arguments],
        capture_output=True,
        text=True,
        check=True,
    )
    return completed.stdout.strip()


@pytest.fixture(scope="session")
def git() -> GitRunner:
    return run_git

"""Build an SDK's wheel inside a container, for checkouts that are not trusted.

Building a wheel runs the project's build backend (setup.py, hatch hooks and
the like), which is arbitrary code. On the host it runs with the user's rights,
files and network. Here it runs in a container of the base image as ``nobody``,
with no network, no capabilities, a process limit and the source mounted
read-only. The build backend's own requirements are downloaded on the host
first, as binary wheels only, so no code of theirs runs on the host either.
"""

from __future__ import annotations

import logging
import os
import tomllib
from collections.abc import Callable
from pathlib import Path

import docker
import docker.errors
import requests.exceptions

from harness.models import BaseImage

logger = logging.getLogger(__name__)

# PEP 517: a project without [build-system] builds with setuptools' legacy
# backend, which needs setuptools and wheel.
LEGACY_BUILD_REQUIRES = ["setuptools>=40.8.0", "wheel"]
BUILD_TIMEOUT_S = 600
BUILD_MEMORY = "1g"
BUILD_PIDS_LIMIT = 256
NOBODY = "65534:65534"

# Copies the read-only source to a writable place, because setuptools writes
# build/ and *.egg-info next to the sources, then builds the wheel offline.
BUILD_SCRIPT = (
    "cp -r /src /tmp/src && python3 -m pip wheel --no-deps --no-index "
    "--disable-pip-version-check --find-links /deps --wheel-dir /out /tmp/src"
)


class ContainerBuildFailed(Exception):
    """The in-container build failed; the message is one line naming the cause."""


def read_build_requires(source: Path) -> list[str]:
    """Return ``[build-system] requires`` of the project at ``source``."""
    pyproject = source / "pyproject.toml"
    if not pyproject.is_file():
        return list(LEGACY_BUILD_REQUIRES)
    try:
        data = tomllib.loads(pyproject.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as error:
        raise ContainerBuildFailed(f"invalid pyproject.toml: {error}") from None
    build_system = data.get("build-system", {})
    requires = build_system.get("requires", LEGACY_BUILD_REQUIRES)
    if not isinstance(requires, list) or not all(isinstance(r, str) for r in requires):
        raise ContainerBuildFailed("pyproject.toml: build-system.requires is invalid")
    return requires


def build_wheel_in_container(
    client: docker.DockerClient,
    base: BaseImage,
    source: Path,
    scratch: Path,
    download: Callable[[list[str], Path], None],
) -> Path:
    """Build the wheel of ``source`` in a container of ``base``; return its path.

    ``download(requirements, directory)`` fetches the build requirements on the
    host as binary wheels into ``directory``.
    """
    deps, out = scratch / "build-deps", scratch / "build-out"
    deps.mkdir()
    out.mkdir()
    os.chmod(out, 0o777)
    download(read_build_requires(source), deps)
    logger.info("building the wheel of %s in a container of %s", source, base.tag)
    output = run_build_container(client, base, source, deps, out)
    wheels = sorted(out.glob("*.whl"))
    if len(wheels) != 1:
        raise ContainerBuildFailed(
            f"the container built {len(wheels)} wheels, expected 1: {last_line(output)}"
        )
    return wheels[0]


def run_build_container(
    client: docker.DockerClient, base: BaseImage, source: Path, deps: Path, out: Path
) -> str:
    container = client.containers.create(
        base.tag,
        ["sh", "-c", BUILD_SCRIPT],
        user=NOBODY,
        environment={"HOME": "/tmp"},
        network_disabled=True,
        network_mode="none",
        cap_drop=["ALL"],
        security_opt=["no-new-privileges"],
        pids_limit=BUILD_PIDS_LIMIT,
        mem_limit=BUILD_MEMORY,
        tmpfs={"/tmp": "rw,exec,size=512m"},
        volumes={
            str(source): {"bind": "/src", "mode": "ro"},
            str(deps): {"bind": "/deps", "mode": "ro"},
            str(out): {"bind": "/out", "mode": "rw"},
        },
        labels={"coldstart": "1", "coldstart.helper": "wheel-build"},
    )
    try:
        container.start()
        status = wait_for(container)
        output = container.logs().decode("utf-8", errors="replace")
    finally:
        container.remove(force=True)
    if status != 0:
        raise ContainerBuildFailed(
            f"building the wheel in a container failed: {last_line(output)}"
        )
    return output


def wait_for(container: docker.models.containers.Container) -> int:
    try:
        result = container.wait(timeout=BUILD_TIMEOUT_S)
    except (requests.exceptions.ReadTimeout, requests.exceptions.ConnectionError):
        container.kill()
        raise ContainerBuildFailed(
            f"building the wheel in a container timed out after {BUILD_TIMEOUT_S} s"
        ) from None
    return int(result.get("StatusCode", 1))


def last_line(output: str) -> str:
    lines = [line.strip() for line in output.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("ERROR")]
    if errors:
        return errors[-1]
    return lines[-1] if lines else "no output"

"""Connect to the Docker engine and describe it and the host for the manifest."""

from __future__ import annotations

import logging
import os
import platform
from pathlib import Path
from typing import Any

import docker
import docker.errors
import requests.exceptions

from harness.errors import EngineUnavailable

logger = logging.getLogger(__name__)

DEFAULT_DOCKER_HOST = "unix:///var/run/docker.sock"
ENGINE_FIX = "start it with `make engine`, or `dockerd &` as root"


def connect() -> docker.DockerClient:
    """Return a client for the engine that ``DOCKER_HOST`` names, after a ping.

    Raises EngineUnavailable naming the address tried, the cause and the fix.
    """
    host = os.environ.get("DOCKER_HOST") or DEFAULT_DOCKER_HOST
    try:
        client = docker.from_env()
        client.ping()
    except (
        docker.errors.DockerException,
        requests.exceptions.RequestException,
    ) as error:
        cause = describe_connection_error(error)
        raise EngineUnavailable(
            f"Docker engine not reachable at {host}: {cause} ({ENGINE_FIX})"
        ) from error
    logger.debug("connected to the Docker engine at %s", host)
    return client


def describe_connection_error(error: BaseException) -> str:
    """Return the innermost cause of ``error`` as one line.

    The docker SDK wraps socket errors in two or three layers of requests and
    urllib3 exceptions, and only the innermost one names the cause.
    """
    innermost: BaseException = error
    while True:
        nested = innermost.__cause__ or innermost.__context__
        if nested is None:
            break
        innermost = nested
    if isinstance(innermost, OSError) and innermost.strerror:
        return innermost.strerror
    lines = str(innermost).strip().splitlines() or [type(innermost).__name__]
    return lines[0]


def engine_info(client: docker.DockerClient) -> dict[str, Any]:
    """Return the engine's version, cgroup setup, kernel, OS and CPU count."""
    info = client.info()
    return {
        "server_version": info.get("ServerVersion"),
        "api_version": client.api.api_version,
        "cgroup_version": info.get("CgroupVersion"),
        "cgroup_driver": info.get("CgroupDriver"),
        "kernel": info.get("KernelVersion"),
        "os": info.get("OperatingSystem"),
        "cpus": info.get("NCPU"),
    }


def host_info() -> dict[str, Any]:
    """Return the host's kernel release, CPU model and logical CPU count."""
    return {
        "kernel": platform.release(),
        "cpu_model": read_cpu_model(),
        "cpus": os.cpu_count(),
    }


def read_cpu_model(cpuinfo: Path = Path("/proc/cpuinfo")) -> str | None:
    """Return the first ``model name`` in ``cpuinfo``, or None where there is none.

    ARM kernels and some virtual machines leave the field out.
    """
    try:
        text = cpuinfo.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "model name":
            return value.strip()
    return None

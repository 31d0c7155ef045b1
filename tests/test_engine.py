"""Tests for the engine connection and the engine and host descriptions."""

from __future__ import annotations

import os
from pathlib import Path

import docker
import pytest

from harness.engine import connect, engine_info, host_info, read_cpu_model
from harness.errors import EngineUnavailable, ExitCode


def test_missing_socket_raises(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    socket = tmp_path / "docker.sock"
    monkeypatch.setenv("DOCKER_HOST", f"unix://{socket}")
    with pytest.raises(EngineUnavailable) as caught:
        connect()
    assert str(caught.value) == (
        f"Docker engine not reachable at unix://{socket}: No such file or "
        "directory (start it with `make engine`, or `dockerd &` as root)"
    )
    assert caught.value.exit_code is ExitCode.ENGINE_UNAVAILABLE


def test_refused_port_raises(monkeypatch: pytest.MonkeyPatch) -> None:
    # Port 1 on loopback has no listener, so the connection is refused at once.
    monkeypatch.setenv("DOCKER_HOST", "tcp://127.0.0.1:1")
    with pytest.raises(EngineUnavailable) as caught:
        connect()
    assert str(caught.value) == (
        "Docker engine not reachable at tcp://127.0.0.1:1: Connection refused "
        "(start it with `make engine`, or `dockerd &` as root)"
    )


@pytest.mark.docker
def test_engine_info_fields(docker_client: docker.DockerClient) -> None:
    info = engine_info(docker_client)
    version = docker_client.version()
    assert info["server_version"] == version["Version"]
    assert info["cgroup_version"] in ("1", "2")
    assert info["cgroup_driver"] in ("cgroupfs", "systemd")
    assert info["kernel"] == version["KernelVersion"]
    assert isinstance(info["cpus"], int)
    assert info["cpus"] >= 1
    assert info["os"]


def test_host_info_fields() -> None:
    info = host_info()
    assert info["kernel"] == os.uname().release
    assert info["cpus"] == os.cpu_count()


def test_cpu_model_from_cpuinfo(tmp_path: Path) -> None:
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text(
        "processor\t: 0\nvendor_id\t: AuthenticAMD\n"
        "model name\t: AMD EPYC 7B13 64-Core Processor\n\n"
        "processor\t: 1\nmodel name\t: AMD EPYC 7B13 64-Core Processor\n"
    )
    assert read_cpu_model(cpuinfo) == "AMD EPYC 7B13 64-Core Processor"


def test_cpu_model_missing(tmp_path: Path) -> None:
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nBogoMIPS\t: 50.00\n")
    assert read_cpu_model(cpuinfo) is None
    assert read_cpu_model(tmp_path / "absent") is None

"""``coldstart doctor``: check what a run needs and print how to fix gaps.

The checks only look: nothing is pulled, built or installed.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass

import docker
from rich.table import Table
from rich.text import Text

from harness.baseimage import (
    STAND_INS,
    describe_api_error,
    find_image,
    image_python_version,
)
from harness.engine import connect, engine_info, host_info
from harness.environment import Environment
from harness.errors import EngineUnavailable


@dataclass(frozen=True)
class Check:
    """Outcome of one doctor check: ``ok``, ``warn`` (works, with a caveat) or
    ``fail`` (a run cannot start until it is fixed)."""

    name: str
    status: str
    detail: str


def run_doctor(env: Environment, image: str) -> list[Check]:
    """Print the checks as a table; raise EngineUnavailable if any failed."""
    checks = [check_host()]
    try:
        client = connect()
    except EngineUnavailable as error:
        checks.append(Check("engine", "fail", str(error)))
    else:
        checks.append(check_engine(client))
        checks.append(check_base_image(client, image))
    print_checks(env, checks)
    failed = [check for check in checks if check.status == "fail"]
    if failed:
        names = ", ".join(check.name for check in failed)
        raise EngineUnavailable(f"doctor found problems with: {names} (see above)")
    return checks


def check_host() -> Check:
    host = host_info()
    detail = f"{host['cpus']} CPUs, {host['cpu_model']}, kernel {host['kernel']}"
    return Check("host", "ok", detail)


def check_engine(client: docker.DockerClient) -> Check:
    info = engine_info(client)
    detail = (
        f"Docker {info['server_version']}, cgroup v{info['cgroup_version']} "
        f"({info['cgroup_driver']}), {info['cpus']} CPUs"
    )
    return Check("engine", "ok", detail)


def check_base_image(client: docker.DockerClient, image: str) -> Check:
    """Say which image a run would use, with its Python version, or how to get one."""
    if find_image(client, image) is not None:
        version = image_python_version(client, image)
        return Check("base image", "ok", f"{image} present: Python {version}")
    if image not in STAND_INS:
        return check_registry(client, image)
    suite, tag = STAND_INS[image]
    if find_image(client, tag) is not None:
        version = image_python_version(client, tag)
        return Check(
            "base image",
            "warn",
            f"{image} is not on the engine; runs use the stand-in {tag} "
            f"(Python {version}, built from Debian {suite} packages)",
        )
    return check_stand_in_tools(image, suite)


def check_registry(client: docker.DockerClient, image: str) -> Check:
    """Ask the registry, through the engine, whether ``image`` could be pulled."""
    try:
        client.api.inspect_distribution(image)
    except docker.errors.APIError as error:
        return Check(
            "base image",
            "fail",
            f"{image} is not on the engine, has no stand-in, and the registry "
            f"cannot provide it: {describe_api_error(error)} (pull it where the "
            "registry is reachable and `docker load` it here, or pass --image "
            "with a local image)",
        )
    return Check(
        "base image",
        "warn",
        f"{image} is not on the engine; `coldstart run` will pull it "
        f"(run `coldstart image --image {image}` to pull it now)",
    )


def check_stand_in_tools(image: str, suite: str) -> Check:
    if shutil.which("debootstrap") and os.geteuid() == 0:
        return Check(
            "base image",
            "warn",
            f"{image} is not on the engine; `coldstart image` pulls it, or "
            f"builds a stand-in from Debian {suite} packages where it cannot",
        )
    return Check(
        "base image",
        "fail",
        f"{image} is not on the engine, and building a stand-in needs "
        "debootstrap and root: pull the image, or install debootstrap "
        "(apt-get install debootstrap) and run `coldstart image` as root",
    )


def print_checks(env: Environment, checks: list[Check]) -> None:
    styles = {"ok": "green", "warn": "yellow", "fail": "bold red"}
    table = Table(title="coldstart doctor", show_lines=False)
    table.add_column("check")
    table.add_column("status")
    table.add_column("detail", overflow="fold")
    for check in checks:
        status = Text(check.status, style=styles[check.status])
        table.add_row(check.name, status, Text(check.detail))
    env.stdout.print(table)

"""Sidecar stub servers that a scenario's measured container reaches on loopback.

The sidecar starts from the build's image with networking disabled, so it has
only a loopback interface, and without a CPU quota. The measured container then
joins the sidecar's network namespace (``network_mode="container:<id>"``), so
127.0.0.1 is shared between the two while nothing can leave the host.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from harness.models import PreparedBuild, Scenario, Sidecar

if TYPE_CHECKING:
    import docker

logger = logging.getLogger(__name__)

READY_TIMEOUT_S = 30.0
POLL_INTERVAL_S = 0.1
LOG_TAIL_CHARS = 2000


class SidecarNotReady(Exception):
    """The sidecar exited or did not print its ready text in time."""


@dataclass
class SidecarHandle:
    """The network mode for the measured container, and the sidecar if any."""

    network_mode: str
    container: Any = None

    def read_log(self) -> str | None:
        """Return the end of the sidecar's stdout and stderr, or None without one."""
        if self.container is None:
            return None
        text = self.container.logs(stdout=True, stderr=True).decode(
            "utf-8", errors="replace"
        )
        return text[-LOG_TAIL_CHARS:]


@contextmanager
def sidecar_network(
    client: docker.DockerClient,
    build: PreparedBuild,
    scenario: Scenario,
    labels: Mapping[str, str],
) -> Iterator[SidecarHandle]:
    """Start the scenario's sidecar, if it has one, and remove it afterwards.

    Without a sidecar the measured container gets no network at all. Raises
    SidecarNotReady when the sidecar does not print its ready text within
    READY_TIMEOUT_S seconds.
    """
    if scenario.sidecar is None:
        yield SidecarHandle(network_mode="none")
        return
    container = start_sidecar(client, build, scenario.sidecar, labels)
    try:
        wait_until_ready(container, scenario.sidecar.ready)
        yield SidecarHandle(
            network_mode=f"container:{container.id}", container=container
        )
    finally:
        try:
            container.remove(force=True)
        except Exception as error:  # noqa: BLE001 - cleanup must not hide the cause
            logger.warning("could not remove sidecar %s: %s", container.short_id, error)


def start_sidecar(
    client: docker.DockerClient,
    build: PreparedBuild,
    sidecar: Sidecar,
    labels: Mapping[str, str],
) -> Any:
    return client.containers.run(
        image=build.image_tag,
        command=["python3", "-u", "-c", sidecar.code],
        environment={"COLDSTART_SIDECAR_PORT": str(sidecar.port)},
        network_mode="none",
        cap_drop=["ALL"],
        security_opt=["no-new-privileges"],
        # As the measured code runs: as nobody, on a read-only root.
        user="65534:65534",
        read_only=True,
        labels={**labels, "coldstart.sidecar": "1"},
        detach=True,
    )


def wait_until_ready(container: Any, ready: str) -> None:
    deadline = time.monotonic() + READY_TIMEOUT_S
    while time.monotonic() < deadline:
        output = container.logs(stdout=True, stderr=False).decode(
            "utf-8", errors="replace"
        )
        if ready in output:
            return
        container.reload()
        if container.status == "exited":
            break
        time.sleep(POLL_INTERVAL_S)
    tail = container.logs(stdout=True, stderr=True).decode("utf-8", errors="replace")
    raise SidecarNotReady(
        f"sidecar did not print {ready!r} within {READY_TIMEOUT_S:g} s "
        f"(status {container.status}); its output ends with: {tail[-300:]!r}"
    )

"""Find and remove what runs left on the engine: containers and build images.

Every measurement container carries ``coldstart.run=<run id>`` and the
harness's process id and host name. A run is dead when its harness process no
longer exists on this host. Containers of other hosts' runs, sharing a remote
engine, are never called dead.
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import requests
from docker.errors import APIError, DockerException, ImageNotFound

from harness.errors import EngineUnavailable

if TYPE_CHECKING:
    import docker

logger = logging.getLogger(__name__)

RUN_LABEL = "coldstart.run"
PID_LABEL = "coldstart.pid"
HOST_LABEL = "coldstart.host"
# Set on every build image by the measurement Dockerfile.
BUILD_IMAGE_LABEL = "coldstart.build.key"


def harness_labels() -> dict[str, str]:
    """Return the labels that tie a container to this harness process."""
    return {PID_LABEL: str(os.getpid()), HOST_LABEL: socket.gethostname()}


def is_process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        # The process exists but belongs to another user.
        return True
    return True


def is_dead_run(
    labels: Mapping[str, str], alive: Callable[[int], bool] = is_process_alive
) -> bool:
    """Return whether the harness that made a container with ``labels`` is gone.

    A container without a process id label is counted as dead, because every
    run of this version labels its containers.
    """
    pid = labels.get(PID_LABEL, "")
    if not pid.isdigit():
        return True
    if labels.get(HOST_LABEL) != socket.gethostname():
        return False
    return not alive(int(pid))


def list_run_containers(
    client: docker.DockerClient, run_id: str | None = None
) -> list[Any]:
    """Return the containers labelled with ``run_id``, or with any run id."""
    label = f"{RUN_LABEL}={run_id}" if run_id else RUN_LABEL
    try:
        return list(client.containers.list(all=True, filters={"label": label}))
    except (DockerException, requests.RequestException) as error:
        raise EngineUnavailable(
            f"could not list containers on the Docker engine: {error}"
        ) from error


def find_dead_runs(client: docker.DockerClient) -> dict[str, list[Any]]:
    """Return the containers of dead runs, by run id."""
    dead: dict[str, list[Any]] = {}
    for container in list_run_containers(client):
        labels = container.labels or {}
        if is_dead_run(labels):
            dead.setdefault(labels[RUN_LABEL], []).append(container)
    return dead


def warn_about_dead_runs(client: docker.DockerClient) -> None:
    """Log a warning naming the dead runs whose containers are still present."""
    try:
        dead = find_dead_runs(client)
    except EngineUnavailable as error:
        logger.warning("%s", error)
        return
    if not dead:
        return
    count = sum(len(containers) for containers in dead.values())
    logger.warning(
        "%d containers of runs that are no longer running are still present "
        "(runs %s): they take memory and CPU from the measurements; remove "
        "them with `coldstart clean`",
        count,
        ", ".join(sorted(dead)),
    )


@dataclass(frozen=True)
class CleanResult:
    """Items ``coldstart clean`` removed, and errors for those it could not."""

    containers: tuple[str, ...] = ()
    images: tuple[str, ...] = ()
    errors: tuple[str, ...] = ()


def clean(
    client: docker.DockerClient, run_id: str | None = None, images: bool = False
) -> CleanResult:
    """Remove containers of dead runs, or all of ``run_id``'s; images on request.

    Without ``run_id`` only containers of dead runs are removed, so a run in
    progress in another terminal keeps its container. With ``images`` every
    build image (label ``coldstart.build.key``) is removed as well; the base
    image and its stand-in stay.
    """
    if run_id is not None:
        targets = list_run_containers(client, run_id)
    else:
        targets = [c for group in find_dead_runs(client).values() for c in group]
    removed, errors = remove_containers(targets)
    removed_images: tuple[str, ...] = ()
    if images:
        removed_images, image_errors = remove_build_images(client)
        errors += image_errors
    return CleanResult(removed, removed_images, errors)


def remove_containers(containers: list[Any]) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """Force-remove ``containers``; return the removed ids and the errors."""
    removed: list[str] = []
    errors: list[str] = []
    for container in containers:
        try:
            container.remove(force=True)
        except (DockerException, requests.RequestException) as error:
            errors.append(f"container {container.short_id}: {error}")
            continue
        logger.info(
            "removed container %s of run %s",
            container.short_id,
            (container.labels or {}).get(RUN_LABEL),
        )
        removed.append(container.short_id)
    return tuple(removed), tuple(errors)


def remove_build_images(
    client: docker.DockerClient, label: str = BUILD_IMAGE_LABEL
) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """Remove every image carrying ``label``; return the removed ids and errors.

    Removal is forced so that an image with several tags goes at once. The
    engine then only untags an image that a running container uses.
    """
    removed: list[str] = []
    errors: list[str] = []
    try:
        found = client.images.list(filters={"label": label})
    except (DockerException, requests.RequestException) as error:
        raise EngineUnavailable(f"could not list images: {error}") from error
    for image in found:
        name = image.tags[0] if image.tags else image.short_id
        try:
            client.images.remove(image.id, force=True)
        except ImageNotFound:
            continue
        except APIError as error:
            errors.append(f"image {name}: {error.explanation or error}")
            continue
        logger.info("removed image %s", name)
        removed.append(name)
    return tuple(removed), tuple(errors)

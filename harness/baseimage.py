"""Find the base image that measurement images are layered on.

Use the requested image if the engine has it, else pull it, else build a
stand-in from Debian packages for the two official tags whose Python matches a
Debian suite. The returned BaseImage records which image ran and its real
Python version, so a report never claims ``python:3.11-slim`` for a stand-in.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import subprocess
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import docker
import docker.errors
import requests.exceptions

from harness.environment import default_cache_dir
from harness.errors import EngineUnavailable, InvalidInput
from harness.models import BaseImage

logger = logging.getLogger(__name__)

# Official tags whose Python version is the python3 of a Debian suite, mapped to
# (suite, stand-in tag). Bookworm ships Python 3.11 and trixie 3.13. No suite
# ships 3.12, so python:3.12-slim has no stand-in.
STAND_INS = {
    "python:3.11-slim": ("bookworm", "coldstart/stand-in:python3.11-bookworm"),
    "python:3.13-slim": ("trixie", "coldstart/stand-in:python3.13-trixie"),
}

STAND_IN_LABEL = "coldstart.stand-in"
DEBIAN_MIRROR = "http://deb.debian.org/debian"
STAND_IN_PACKAGES = "python3,python3-pip,python3-venv,ca-certificates"

# Docker Hub fails within a second where DNS fails, but a registry that drops
# packets would hold a pull until the engine's own timeouts, which take minutes.
PULL_TIMEOUT_S = 120.0

PYTHON_VERSION_CODE = "import platform; print(platform.python_version())"
HELPER_LABELS = {"coldstart": "1", "coldstart.helper": "python-version"}
HELPER_TIMEOUT_S = 60

# The reference grammar of the distribution project (reference/regexp.go):
# [registry[:port]/]path[:tag][@digest], path components in lower case.
_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_DOMAIN_PART = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
IMAGE_REFERENCE = re.compile(
    rf"(?:{_DOMAIN_PART}(?:\.{_DOMAIN_PART})*(?::[0-9]+)?/)?"
    rf"{_COMPONENT}(?:/{_COMPONENT})*"
    r"(?::[\w][\w.-]{0,127})?"
    r"(?:@[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{32,})?"
)


def check_image_reference(reference: str, option: str = "--image") -> None:
    """Raise InvalidInput unless ``reference`` is a valid Docker image reference."""
    if len(reference) > 255 or not IMAGE_REFERENCE.fullmatch(reference):
        raise InvalidInput(
            f"invalid {option} {reference!r}: not a valid image reference "
            "(for example python:3.11-slim)"
        )


def resolve_base_image(
    client: docker.DockerClient,
    requested: str,
    *,
    allow_stand_in: bool = True,
    cache_dir: Path | None = None,
    log: logging.Logger = logger,
) -> BaseImage:
    """Return the image to build on for ``requested``: local, pulled or stand-in.

    Raises InvalidInput for a malformed reference and EngineUnavailable when
    none of the three is possible.
    """
    check_image_reference(requested)
    if (image := find_image(client, requested)) is not None:
        log.info("base image %s found on the engine", requested)
        return describe_base_image(client, requested, requested, image, "local")
    pull_error = pull_image(client, requested, log)
    if pull_error is None:
        image = client.images.get(requested)
        return describe_base_image(client, requested, requested, image, "pulled")
    if not allow_stand_in or requested not in STAND_INS:
        raise EngineUnavailable(
            f"base image {requested!r} is not on the engine and the pull failed: "
            f"{pull_error} (pull it where the registry is reachable and "
            "`docker load` it here, or pass --image with a local image)"
        )
    suite, tag = STAND_INS[requested]
    image = find_image(client, tag)
    if image is None:
        build_stand_in(client, suite, tag, log, cache_dir=cache_dir)
        image = client.images.get(tag)
    else:
        log.info("using the stand-in %s built earlier", tag)
    return describe_base_image(client, requested, tag, image, "stand-in")


def find_image(client: docker.DockerClient, tag: str) -> Any | None:
    try:
        return client.images.get(tag)
    except docker.errors.ImageNotFound:
        return None


def pull_image(
    client: docker.DockerClient, tag: str, log: logging.Logger
) -> str | None:
    """Pull ``tag`` and return None, or return why the pull failed as one line.

    The docker SDK sets no timeout on pulls, so the pull runs in a daemon
    thread. NOTE: after PULL_TIMEOUT_S the engine may still finish the pull.
    """
    outcome: list[str | None] = []

    def pull() -> None:
        try:
            client.images.pull(tag)
            outcome.append(None)
        except docker.errors.APIError as error:
            outcome.append(describe_api_error(error))

    log.info("base image %s not on the engine, pulling it", tag)
    worker = threading.Thread(target=pull, name=f"pull {tag}", daemon=True)
    worker.start()
    worker.join(PULL_TIMEOUT_S)
    if not outcome:
        outcome.append(f"timed out after {PULL_TIMEOUT_S:.0f} s")
    if outcome[0] is not None:
        log.info("pull of %s failed: %s", tag, outcome[0])
    else:
        log.info("pulled %s", tag)
    return outcome[0]


def describe_api_error(error: docker.errors.APIError) -> str:
    explanation = error.explanation
    if isinstance(explanation, bytes):
        explanation = explanation.decode("utf-8", errors="replace")
    text = str(explanation or error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def describe_base_image(
    client: docker.DockerClient, requested: str, tag: str, image: Any, origin: str
) -> BaseImage:
    """Return the BaseImage of ``image``, recognising a stand-in by its label."""
    suite = (image.labels or {}).get(STAND_IN_LABEL)
    if suite:
        origin = f"stand-in built from Debian {suite} packages"
    return BaseImage(
        requested=requested,
        tag=tag,
        image_id=image.id,
        python_version=image_python_version(client, tag),
        stand_in=bool(suite),
        origin=origin,
    )


def image_python_version(client: docker.DockerClient, tag: str) -> str:
    """Return the Python version that ``python3`` in image ``tag`` reports.

    Runs a throwaway container with networking disabled (about 1 s) and
    removes it even when it fails to start.
    """
    try:
        container = client.containers.create(
            tag,
            ["python3", "-c", PYTHON_VERSION_CODE],
            network_disabled=True,
            labels=HELPER_LABELS,
        )
    except docker.errors.APIError as error:
        raise python_missing(tag, describe_api_error(error)) from error
    try:
        container.start()
        status = container.wait(timeout=HELPER_TIMEOUT_S)["StatusCode"]
        output = bytes(container.logs()).decode(errors="replace").strip()
    except docker.errors.APIError as error:
        raise python_missing(tag, describe_api_error(error)) from error
    except requests.exceptions.RequestException as error:
        cause = f"no result within {HELPER_TIMEOUT_S} s ({type(error).__name__})"
        raise python_missing(tag, cause) from error
    finally:
        container.remove(force=True)
    if status != 0:
        last_line = output.splitlines()[-1] if output else "no output"
        raise python_missing(tag, f"exit status {status}: {last_line}")
    return output


def python_missing(tag: str, cause: str) -> EngineUnavailable:
    return EngineUnavailable(
        f"cannot run python3 in base image {tag!r}: {cause} "
        "(use an image that has python3 on its PATH)"
    )


def build_stand_in(
    client: docker.DockerClient,
    suite: str,
    tag: str,
    log: logging.Logger = logger,
    *,
    cache_dir: Path | None = None,
) -> None:
    """Build image ``tag`` from Debian ``suite`` packages with debootstrap.

    The image behaves like ``python:*-slim`` where the measurement needs it
    (``python`` and ``python3`` on the PATH, pip, UTF-8 locale) and carries the
    label ``coldstart.stand-in=<suite>``. On a 2-CPU AMD EPYC virtual machine a
    bookworm build took 57-72 s and gave a 289 MB image.
    """
    check_stand_in_tools()
    work_dir = (cache_dir or default_cache_dir()) / "stand-in"
    work_dir.mkdir(parents=True, exist_ok=True)
    root = Path(tempfile.mkdtemp(prefix=f"{suite}-", dir=work_dir))
    try:
        log.info(
            "building stand-in %s from Debian %s packages (debootstrap)", tag, suite
        )
        run_debootstrap(suite, root, work_dir / f"debootstrap-{suite}.log")
        (root / "usr/local/bin/python").symlink_to("/usr/bin/python3")
        log.info("importing %s into the engine", tag)
        import_root(client, root, tag, suite)
    finally:
        remove_root(root, log)


def check_stand_in_tools() -> None:
    if shutil.which("debootstrap") is None:
        raise EngineUnavailable(
            "debootstrap not found, so the stand-in base image cannot be built "
            "(run `apt-get install debootstrap` as root, or pull the base image "
            "where the registry is reachable and `docker load` it here)"
        )
    if os.geteuid() != 0:
        raise EngineUnavailable(
            "building the stand-in base image needs root for debootstrap "
            "(run `coldstart image` as root, or pull the base image where the "
            "registry is reachable and `docker load` it here)"
        )


def run_debootstrap(suite: str, root: Path, log_path: Path) -> None:
    command = [
        "debootstrap",
        "--variant=minbase",
        f"--include={STAND_IN_PACKAGES}",
        suite,
        str(root),
        DEBIAN_MIRROR,
    ]
    with log_path.open("w") as log_file:
        completed = subprocess.run(
            command, stdout=log_file, stderr=subprocess.STDOUT, check=False
        )
    if completed.returncode != 0:
        lines = log_path.read_text(errors="replace").strip().splitlines()
        cause = lines[-1] if lines else f"exit status {completed.returncode}"
        raise EngineUnavailable(
            f"debootstrap of Debian {suite} failed: {cause} (see {log_path})"
        )


def import_root(client: docker.DockerClient, root: Path, tag: str, suite: str) -> None:
    """Import the directory tree ``root`` as image ``tag``, streamed through tar."""
    repository, _, image_tag = tag.rpartition(":")
    changes = [
        "ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        "ENV LANG=C.UTF-8",
        "ENV PIP_BREAK_SYSTEM_PACKAGES=1",
        f"LABEL {STAND_IN_LABEL}={suite}",
        'CMD ["python3"]',
    ]
    tar = subprocess.Popen(
        ["tar", "--numeric-owner", "-C", str(root), "-c", "."],
        stdout=subprocess.PIPE,
    )
    assert tar.stdout is not None
    try:
        client.api.import_image(
            src=read_chunks(tar.stdout),
            repository=repository,
            tag=image_tag,
            changes=changes,
            stream_src=True,
        )
    finally:
        tar.stdout.close()
        status = tar.wait()
    if status != 0:
        raise EngineUnavailable(f"tar of the {suite} tree failed with status {status}")


def read_chunks(stream: Any, size: int = 1 << 20) -> Iterator[bytes]:
    while chunk := stream.read(size):
        yield chunk


def remove_root(
    root: Path, log: logging.Logger, mounts_file: Path = Path("/proc/self/mounts")
) -> None:
    """Delete the debootstrap tree unless something is still mounted in it.

    debootstrap mounts /proc and /sys inside the tree while it runs, and an
    interrupted run can leave them mounted. Deleting through a mount would
    delete files outside the tree.
    """
    mounts = mount_points_under(root, mounts_file)
    if mounts:
        log.warning(
            "left %s in place because %s is still mounted: unmount it, then delete %s",
            root,
            mounts[0],
            root,
        )
        return
    shutil.rmtree(root)


def mount_points_under(
    root: Path, mounts_file: Path = Path("/proc/self/mounts")
) -> list[str]:
    prefix = str(root.resolve()) + "/"
    try:
        lines = mounts_file.read_text().splitlines()
    except OSError:
        return []
    points = [line.split()[1] for line in lines if len(line.split()) > 1]
    return [point for point in points if point.startswith(prefix)]

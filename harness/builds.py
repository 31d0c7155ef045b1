"""Prepare builds: a wheelhouse on the host, then an image per build.

The wheelhouse contains the SDK's wheel, its dependencies and the scenario's
packages. pip runs on the host because inside a CPU-throttled container it
takes about a minute. The image installs the wheelhouse into the base image
with networking disabled.

Both are cached by content. A wheelhouse is keyed by the spec, the scenario's
packages and the base image's Python version; an image by the base image id,
the Dockerfile and the wheels' hashes. Exact pins (``==``), wheel files, git
commits and directory contents reuse their wheelhouse. Unpinned requirements
(``stripe>=15``) are resolved again on every prepare, and the image is reused
only when the resolution gives the same wheels.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import docker
import docker.errors
from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import parse_wheel_filename

from harness.environment import Environment
from harness.errors import BuildFailed, InvalidInput
from harness.isolated_build import ContainerBuildFailed, build_wheel_in_container
from harness.models import (
    BaseImage,
    BuildSpec,
    PreparedBuild,
    Scenario,
    SpecKind,
    WheelInfo,
)
from harness.results import safe_file_name
from harness.sources import (
    SourceIdentity,
    export_source,
    file_sha256,
    identify_source,
)

logger = logging.getLogger(__name__)

# The engine and base image that build a checkout's wheel in a container.
Isolation = tuple[docker.DockerClient, BaseImage]

IMAGE_REPOSITORY = "coldstart/build"
REQUIREMENTS_FILE = "requirements.txt"
METADATA_FILE = "coldstart-wheelhouse.json"

ANSI_COLOR_PATTERN = re.compile(r"\x1b\[[0-9;]*m")

# pip prints these ERROR lines after the line that names the cause.
GENERIC_PIP_ERRORS = {"Exception:", "Failed to build one or more wheels"}


class StepFailed(Exception):
    """A pip or docker step failed. The message is the output line naming the cause."""


@dataclass(frozen=True)
class Wheelhouse:
    """A complete wheelhouse directory and the SDK wheel in it."""

    path: Path
    sdk_wheel: str
    requirements: tuple[str, ...]


def prepare_build(
    env: Environment,
    spec: BuildSpec,
    scenario: Scenario,
    base: BaseImage,
    *,
    log: logging.Logger = logger,
    build_in_container: bool = False,
) -> PreparedBuild:
    """Build or reuse the wheelhouse and image of ``spec`` on ``base``.

    With ``build_in_container``, a checkout's wheel is built in a container of
    ``base`` with no network instead of on the host. Raises BuildFailed naming
    the build and one line of cause, with the path of the log that contains
    pip's and docker's full output.
    """
    packages = check_packages(scenario)
    identity = identify_source(spec)
    key = hash_json(
        {
            "kind": spec.kind.value,
            "source": identity.fingerprint,
            "packages": list(packages),
            "python": base.python_version,
        }
    )
    log_name = safe_file_name(f"build-{spec.label}-{key[:16]}.log")
    build_log = env.cache_dir / "logs" / log_name
    build_log.parent.mkdir(parents=True, exist_ok=True)
    try:
        isolation = (env.docker, base) if build_in_container else None
        wheelhouse = prepare_wheelhouse(
            env,
            spec,
            identity,
            packages,
            key,
            build_log,
            log,
            target_python(base),
            isolation,
        )
        image, image_key, cached = prepare_image(
            env, spec, wheelhouse, base, build_log, log
        )
    except StepFailed as error:
        raise BuildFailed(spec.label, f"{error} (see {build_log})") from error
    return describe_build(spec, identity, wheelhouse, image, image_key, cached)


def check_packages(scenario: Scenario) -> tuple[str, ...]:
    for package in scenario.packages:
        try:
            Requirement(package)
        except InvalidRequirement as error:
            raise InvalidInput(
                f"invalid package {package!r} in scenario {scenario.name!r}: "
                f"{error} (write a requirement such as 'requests' or 'httpx>=0.27')"
            ) from None
    return tuple(scenario.packages)


def target_python(base: BaseImage) -> str | None:
    """Return the image's Python as ``X.Y`` when it differs from the host's.

    pip then downloads dependencies as binary wheels for that version instead
    of resolving them for the host's interpreter.
    """
    host = f"{sys.version_info.major}.{sys.version_info.minor}"
    image = ".".join(base.python_version.split(".")[:2])
    return None if image == host else image


def download_arguments(python_version: str) -> list[str]:
    """Return ``pip download`` options that pick wheels for another CPython.

    NOTE: pip does not widen a manylinux platform to older glibc versions, so
    every tag is listed. The list assumes an x86_64 image with glibc 2.36 or
    newer (Debian bookworm and trixie).
    """
    platforms = ["manylinux2014_x86_64", "manylinux1_x86_64", "linux_x86_64"]
    platforms += [f"manylinux_2_{minor}_x86_64" for minor in range(5, 37)]
    arguments = ["--only-binary=:all:", "--implementation", "cp"]
    arguments += ["--python-version", python_version]
    for platform in platforms:
        arguments += ["--platform", platform]
    return arguments


def hash_json(data: Any) -> str:
    text = json.dumps(data, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


def prepare_wheelhouse(
    env: Environment,
    spec: BuildSpec,
    identity: SourceIdentity,
    packages: tuple[str, ...],
    key: str,
    build_log: Path,
    log: logging.Logger,
    python_version: str | None = None,
    isolation: Isolation | None = None,
) -> Wheelhouse:
    """Return the wheelhouse for ``key``, building it unless it can be reused.

    ``python_version`` (``X.Y``) targets another Python than the host's.
    """
    root = env.cache_dir / "wheelhouses"
    final = root / key
    if identity.reusable and (final / METADATA_FILE).is_file():
        log.info("build %r: reusing wheelhouse %s", spec.label, final)
        return read_wheelhouse(final)
    log.info("build %r: building wheels with pip", spec.label)
    root.mkdir(parents=True, exist_ok=True)
    build_log.write_text("")
    with tempfile.TemporaryDirectory(prefix=".partial-", dir=root) as scratch:
        partial = Path(scratch) / "wheelhouse"
        build_wheels(
            spec,
            identity,
            packages,
            Path(scratch),
            partial,
            build_log,
            python_version,
            isolation,
        )
        install_wheelhouse(partial, final)
    return read_wheelhouse(final)


def build_wheels(
    spec: BuildSpec,
    identity: SourceIdentity,
    packages: tuple[str, ...],
    scratch: Path,
    wheelhouse: Path,
    build_log: Path,
    python_version: str | None = None,
    isolation: Isolation | None = None,
) -> None:
    """Write the SDK's wheel, its dependencies and ``packages`` to ``wheelhouse``.

    The SDK is built alone first, so its wheel is known for certain. Then pip
    resolves that wheel (with the requirement's extras) and ``packages``
    together: with ``pip wheel`` for the host's Python, or with ``pip
    download`` of binary wheels when ``python_version`` names another.
    NOTE: the SDK's own wheel is still built by the host's Python, which is
    right for pure-Python SDKs only.
    """
    target = export_source(spec, identity, scratch / "source")
    if isolation is not None and Path(target).is_dir():
        sdk_wheel = build_sdk_in_container(
            isolation, Path(target), scratch, build_log, python_version
        )
    else:
        sdk_wheel = build_sdk_on_host(target, scratch, build_log)
    extras = requirement_extras(spec)
    requested = [f"{sdk_wheel}{extras}", *packages]
    if python_version is None:
        run_pip(["--wheel-dir", str(wheelhouse), *requested], build_log)
    else:
        arguments = ["--dest", str(wheelhouse), *download_arguments(python_version)]
        run_pip([*arguments, *requested], build_log, subcommand="download")
    name, version, _, _ = parse_wheel_filename(sdk_wheel.name)
    requirements = [f"{name}{extras}=={version}", *packages]
    (wheelhouse / REQUIREMENTS_FILE).write_text("\n".join(requirements) + "\n")
    metadata = {"sdk_wheel": sdk_wheel.name, "requirements": requirements}
    (wheelhouse / METADATA_FILE).write_text(json.dumps(metadata, indent=2) + "\n")


def build_sdk_on_host(target: str, scratch: Path, build_log: Path) -> Path:
    sdk_dir = scratch / "sdk"
    run_pip(["--no-deps", "--wheel-dir", str(sdk_dir), target], build_log)
    built = sorted(sdk_dir.glob("*.whl"))
    if len(built) != 1:
        raise StepFailed(f"pip built {len(built)} wheels from {target}, expected 1")
    return built[0]


def build_sdk_in_container(
    isolation: Isolation,
    source: Path,
    scratch: Path,
    build_log: Path,
    python_version: str | None,
) -> Path:
    """Build the SDK's wheel in a container of the base image, with no network."""
    client, base = isolation
    options = download_arguments(python_version) if python_version else []

    def download(requirements: list[str], directory: Path) -> None:
        arguments = ["--dest", str(directory), "--only-binary=:all:", *options]
        run_pip([*arguments, *requirements], build_log, subcommand="download")

    try:
        return build_wheel_in_container(client, base, source, scratch, download)
    except ContainerBuildFailed as error:
        raise StepFailed(str(error)) from None


def requirement_extras(spec: BuildSpec) -> str:
    if spec.kind is not SpecKind.REQUIREMENT or spec.requirement is None:
        return ""
    extras = sorted(Requirement(spec.requirement).extras)
    return f"[{','.join(extras)}]" if extras else ""


def run_pip(arguments: list[str], build_log: Path, subcommand: str = "wheel") -> None:
    """Run pip with the host's Python, appending its output to the log."""
    command = [
        sys.executable,
        "-m",
        "pip",
        subcommand,
        "--disable-pip-version-check",
        "--no-input",
        "--progress-bar",
        "off",
        *arguments,
    ]
    completed = subprocess.run(command, capture_output=True, text=True, check=False)
    with build_log.open("a") as log_file:
        log_file.write(f"$ {' '.join(command)}\n{completed.stdout}{completed.stderr}\n")
    if completed.returncode != 0:
        raise StepFailed(find_pip_error(completed.stderr or completed.stdout))


def find_pip_error(output: str) -> str:
    """Return the line of pip's output that names the cause of a failure.

    That is the last ``ERROR:`` line that is not a generic summary, else the
    last line, which after a traceback is the exception.
    """
    lines = [line.strip() for line in output.splitlines() if line.strip()]
    errors = [
        line.removeprefix("ERROR: ")
        for line in lines
        if line.startswith("ERROR: ")
        and line.removeprefix("ERROR: ") not in GENERIC_PIP_ERRORS
    ]
    if errors:
        return errors[-1]
    return lines[-1] if lines else "pip failed without output"


def install_wheelhouse(partial: Path, final: Path) -> None:
    """Move a complete wheelhouse to ``final``, replacing an older one there.

    Both paths are in one directory, so each rename is atomic and an
    interrupted prepare never leaves a half-written wheelhouse at ``final``.
    """
    if final.exists():
        stale = partial.with_name("stale")
        final.rename(stale)
    partial.rename(final)


def read_wheelhouse(path: Path) -> Wheelhouse:
    metadata = json.loads((path / METADATA_FILE).read_text())
    return Wheelhouse(
        path=path,
        sdk_wheel=metadata["sdk_wheel"],
        requirements=tuple(metadata["requirements"]),
    )


def list_wheels(wheelhouse: Wheelhouse) -> tuple[WheelInfo, ...]:
    return tuple(
        WheelInfo(filename=path.name, sha256=file_sha256(path))
        for path in sorted(wheelhouse.path.glob("*.whl"))
    )


def read_dockerfile() -> bytes:
    """Return the measurement Dockerfile shipped as package data."""
    return resources.files("harness").joinpath("data", "Dockerfile").read_bytes()


def prepare_image(
    env: Environment,
    spec: BuildSpec,
    wheelhouse: Wheelhouse,
    base: BaseImage,
    build_log: Path,
    log: logging.Logger,
) -> tuple[Any, str, bool]:
    """Return the build's image, its key and whether it existed already."""
    dockerfile = read_dockerfile()
    key = hash_json(
        {
            "base_image": base.image_id,
            "dockerfile": hashlib.sha256(dockerfile).hexdigest(),
            "wheels": sorted(wheel.sha256 for wheel in list_wheels(wheelhouse)),
            "requirements": list(wheelhouse.requirements),
        }
    )
    tag = image_tag_for(key)
    # Builds of one run are prepared in parallel threads. Two with the same
    # content (two refs of one commit) wait here, so that the second reuses
    # the first's image instead of building another under the same tag.
    # NOTE: two coldstart processes can still build one key twice.
    with image_lock(key):
        try:
            image = env.docker.images.get(tag)
        except docker.errors.ImageNotFound:
            pass
        else:
            log.info("build %r: reusing image %s", spec.label, tag)
            return image, key, True
        log.info("build %r: building image %s on %s", spec.label, tag, base.tag)
        image = build_image(env, dockerfile, wheelhouse, base, key, tag, build_log)
    return image, key, False


_image_locks: dict[str, threading.Lock] = {}
_image_locks_guard = threading.Lock()


def image_lock(key: str) -> threading.Lock:
    """Return the lock of one image key, shared by every thread of the process."""
    with _image_locks_guard:
        return _image_locks.setdefault(key, threading.Lock())


def image_tag_for(key: str) -> str:
    return f"{IMAGE_REPOSITORY}:{key[:16]}"


def build_image(
    env: Environment,
    dockerfile: bytes,
    wheelhouse: Wheelhouse,
    base: BaseImage,
    key: str,
    tag: str,
    build_log: Path,
) -> Any:
    """Run ``docker build`` with networking disabled on a fresh build context."""
    contexts = env.cache_dir / "contexts"
    contexts.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=contexts) as context:
        (Path(context) / "Dockerfile").write_bytes(dockerfile)
        shutil.copytree(
            wheelhouse.path,
            Path(context) / "wheelhouse",
            copy_function=link_or_copy,
            ignore=shutil.ignore_patterns(METADATA_FILE),
        )
        try:
            image, output = env.docker.images.build(
                path=context,
                tag=tag,
                buildargs={"BASE_IMAGE": base.tag, "BUILD_KEY": key},
                rm=True,
                forcerm=True,
                network_mode="none",
            )
        except docker.errors.BuildError as error:
            # build_log is a one-pass iterator over the engine's output.
            chunks = list(error.build_log)
            append_build_output(build_log, chunks)
            remove_partial_images(env.docker, key)
            raise StepFailed(find_build_error(error.msg, chunks)) from error
        except docker.errors.APIError as error:
            raise StepFailed(f"docker build failed: {error.explanation}") from error
    append_build_output(build_log, output)
    return image


def remove_partial_images(client: docker.DockerClient, key: str) -> None:
    """Remove the untagged layers a failed build of ``key`` left behind.

    The engine keeps the images of the steps that succeeded, and every step
    after the LABEL step carries the build key.
    """
    filters = {"dangling": True, "label": f"coldstart.build.key={key}"}
    for image in client.images.list(filters=filters):
        try:
            client.images.remove(image.id)
        except docker.errors.APIError as error:
            logger.warning("could not remove layer %s: %s", image.short_id, error)


def link_or_copy(source: str, destination: str) -> None:
    """Hard-link a wheel into the build context, copying across file systems."""
    try:
        os.link(source, destination)
    except OSError:
        shutil.copy2(source, destination)


def append_build_output(build_log: Path, output: Any) -> None:
    with build_log.open("a") as log_file:
        log_file.write("$ docker build\n")
        for chunk in output:
            log_file.write(
                strip_colors(chunk.get("stream") or chunk.get("error") or "")
            )


def strip_colors(text: str) -> str:
    """Remove the ANSI colour codes the engine puts around a RUN step's stderr."""
    return ANSI_COLOR_PATTERN.sub("", text)


def find_build_error(message: str, chunks: list[dict[str, Any]]) -> str:
    """Return the cause of a failed RUN step: pip's error line, else ``message``.

    ``message`` is the engine's error and ``chunks`` the build output.
    """
    output = strip_colors("".join(chunk.get("stream", "") for chunk in chunks))
    lines = [line.strip() for line in output.splitlines() if line.strip()]
    if any(line.startswith("ERROR: ") for line in lines):
        return find_pip_error(output)
    return str(message).strip().splitlines()[0]


def describe_build(
    spec: BuildSpec,
    identity: SourceIdentity,
    wheelhouse: Wheelhouse,
    image: Any,
    image_key: str,
    cached: bool,
) -> PreparedBuild:
    name, version, _, _ = parse_wheel_filename(wheelhouse.sdk_wheel)
    if spec.kind is SpecKind.REQUIREMENT and spec.requirement is not None:
        distribution = Requirement(spec.requirement).name
    else:
        distribution = str(name)
    return PreparedBuild(
        spec=spec,
        distribution=distribution,
        version=str(version),
        commit=identity.commit,
        wheels=list_wheels(wheelhouse),
        image_tag=image_tag_for(image_key),
        image_id=image.id,
        cache_key=image_key,
        cached=cached,
    )

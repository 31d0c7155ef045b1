"""Tests for base image resolution: local, pulled, or the Debian stand-in."""

from __future__ import annotations

import io
import logging
import re
import tarfile
import time
from pathlib import Path

import docker
import pytest

from harness import baseimage
from harness.baseimage import (
    build_stand_in,
    check_image_reference,
    image_python_version,
    remove_root,
    resolve_base_image,
)
from harness.errors import EngineUnavailable, ExitCode, InvalidInput
from harness.models import BaseImage

TEST_LABELS = {"coldstart.test": "1"}


@pytest.mark.docker
def test_python_311_slim_resolves(base_image: BaseImage) -> None:
    assert base_image.requested == "python:3.11-slim"
    assert base_image.python_version.startswith("3.11.")
    assert base_image.image_id.startswith("sha256:")
    assert base_image.stand_in == (base_image.tag != "python:3.11-slim")


@pytest.mark.docker
def test_stand_in_names_bookworm(
    base_image: BaseImage, docker_client: docker.DockerClient
) -> None:
    if not base_image.stand_in:
        assert base_image.origin in ("local", "pulled")
        return
    assert base_image.tag == "coldstart/stand-in:python3.11-bookworm"
    assert base_image.origin == "stand-in built from Debian bookworm packages"
    labels = docker_client.images.get(base_image.tag).labels
    assert labels["coldstart.stand-in"] == "bookworm"


@pytest.mark.docker
def test_second_resolve_reuses_image(
    base_image: BaseImage, docker_client: docker.DockerClient, cache_dir: Path
) -> None:
    started = time.monotonic()
    again = resolve_base_image(docker_client, "python:3.11-slim", cache_dir=cache_dir)
    elapsed = time.monotonic() - started
    assert again == base_image
    # Building the stand-in takes about 45 s; finding it and running python3
    # takes about 1 s.
    assert elapsed < 10


@pytest.mark.docker
def test_base_image_behaves_like_slim(
    base_image: BaseImage, docker_client: docker.DockerClient
) -> None:
    code = "import os, sys; print(sys.version_info[:2], os.environ.get('LANG'))"
    output = docker_client.containers.run(
        base_image.tag,
        ["python", "-c", code],
        network_disabled=True,
        remove=True,
        labels=TEST_LABELS,
    )
    assert output.decode().strip() == "(3, 11) C.UTF-8"


@pytest.mark.docker
def test_image_python_version_matches(
    base_image: BaseImage, docker_client: docker.DockerClient
) -> None:
    version = image_python_version(docker_client, base_image.tag)
    assert version == base_image.python_version
    assert re.fullmatch(r"3\.11\.\d+", version)


@pytest.mark.docker
def test_unknown_image_raises(docker_client: docker.DockerClient) -> None:
    with pytest.raises(EngineUnavailable) as caught:
        resolve_base_image(docker_client, "coldstart-test/no-such-image:1")
    # The middle part is the engine's pull error, which names this host's DNS.
    assert re.fullmatch(
        r"base image 'coldstart-test/no-such-image:1' is not on the engine and "
        r"the pull failed: (\S.*) \(pull it where the registry is reachable and "
        r"`docker load` it here, or pass --image with a local image\)",
        str(caught.value),
    )
    assert caught.value.exit_code is ExitCode.ENGINE_UNAVAILABLE


@pytest.mark.docker
def test_unknown_image_without_stand_in(docker_client: docker.DockerClient) -> None:
    with pytest.raises(EngineUnavailable) as caught:
        resolve_base_image(docker_client, "python:3.12-slim-coldstart-test")
    assert "base image 'python:3.12-slim-coldstart-test' is not on the engine" in str(
        caught.value
    )


@pytest.fixture
def image_without_python(docker_client: docker.DockerClient):
    """A one-file image with no python3, removed after the test."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as archive:
        content = b"no python here\n"
        member = tarfile.TarInfo("README")
        member.size = len(content)
        archive.addfile(member, io.BytesIO(content))
    tag = "coldstart-test/no-python:1"
    docker_client.api.import_image_from_data(
        buffer.getvalue(), repository="coldstart-test/no-python", tag="1"
    )
    yield tag
    docker_client.images.remove(tag, force=True)


@pytest.mark.docker
def test_local_image_without_python_raises(
    docker_client: docker.DockerClient, image_without_python: str
) -> None:
    before = docker_client.containers.list(all=True, filters={"label": "coldstart"})
    with pytest.raises(EngineUnavailable) as caught:
        resolve_base_image(docker_client, image_without_python)
    message = str(caught.value)
    assert message.startswith(
        "cannot run python3 in base image 'coldstart-test/no-python:1': "
    )
    assert "executable file not found" in message
    assert message.endswith("(use an image that has python3 on its PATH)")
    after = docker_client.containers.list(all=True, filters={"label": "coldstart"})
    assert len(after) == len(before)


def test_stand_in_without_debootstrap(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(baseimage.shutil, "which", lambda name: None)
    with pytest.raises(EngineUnavailable) as caught:
        build_stand_in(None, "bookworm", "coldstart-test/stand-in:1")  # type: ignore[arg-type]
    assert str(caught.value) == (
        "debootstrap not found, so the stand-in base image cannot be built (run "
        "`apt-get install debootstrap` as root, or pull the base image where the "
        "registry is reachable and `docker load` it here)"
    )


def test_stand_in_needs_root(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(baseimage.shutil, "which", lambda name: "/usr/sbin/" + name)
    monkeypatch.setattr(baseimage.os, "geteuid", lambda: 1000)
    with pytest.raises(EngineUnavailable) as caught:
        build_stand_in(None, "bookworm", "coldstart-test/stand-in:1")  # type: ignore[arg-type]
    assert str(caught.value) == (
        "building the stand-in base image needs root for debootstrap (run "
        "`coldstart image` as root, or pull the base image where the registry is "
        "reachable and `docker load` it here)"
    )


def test_tree_with_mount_is_kept(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    root = tmp_path / "bookworm-root"
    (root / "proc").mkdir(parents=True)
    mounts = tmp_path / "mounts"
    mounts.write_text(f"sysfs /sys sysfs rw 0 0\nproc {root}/proc proc rw,nosuid 0 0\n")
    with caplog.at_level(logging.WARNING):
        remove_root(root, logging.getLogger("test"), mounts)
    assert root.is_dir()
    assert f"{root}/proc is still mounted" in caplog.text


def test_tree_without_mount_is_removed(tmp_path: Path) -> None:
    root = tmp_path / "bookworm-root"
    (root / "usr" / "bin").mkdir(parents=True)
    mounts = tmp_path / "mounts"
    mounts.write_text(f"proc /proc proc rw 0 0\nproc {root}-other/proc proc rw 0 0\n")
    remove_root(root, logging.getLogger("test"), mounts)
    assert not root.exists()


@pytest.mark.docker
def test_stand_in_requested_by_tag(
    base_image: BaseImage, docker_client: docker.DockerClient
) -> None:
    if not base_image.stand_in:
        assert base_image.origin in ("local", "pulled")
        return
    direct = resolve_base_image(docker_client, base_image.tag)
    assert direct.stand_in is True
    assert direct.tag == base_image.tag
    assert direct.origin == "stand-in built from Debian bookworm packages"


@pytest.mark.parametrize(
    "reference",
    [
        "python:3.11-slim",
        "coldstart/stand-in:python3.11-bookworm",
        "localhost:5000/team/python:3.12",
        "python@sha256:" + "a" * 64,
    ],
)
def test_image_reference_accepts_valid(reference):
    check_image_reference(reference)


@pytest.mark.parametrize("reference", ["bad image", "Python:3.11", "", "python:"])
def test_image_reference_rejects_invalid(reference):
    with pytest.raises(InvalidInput) as caught:
        check_image_reference(reference)
    assert str(caught.value) == (
        f"invalid --image {reference!r}: not a valid image reference "
        "(for example python:3.11-slim)"
    )

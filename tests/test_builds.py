"""Tests for preparing builds: wheelhouses and images on the real engine."""

from __future__ import annotations

import contextlib
import logging
import re
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import docker
import docker.errors
import pytest
from packaging.requirements import Requirement

from harness.builds import (
    find_build_error,
    find_pip_error,
    install_wheelhouse,
    prepare_build,
)
from harness.environment import Environment
from harness.errors import BuildFailed, ExitCode
from harness.models import BaseImage, BuildSpec, Phase, PreparedBuild, Scenario
from harness.sources import hash_tree, is_exact_pin, list_source_files
from harness.specs import parse_spec

TEST_LABELS = {"coldstart.test": "1"}

SCENARIO = Scenario(
    name="tinysdk-import",
    description="import the test SDK",
    phases=(Phase(name="import", code="import tinysdk", budget="init"),),
    budgets={"init": 10.0},
)

PYPROJECT = """\
[build-system]
requires = ["setuptools>=61"]
build-backend = "setuptools.build_meta"

[project]
name = "tinysdk"
version = "{version}"
"""


@dataclass(frozen=True)
class SdkRepository:
    """A git checkout of the test SDK: ``v1`` and the branch ``feature/two``."""

    path: Path
    first: str
    second: str


def write_sdk(path: Path, version: str) -> None:
    (path / "tinysdk").mkdir(parents=True, exist_ok=True)
    (path / "pyproject.toml").write_text(PYPROJECT.format(version=version))
    (path / "tinysdk" / "__init__.py").write_text(f'__version__ = "{version}"\n')


@pytest.fixture(scope="module")
def sdk_repository(tmp_path_factory: pytest.TempPathFactory, git) -> SdkRepository:
    path = tmp_path_factory.mktemp("repositories") / "tinysdk"
    path.mkdir()
    git(path, "init", "--quiet", "--initial-branch=main")
    (path / ".gitignore").write_text("build/\n*.egg-info/\n")
    write_sdk(path, "1.0")
    git(path, "add", ".")
    git(path, "commit", "--quiet", "-m", "Release 1.0")
    git(path, "tag", "v1")
    git(path, "checkout", "--quiet", "-b", "feature/two")
    write_sdk(path, "2.0")
    git(path, "commit", "--quiet", "-am", "Release 2.0")
    return SdkRepository(
        path=path,
        first=git(path, "rev-parse", "v1"),
        second=git(path, "rev-parse", "HEAD"),
    )


def prepare_timed(
    env: Environment, spec: BuildSpec, scenario: Scenario, base: BaseImage
) -> tuple[PreparedBuild, float]:
    started = time.monotonic()
    build = prepare_build(env, spec, scenario, base)
    return build, time.monotonic() - started


@pytest.fixture(scope="module")
def created_images(docker_client: docker.DockerClient) -> Iterator[list[str]]:
    """Tags of images built from test SDKs, removed when the module ends."""
    tags: list[str] = []
    yield tags
    for tag in set(tags):
        with contextlib.suppress(docker.errors.ImageNotFound):
            docker_client.images.remove(tag)


@pytest.fixture(scope="module")
def git_builds(
    env: Environment,
    base_image: BaseImage,
    sdk_repository: SdkRepository,
    created_images: list[str],
) -> dict[str, tuple[PreparedBuild, float]]:
    builds = {}
    for label, ref in [("first", "v1"), ("second", "feature/two")]:
        spec = parse_spec(label, f"{sdk_repository.path}@{ref}")
        builds[label] = prepare_timed(env, spec, SCENARIO, base_image)
        created_images.append(builds[label][0].image_tag)
    return builds


def import_in_container(client: docker.DockerClient, image: str) -> str:
    code = "import tinysdk; print(tinysdk.__version__)"
    output = client.containers.run(
        image,
        ["python3", "-c", code],
        network_disabled=True,
        remove=True,
        labels=TEST_LABELS,
    )
    return bytes(output).decode().strip()


@pytest.mark.docker
def test_git_refs_record_commits(
    git_builds: dict[str, tuple[PreparedBuild, float]], sdk_repository: SdkRepository
) -> None:
    first, _ = git_builds["first"]
    second, _ = git_builds["second"]
    assert first.commit == sdk_repository.first
    assert second.commit == sdk_repository.second
    assert first.distribution == "tinysdk"
    assert first.version == "1.0"
    assert second.version == "2.0"
    assert [wheel.filename for wheel in first.wheels] == [
        "tinysdk-1.0-py3-none-any.whl"
    ]


@pytest.mark.docker
def test_git_refs_give_two_images(
    git_builds: dict[str, tuple[PreparedBuild, float]],
    docker_client: docker.DockerClient,
) -> None:
    first, _ = git_builds["first"]
    second, _ = git_builds["second"]
    assert first.image_id != second.image_id
    assert first.cached is False
    assert re.fullmatch(r"coldstart/build:[0-9a-f]{16}", first.image_tag)
    assert first.image_tag == f"coldstart/build:{first.cache_key[:16]}"
    labels = docker_client.images.get(first.image_tag).labels
    assert labels["coldstart.build.key"] == first.cache_key
    assert labels["coldstart"] == "1"


@pytest.mark.docker
def test_git_ref_images_import_sdk(
    git_builds: dict[str, tuple[PreparedBuild, float]],
    docker_client: docker.DockerClient,
) -> None:
    assert import_in_container(docker_client, git_builds["first"][0].image_tag) == "1.0"
    assert (
        import_in_container(docker_client, git_builds["second"][0].image_tag) == "2.0"
    )


@pytest.mark.docker
def test_second_prepare_is_cached(
    env: Environment,
    base_image: BaseImage,
    sdk_repository: SdkRepository,
    git_builds: dict[str, tuple[PreparedBuild, float]],
) -> None:
    first, first_elapsed = git_builds["first"]
    spec = parse_spec("first", f"{sdk_repository.path}@v1")
    again, elapsed = prepare_timed(env, spec, SCENARIO, base_image)
    assert again.cached is True
    assert again.image_id == first.image_id
    assert again.wheels == first.wheels
    assert again.commit == first.commit
    assert elapsed < 2.0
    assert elapsed < first_elapsed / 5


@pytest.mark.docker
def test_wheel_file_reuses_image(
    env: Environment,
    base_image: BaseImage,
    git_builds: dict[str, tuple[PreparedBuild, float]],
    tmp_path: Path,
) -> None:
    first, _ = git_builds["first"]
    [built] = (env.cache_dir / "wheelhouses").glob("*/tinysdk-1.0-py3-none-any.whl")
    shutil.copy(built, tmp_path)
    spec = parse_spec("wheel", str(tmp_path / built.name))
    build = prepare_build(env, spec, SCENARIO, base_image)
    assert build.version == "1.0"
    assert build.commit is None
    assert build.image_id == first.image_id
    assert build.cached is True


@pytest.mark.docker
def test_directory_records_dirty_commit(
    env: Environment,
    base_image: BaseImage,
    sdk_repository: SdkRepository,
    created_images: list[str],
    docker_client: docker.DockerClient,
    tmp_path: Path,
    git,
) -> None:
    checkout = tmp_path / "checkout"
    git(tmp_path, "clone", "--quiet", str(sdk_repository.path), str(checkout))
    spec = parse_spec("local", str(checkout))
    clean = prepare_build(env, spec, SCENARIO, base_image)
    created_images.append(clean.image_tag)
    (checkout / "tinysdk" / "__init__.py").write_text('__version__ = "2.0-local"\n')
    dirty = prepare_build(env, spec, SCENARIO, base_image)
    created_images.append(dirty.image_tag)
    assert clean.commit == sdk_repository.second
    assert dirty.commit == f"{sdk_repository.second}-dirty"
    assert dirty.image_id != clean.image_id
    assert import_in_container(docker_client, dirty.image_tag) == "2.0-local"
    assert git(checkout, "status", "--porcelain", "--ignored") == (
        "M tinysdk/__init__.py"
    )


@pytest.mark.docker
def test_missing_requirement_fails(env: Environment, base_image: BaseImage) -> None:
    spec = parse_spec("missing", "coldstart-no-such-package-zzz==1.0")
    with pytest.raises(BuildFailed) as caught:
        prepare_build(env, spec, SCENARIO, base_image)
    match = re.fullmatch(
        r"build 'missing' failed: No matching distribution found for "
        r"coldstart-no-such-package-zzz==1\.0 \(see (/\S+\.log)\)",
        str(caught.value),
    )
    assert match is not None, str(caught.value)
    assert caught.value.label == "missing"
    assert caught.value.exit_code is ExitCode.INVALID_INPUT
    log_text = Path(match.group(1)).read_text()
    assert "Could not find a version that satisfies the requirement" in log_text


@pytest.mark.docker
def test_broken_pyproject_fails(
    env: Environment, base_image: BaseImage, tmp_path: Path
) -> None:
    (tmp_path / "pyproject.toml").write_text('[project\nname = "broken"\n')
    spec = parse_spec("broken", str(tmp_path))
    with pytest.raises(BuildFailed) as caught:
        prepare_build(env, spec, SCENARIO, base_image)
    message = str(caught.value)
    assert message.startswith("build 'broken' failed: ")
    assert "Expected ']' at the end of a table declaration" in message
    assert re.search(r" \(see /\S+\.log\)$", message)
    assert not list((env.cache_dir / "wheelhouses").glob(".partial-*"))


def list_build_layers(client: docker.DockerClient) -> set[str]:
    """Return the ids of untagged layers that builds left behind."""
    filters = {"dangling": True, "label": "coldstart.build.key"}
    return {image.id for image in client.images.list(filters=filters)}


@pytest.mark.docker
def test_image_build_failure_names_pip_error(
    base_image: BaseImage,
    docker_client: docker.DockerClient,
    sdk_repository: SdkRepository,
    created_images: list[str],
    tmp_path: Path,
) -> None:
    """A wheel missing from the wheelhouse fails the RUN step inside docker build."""
    env = Environment(cache_dir=tmp_path, docker_factory=lambda: docker_client)
    scenario = replace(SCENARIO, packages=("six==1.17.0",))
    spec = parse_spec("tampered", f"{sdk_repository.path}@v1")
    build = prepare_build(env, spec, scenario, base_image)
    created_images.append(build.image_tag)
    [six_wheel] = (tmp_path / "wheelhouses").glob("*/six-1.17.0-*.whl")
    six_wheel.unlink()
    layers_before = list_build_layers(docker_client)
    with pytest.raises(BuildFailed) as caught:
        prepare_build(env, spec, scenario, base_image)
    assert re.fullmatch(
        r"build 'tampered' failed: No matching distribution found for six==1\.17\.0"
        r" \(see /\S+\.log\)",
        str(caught.value),
    ), str(caught.value)
    assert list_build_layers(docker_client) <= layers_before


@pytest.mark.docker
def test_unpinned_requirement_resolved_again(
    env: Environment,
    base_image: BaseImage,
    docker_client: docker.DockerClient,
    created_images: list[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    scenario = replace(SCENARIO, phases=(Phase("import", "import six", "init"),))
    spec = parse_spec("unpinned", "six>=1.16")
    with caplog.at_level(logging.INFO, logger="harness.builds"):
        first = prepare_build(env, spec, scenario, base_image)
        second = prepare_build(env, spec, scenario, base_image)
    created_images.append(first.image_tag)
    pip_runs = [r for r in caplog.records if "building wheels with pip" in r.message]
    assert len(pip_runs) == 2
    assert second.cached is True
    assert second.image_id == first.image_id


@pytest.mark.docker
def test_stripe_with_requests(env: Environment, base_image: BaseImage) -> None:
    scenario = replace(SCENARIO, packages=("requests",))
    spec = parse_spec("baseline", "stripe==15.3.0")
    build = prepare_build(env, spec, scenario, base_image)
    filenames = [wheel.filename for wheel in build.wheels]
    assert build.distribution == "stripe"
    assert build.version == "15.3.0"
    assert build.commit is None
    assert "stripe-15.3.0-py3-none-any.whl" in filenames
    assert any(name.startswith("requests-") for name in filenames)
    assert all(re.fullmatch(r"[0-9a-f]{64}", wheel.sha256) for wheel in build.wheels)


def test_pip_error_prefers_cause() -> None:
    output = (
        "ERROR: Could not find a version that satisfies the requirement x==9\n"
        "ERROR: No matching distribution found for x==9\n"
    )
    assert find_pip_error(output) == "No matching distribution found for x==9"


def test_pip_error_after_traceback() -> None:
    output = (
        "ERROR: Exception:\nTraceback (most recent call last):\n"
        '  File "x.py", line 1, in <module>\n'
        "tomllib.TOMLDecodeError: Expected ']' (at line 1, column 9)\n"
    )
    assert find_pip_error(output) == (
        "tomllib.TOMLDecodeError: Expected ']' (at line 1, column 9)"
    )


def test_pip_error_skips_summary() -> None:
    output = (
        "ERROR: Failed building wheel for tinysdk\n"
        "Failed to build tinysdk\n"
        "ERROR: Failed to build one or more wheels\n"
    )
    assert find_pip_error(output) == "Failed building wheel for tinysdk"


def test_build_error_without_pip_line() -> None:
    message = "The command '/bin/sh -c python3 -m pip' returned a non-zero code: 127"
    chunks = [
        {"stream": "Step 5/5 : RUN python3 -m pip\n"},
        {"stream": "sh: 1: python3: not found\n"},
    ]
    assert find_build_error(message, chunks) == message


def test_build_error_colored_pip_line() -> None:
    chunks = [
        {"stream": "Processing /tmp/wheelhouse/tinysdk-1.0-py3-none-any.whl\n"},
        {"stream": "\x1b[91mERROR: No matching distribution found for six==1\n"},
        {"stream": "\x1b[0mRemoving intermediate container 1a6e38faecff\n"},
    ]
    cause = find_build_error("returned a non-zero code: 1", chunks)
    assert cause == "No matching distribution found for six==1"


@pytest.mark.parametrize(
    ("text", "pinned"),
    [
        ("stripe==15.3.0", True),
        ("stripe===15.3.0", True),
        ("stripe[async]==15.3.0", True),
        ("stripe==15.*", False),
        ("stripe>=15", False),
        ("stripe>=15,<16", False),
        ("stripe", False),
        ("stripe @ https://example.invalid/stripe-15.3.0.whl", False),
    ],
)
def test_exact_pin(text: str, pinned: bool) -> None:
    assert is_exact_pin(Requirement(text)) is pinned


def test_source_files_follow_gitignore(tmp_path: Path, git) -> None:
    git(tmp_path, "init", "--quiet")
    write_sdk(tmp_path, "1.0")
    (tmp_path / ".gitignore").write_text("build/\n")
    (tmp_path / "build").mkdir()
    (tmp_path / "build" / "junk.py").write_text("")
    git(tmp_path, "add", "pyproject.toml")
    files = list_source_files(tmp_path)
    assert files == (".gitignore", "pyproject.toml", "tinysdk/__init__.py")


def test_source_files_outside_git(tmp_path: Path) -> None:
    write_sdk(tmp_path, "1.0")
    (tmp_path / "tinysdk.egg-info").mkdir()
    (tmp_path / "tinysdk.egg-info" / "PKG-INFO").write_text("")
    (tmp_path / ".venv" / "bin").mkdir(parents=True)
    (tmp_path / ".venv" / "bin" / "python").write_text("")
    assert list_source_files(tmp_path) == ("pyproject.toml", "tinysdk/__init__.py")


def test_tree_hash_follows_content(tmp_path: Path) -> None:
    write_sdk(tmp_path, "1.0")
    files = list_source_files(tmp_path)
    before = hash_tree(tmp_path, files)
    assert hash_tree(tmp_path, files) == before
    write_sdk(tmp_path, "1.1")
    assert hash_tree(tmp_path, files) != before


def test_wheelhouse_replaced_whole(tmp_path: Path) -> None:
    final = tmp_path / "key"
    final.mkdir()
    (final / "old-1.0-py3-none-any.whl").write_text("old")
    scratch = tmp_path / ".partial-1"
    partial = scratch / "wheelhouse"
    partial.mkdir(parents=True)
    (partial / "new-1.0-py3-none-any.whl").write_text("new")
    install_wheelhouse(partial, final)
    assert sorted(path.name for path in final.iterdir()) == ["new-1.0-py3-none-any.whl"]
    assert not partial.exists()


def test_same_image_key_built_once(monkeypatch: pytest.MonkeyPatch) -> None:
    import threading
    import time
    from types import SimpleNamespace

    from harness import builds

    built: list[str] = []
    images: dict[str, str] = {}

    def get(tag: str) -> str:
        if tag not in images:
            raise docker.errors.ImageNotFound(tag)
        return images[tag]

    def build(env, dockerfile, wheelhouse, base, key, tag, build_log):
        time.sleep(0.2)
        built.append(tag)
        images[tag] = f"image {len(built)}"
        return images[tag]

    monkeypatch.setattr(builds, "build_image", build)
    monkeypatch.setattr(builds, "list_wheels", lambda wheelhouse: ())
    env = SimpleNamespace(docker=SimpleNamespace(images=SimpleNamespace(get=get)))
    wheelhouse = SimpleNamespace(requirements=("fastsdk==1",))
    base = SimpleNamespace(image_id="sha256:" + "0" * 64, tag="python:3.11-slim")
    results: dict[str, tuple] = {}

    def prepare(label: str) -> None:
        spec = SimpleNamespace(label=label)
        results[label] = builds.prepare_image(
            env, spec, wheelhouse, base, Path("/dev/null"), builds.logger
        )

    threads = [threading.Thread(target=prepare, args=(x,)) for x in ("a", "b")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(built) == 1
    assert results["a"][0] == results["b"][0] == "image 1"
    assert sorted(result[2] for result in results.values()) == [False, True]

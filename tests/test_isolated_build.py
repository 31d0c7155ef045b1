"""Building a checkout's wheel in a container instead of on the host."""

from __future__ import annotations

import os
import uuid
import zipfile
from pathlib import Path

import pytest

from harness.builds import prepare_build
from harness.environment import Environment
from harness.errors import BuildFailed
from harness.isolated_build import LEGACY_BUILD_REQUIRES, read_build_requires
from harness.models import BaseImage, Phase, Scenario
from harness.specs import parse_spec

SCENARIO = Scenario(
    name="isolated-import",
    description="import the test SDK",
    phases=(Phase(name="import", code="import isolatedsdk", budget="init"),),
    budgets={"init": 10.0},
)

# setup.py records where it ran into the wheel, and tries to leave a file on
# the host: a build on the host would create it, a build in a container not.
SETUP_PY = """\
import os
from setuptools import setup

with open(os.path.join("isolatedsdk", "_build_info.py"), "w") as info:
    info.write(f"UID = {{os.getuid()}}\\n")
    info.write(f"INTERFACES = {{sorted(os.listdir('/sys/class/net'))}}\\n")
try:
    with open({marker!r}, "w") as escape:
        escape.write("the build backend wrote to the host")
except OSError:
    pass
setup(name="isolatedsdk", version="{version}", packages=["isolatedsdk"])
"""

PYPROJECT = """\
[build-system]
requires = ["setuptools>=61"]
build-backend = "setuptools.build_meta"
"""


def write_checkout(path: Path, marker: Path, version: str = "1.0") -> Path:
    (path / "isolatedsdk").mkdir(parents=True)
    (path / "isolatedsdk" / "__init__.py").write_text("")
    (path / "pyproject.toml").write_text(PYPROJECT)
    setup = SETUP_PY.format(marker=str(marker), version=version)
    (path / "setup.py").write_text(setup)
    return path


def read_build_info(wheel: Path) -> dict:
    with zipfile.ZipFile(wheel) as archive:
        source = archive.read("isolatedsdk/_build_info.py").decode()
    values: dict = {}
    exec(source, values)
    return values


def test_build_requires_default_to_legacy(tmp_path: Path):
    assert read_build_requires(tmp_path) == LEGACY_BUILD_REQUIRES


def test_build_requires_read_from_pyproject(tmp_path: Path):
    (tmp_path / "pyproject.toml").write_text(PYPROJECT)
    assert read_build_requires(tmp_path) == ["setuptools>=61"]


@pytest.mark.docker
def test_container_build_keeps_backend_off_host(
    env: Environment, base_image: BaseImage, tmp_path: Path
):
    marker = tmp_path / f"escaped-{uuid.uuid4().hex}"
    checkout = write_checkout(tmp_path / "sdk", marker)
    spec = parse_spec("isolated", str(checkout))
    build = prepare_build(env, spec, SCENARIO, base_image, build_in_container=True)
    assert not marker.exists()
    assert build.version == "1.0"
    wheelhouse = env.cache_dir / "wheelhouses"
    (wheel,) = wheelhouse.glob("*/isolatedsdk-1.0-*.whl")
    info = read_build_info(wheel)
    assert info["UID"] == 65534
    assert info["INTERFACES"] == ["lo"]
    assert os.getuid() != 65534


@pytest.mark.docker
def test_container_build_failure_names_pip_error(
    env: Environment, base_image: BaseImage, tmp_path: Path
):
    checkout = write_checkout(tmp_path / "broken", tmp_path / "unused", "2.0")
    (checkout / "setup.py").write_text("raise SystemExit('setup.py refuses')\n")
    spec = parse_spec("broken", str(checkout))
    with pytest.raises(BuildFailed) as caught:
        prepare_build(env, spec, SCENARIO, base_image, build_in_container=True)
    message = str(caught.value)
    assert message.startswith("build 'broken' failed: building the wheel in a ")
    assert "(see " in message

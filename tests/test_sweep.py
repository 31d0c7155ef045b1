"""Sweep: axes, cells, and real sweeps over CPU share and bytecode state."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import docker
import docker.errors
import pytest
from images import TEST_LABELS, build_test_image

from harness.environment import Environment
from harness.errors import InvalidInput
from harness.models import (
    BaseImage,
    BuildSpec,
    Limits,
    Phase,
    PreparedBuild,
    Scenario,
    SpecKind,
)
from harness.sweep import SweepRequest, run_sweep
from harness.sweep_axes import (
    SweepAxis,
    configure_cell,
    expand_cells,
    parse_choice_axis,
    parse_cpus_axis,
    parse_env_axis,
    parse_memory_axis,
    parse_packages_axis,
)

SCENARIO = Scenario(
    name="tiny",
    description="",
    phases=(Phase("import sdk", "import sdk", "init"),),
    budgets={"init": 10.0},
    packages=("requests",),
    env={"KEEP": "1"},
)


def test_cpus_axis_values():
    assert parse_cpus_axis("0.1,0.25, 1.0").values == ("0.1", "0.25", "1.0")


@pytest.mark.parametrize("text", ["0", "fast", "0.1,", "100"])
def test_cpus_axis_rejects(text):
    with pytest.raises(InvalidInput, match="invalid --cpus value"):
        parse_cpus_axis(text)


def test_memory_axis_accepts_none():
    assert parse_memory_axis("none,128m").values == ("none", "128m")


def test_memory_axis_rejects_unit():
    with pytest.raises(InvalidInput, match="invalid --memory '12x'"):
        parse_memory_axis("none,12x")


def test_env_axis_with_unset():
    axis = parse_env_axis("STRIPE_PYTHON_EAGER_IMPORT=,1")
    assert axis.variable == "STRIPE_PYTHON_EAGER_IMPORT"
    assert axis.values == ("", "1")
    assert axis.name == "STRIPE_PYTHON_EAGER_IMPORT"


@pytest.mark.parametrize("text", ["NOVALUES", "1BAD=1", "=1"])
def test_env_axis_rejects(text):
    with pytest.raises(InvalidInput, match="invalid --env"):
        parse_env_axis(text)


def test_repeated_value_rejected():
    with pytest.raises(InvalidInput, match="a value is listed twice"):
        parse_cpus_axis("0.1,0.1")


def test_packages_axis_rejects_bad_requirement():
    with pytest.raises(InvalidInput, match="invalid --packages value 'not valid!'"):
        parse_packages_axis("none,not valid!")


def test_choice_axis_rejects_unknown():
    with pytest.raises(InvalidInput, match="invalid --bytecode value 'stale'"):
        parse_choice_axis("bytecode", "compiled,stale", ("compiled", "none"))


def test_cells_are_the_product():
    axes = [SweepAxis("cpus", ("0.1", "0.5")), parse_env_axis("X=,1")]
    cells = expand_cells(axes)
    assert [cell.label for cell in cells] == [
        "cpus=0.1 X=unset",
        "cpus=0.1 X=1",
        "cpus=0.5 X=unset",
        "cpus=0.5 X=1",
    ]
    assert cells[0].cell_id == "cell-01"


def test_configure_cell_applies_settings():
    axes = [
        SweepAxis("cpus", ("0.25",)),
        SweepAxis("memory", ("128m",)),
        parse_env_axis("KEEP="),
        parse_packages_axis("httpx+aiohttp"),
        SweepAxis("image", ("python:3.13-slim",)),
        SweepAxis("bytecode", ("none",)),
        SweepAxis("page-cache", ("dropped",)),
    ]
    (cell,) = expand_cells(axes)
    config = configure_cell(cell, SCENARIO, Limits(), "python:3.11-slim")
    assert config.limits.cpus == 0.25
    assert config.limits.memory_bytes == 128 * 1024**2
    assert "KEEP" not in config.scenario.env
    assert config.scenario.env["PYTHONDONTWRITEBYTECODE"] == "1"
    assert config.scenario.packages == ("httpx", "aiohttp")
    assert config.image == "python:3.13-slim"
    assert config.bytecode == "none"
    assert config.page_cache == "dropped"


def test_configure_cell_packages_none_and_env_set():
    axes = [parse_packages_axis("none"), parse_env_axis("NEW=1")]
    (cell,) = expand_cells(axes)
    config = configure_cell(cell, SCENARIO, Limits(), "python:3.11-slim")
    assert config.scenario.packages == ()
    assert config.scenario.env == {"KEEP": "1", "NEW": "1"}
    assert config.bytecode == "compiled"
    assert config.page_cache == "warm"


# A CPU-bound import: about 0.15 s of CPU on this host's cores.
BURNER = "total = 0\nfor i in range(1_500_000):\n    total += i * i\n"


def many_modules(count: int) -> dict[str, str]:
    """An SDK of ``count`` small modules, each with code to compile."""
    body = "".join(
        f"def function_{n}(value):\n    return [value * {n} for _ in range(3)]\n"
        for n in range(40)
    )
    modules = {f"sdk/m{n:03d}.py": body for n in range(count)}
    imports = "".join(f"from sdk import m{n:03d}\n" for n in range(count))
    modules["sdk/__init__.py"] = imports
    return modules


def fixed_preparer(build: PreparedBuild):
    def prepare(env, spec: BuildSpec, scenario: Scenario, base: BaseImage):
        return replace(build, spec=spec)

    return prepare


def sweep_request(tmp_path: Path, axes: list[SweepAxis], iterations: int = 2):
    return SweepRequest(
        specs=(BuildSpec(label="sdk", kind=SpecKind.REQUIREMENT, raw="sdk"),),
        scenario=Scenario(
            name="tiny",
            description="",
            phases=(Phase("import sdk", "import sdk", "init"),),
            budgets={"init": 30.0},
        ),
        axes=tuple(axes),
        limits=Limits(cpus=0.5, timeout_s=60),
        image="python:3.11-slim",
        iterations=iterations,
        results_root=tmp_path,
        seed=1,
        labels=TEST_LABELS,
    )


def medians(matrix: dict, metric: str = "median_s") -> list[float]:
    return [cell["phases"]["import sdk"]["sdk"][metric] for cell in matrix["cells"]]


@pytest.mark.docker
def test_sweep_cpu_share_speeds_up(
    env: Environment, docker_client: docker.DockerClient, tmp_path: Path
):
    build = build_test_image(docker_client, "burner-sdk", {"sdk.py": BURNER})
    request = sweep_request(tmp_path, [parse_cpus_axis("0.1,0.5")])
    sweep_dir, matrix = run_sweep(env, request, fixed_preparer(build))
    slow, fast = medians(matrix)
    # Five times the CPU share: the same CPU work takes far less wall time.
    # The bound leaves room for a loaded host, where the 0.5 cell competes
    # with other containers for the two cores.
    assert slow > 1.5 * fast
    cells = sorted(p.name for p in (sweep_dir / "cells").iterdir() if p.is_dir())
    assert cells == ["cell-01", "cell-02"]
    manifest = json.loads((sweep_dir / "cells/cell-01/manifest.json").read_text())
    assert manifest["limits"]["cpus"] == 0.1
    assert manifest["sweep_cell"]["settings"] == {"cpus": "0.1"}
    assert manifest["run_id"] == f"{sweep_dir.name}-cell-01"
    assert len((sweep_dir / "cells/cell-02/raw.jsonl").read_text().splitlines()) == 2
    text = (sweep_dir / "sweep.md").read_text()
    assert (
        "| cell-01 | 0.1 | warm | coldstart/stand-in:python3.11-bookworm (Python 3.11"
        in text
    )
    assert "](sweep.png)" in text
    assert (sweep_dir / "sweep.png").read_bytes().startswith(b"\x89PNG")


@pytest.mark.docker
def test_sweep_without_bytecode_is_slower(
    env: Environment, docker_client: docker.DockerClient, tmp_path: Path
):
    build = build_test_image(docker_client, "many-modules-sdk", many_modules(150))
    request = sweep_request(
        tmp_path, [parse_choice_axis("bytecode", "compiled,none", ("compiled", "none"))]
    )
    try:
        _, matrix = run_sweep(env, request, fixed_preparer(build))
    finally:
        remove_no_pyc_images(docker_client)
    compiled, none = medians(matrix, "cpu_median_s")
    # Compiling 150 modules at every import costs several times the load.
    assert none > 2 * compiled
    assert matrix["cells"][1]["bytecode"] == "none"


def remove_no_pyc_images(client: docker.DockerClient) -> None:
    for image in client.images.list(filters={"label": "coldstart.test=1"}):
        for tag in image.tags:
            if tag.endswith("-no-pyc"):
                client.images.remove(tag, force=True)

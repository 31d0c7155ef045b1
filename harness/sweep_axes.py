"""Axes of ``coldstart sweep`` and the cells of their product.

An axis is one setting with a list of values, for example ``cpus`` with
``0.1,0.5``. Every combination of one value per axis is a cell, and each cell
turns into the limits, scenario, image and preparation of a small run.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass, replace

from harness.errors import InvalidInput
from harness.models import Limits, Scenario
from harness.scenario import ENV_NAME

BYTECODE_STATES = ("compiled", "none")
PAGE_CACHE_STATES = ("warm", "dropped")
NO_PACKAGES = "none"


@dataclass(frozen=True)
class SweepAxis:
    """One swept setting: ``kind`` (cpus, memory, env, packages, image,
    bytecode, page-cache), the variable name for an env axis, and the values
    as the user wrote them."""

    kind: str
    values: tuple[str, ...]
    variable: str = ""

    @property
    def name(self) -> str:
        return self.variable if self.kind == "env" else self.kind


@dataclass(frozen=True)
class SweepCell:
    """One combination of axis values; ``index`` counts from 1."""

    index: int
    settings: tuple[tuple[SweepAxis, str], ...]

    @property
    def cell_id(self) -> str:
        return f"cell-{self.index:02d}"

    @property
    def label(self) -> str:
        parts = [f"{axis.name}={value or 'unset'}" for axis, value in self.settings]
        return " ".join(parts) or "default"

    def value_of(self, kind: str) -> str | None:
        for axis, value in self.settings:
            if axis.kind == kind:
                return value
        return None


@dataclass(frozen=True)
class CellConfig:
    """What a cell changes: limits, scenario, base image, bytecode, page cache."""

    limits: Limits
    scenario: Scenario
    image: str
    bytecode: str
    page_cache: str


def split_values(option: str, text: str) -> tuple[str, ...]:
    values = tuple(value.strip() for value in text.split(","))
    if len(values) != len(set(values)):
        raise InvalidInput(f"invalid {option} {text!r}: a value is listed twice")
    return values


def parse_cpus_axis(text: str) -> SweepAxis:
    values = split_values("--cpus", text)
    for value in values:
        try:
            cpus = float(value)
        except ValueError:
            cpus = -1.0
        if not 0.01 <= cpus <= 64:
            raise InvalidInput(
                f"invalid --cpus value {value!r}: use numbers of cores from 0.01 "
                "to 64 separated by commas, for example 0.1,0.5"
            )
    return SweepAxis("cpus", values)


def parse_memory_axis(text: str) -> SweepAxis:
    from harness.cli import parse_memory

    values = split_values("--memory", text)
    for value in values:
        if value != "none":
            parse_memory(value)
    return SweepAxis("memory", values)


def parse_env_axis(text: str) -> SweepAxis:
    """Parse ``NAME=VALUE1,VALUE2``; an empty value means the variable is unset."""
    name, separator, values = text.partition("=")
    if not separator or not ENV_NAME.match(name):
        raise InvalidInput(
            f"invalid --env {text!r}: write NAME=VALUE1,VALUE2, with an empty "
            "value for unset (for example STRIPE_PYTHON_EAGER_IMPORT=,1)"
        )
    return SweepAxis("env", split_values("--env", values), variable=name)


def parse_choice_axis(kind: str, text: str, choices: Sequence[str]) -> SweepAxis:
    values = split_values(f"--{kind}", text)
    for value in values:
        if value not in choices:
            raise InvalidInput(
                f"invalid --{kind} value {value!r}: choose from {', '.join(choices)}"
            )
    return SweepAxis(kind, values)


def parse_packages_axis(text: str) -> SweepAxis:
    """Parse ``none,requests,httpx``; ``a+b`` installs both a and b."""
    from packaging.requirements import InvalidRequirement, Requirement

    values = split_values("--packages", text)
    for value in values:
        for package in packages_of(value):
            try:
                Requirement(package)
            except InvalidRequirement:
                raise InvalidInput(
                    f"invalid --packages value {package!r}: write requirements "
                    "such as requests or httpx>=0.27, or none"
                ) from None
    return SweepAxis("packages", values)


def packages_of(value: str) -> tuple[str, ...]:
    if value == NO_PACKAGES:
        return ()
    return tuple(part.strip() for part in value.split("+") if part.strip())


def expand_cells(axes: Sequence[SweepAxis]) -> list[SweepCell]:
    """Return every combination of one value per axis, first axis slowest."""
    combinations = itertools.product(*(axis.values for axis in axes))
    return [
        SweepCell(index, tuple(zip(axes, values, strict=True)))
        for index, values in enumerate(combinations, start=1)
    ]


def configure_cell(
    cell: SweepCell, scenario: Scenario, limits: Limits, image: str
) -> CellConfig:
    """Apply a cell's settings to the sweep's scenario, limits and image.

    A packages value replaces the scenario's own packages. Bytecode ``none``
    also sets PYTHONDONTWRITEBYTECODE=1, so no iteration leaves .pyc files
    behind for the import it times.
    """
    env = dict(scenario.env)
    packages = scenario.packages
    for axis, value in cell.settings:
        if axis.kind == "env":
            env.pop(axis.variable, None)
            if value:
                env[axis.variable] = value
        elif axis.kind == "packages":
            packages = packages_of(value)
        elif axis.kind == "cpus":
            limits = replace(limits, cpus=float(value))
        elif axis.kind == "memory":
            limits = replace(limits, memory_bytes=parse_memory_value(value))
    bytecode = cell.value_of("bytecode") or "compiled"
    if bytecode == "none":
        env["PYTHONDONTWRITEBYTECODE"] = "1"
    return CellConfig(
        limits=limits,
        scenario=replace(scenario, env=env, packages=packages),
        image=cell.value_of("image") or image,
        bytecode=bytecode,
        page_cache=cell.value_of("page-cache") or "warm",
    )


def parse_memory_value(value: str) -> int | None:
    from harness.cli import parse_memory

    return None if value == "none" else parse_memory(value)

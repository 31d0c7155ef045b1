"""Typed records that flow between the pipeline stages.

scenario -> builds (BuildSpec -> PreparedBuild) -> plan -> run (IterationRecord)
-> analyse -> report. Records that reach disk convert to and from plain dicts
so that ``raw.jsonl`` and ``manifest.json`` stay readable without this package.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

# Version of the on-disk result format (manifest.json, raw.jsonl, summary.json).
# 1: first format.
RESULT_FORMAT = 1


class SpecKind(StrEnum):
    """Source kind of a build's SDK."""

    REQUIREMENT = "requirement"
    PATH = "path"
    GIT_REF = "git-ref"
    WHEEL = "wheel"


@dataclass(frozen=True)
class BuildSpec:
    """A build as the user named it: a label and where its SDK comes from."""

    label: str
    kind: SpecKind
    raw: str
    requirement: str | None = None
    path: Path | None = None
    ref: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "label": self.label,
            "kind": self.kind.value,
            "raw": self.raw,
            "requirement": self.requirement,
            "path": str(self.path) if self.path else None,
            "ref": self.ref,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> BuildSpec:
        return cls(
            label=data["label"],
            kind=SpecKind(data["kind"]),
            raw=data["raw"],
            requirement=data.get("requirement"),
            path=Path(data["path"]) if data.get("path") else None,
            ref=data.get("ref"),
        )


@dataclass(frozen=True)
class Phase:
    """One timed step of a scenario, counted against one budget."""

    name: str
    code: str
    budget: str


@dataclass(frozen=True)
class Sidecar:
    """A stub server run beside each measurement container, outside its quota.

    ``code`` is Python run with ``python3 -c`` from the build's image; it must
    listen on 127.0.0.1:``port`` and then print ``ready`` on stdout.
    """

    code: str
    port: int
    ready: str = "ready"


@dataclass(frozen=True)
class Scenario:
    """Workload of each container: untimed setup, then timed phases."""

    name: str
    description: str
    phases: tuple[Phase, ...]
    budgets: Mapping[str, float]
    packages: tuple[str, ...] = ()
    env: Mapping[str, str] = field(default_factory=dict)
    setup: str = ""
    source: str = ""
    # Maximum regression in percent per phase name, "*" or "total".
    gates: Mapping[str, float] = field(default_factory=dict)
    sidecar: Sidecar | None = None

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        if self.sidecar is None:
            del data["sidecar"]
        data["phases"] = [asdict(phase) for phase in self.phases]
        data["packages"] = list(self.packages)
        data["budgets"] = dict(self.budgets)
        data["env"] = dict(self.env)
        data["gates"] = dict(self.gates)
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Scenario:
        return cls(
            name=data["name"],
            description=data.get("description", ""),
            phases=tuple(Phase(**phase) for phase in data["phases"]),
            budgets=dict(data["budgets"]),
            packages=tuple(data.get("packages", ())),
            env=dict(data.get("env", {})),
            setup=data.get("setup", ""),
            source=data.get("source", ""),
            gates=dict(data.get("gates", {})),
            sidecar=Sidecar(**data["sidecar"]) if data.get("sidecar") else None,
        )


@dataclass(frozen=True)
class WheelInfo:
    """A wheel installed into a build image."""

    filename: str
    sha256: str


@dataclass(frozen=True)
class PreparedBuild:
    """A build resolved and installed into an image that is ready to run."""

    spec: BuildSpec
    distribution: str
    version: str
    commit: str | None
    wheels: tuple[WheelInfo, ...]
    image_tag: str
    image_id: str
    cache_key: str
    cached: bool = False

    @property
    def label(self) -> str:
        return self.spec.label

    def to_dict(self) -> dict[str, Any]:
        return {
            "label": self.label,
            "spec": self.spec.to_dict(),
            "distribution": self.distribution,
            "version": self.version,
            "commit": self.commit,
            "wheels": [asdict(wheel) for wheel in self.wheels],
            "image_tag": self.image_tag,
            "image_id": self.image_id,
            "cache_key": self.cache_key,
            "cached": self.cached,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> PreparedBuild:
        return cls(
            spec=BuildSpec.from_dict(data["spec"]),
            distribution=data["distribution"],
            version=data["version"],
            commit=data.get("commit"),
            wheels=tuple(WheelInfo(**wheel) for wheel in data["wheels"]),
            image_tag=data["image_tag"],
            image_id=data["image_id"],
            cache_key=data["cache_key"],
            cached=data.get("cached", False),
        )


@dataclass(frozen=True)
class BaseImage:
    """The base image that measurement images are layered on, as it really is.

    ``requested`` is the image the user named (``python:3.11-slim``), and
    ``tag`` is the image that runs. They differ when the requested image could
    not be pulled, so a stand-in was built.
    """

    requested: str
    tag: str
    image_id: str
    python_version: str
    stand_in: bool
    origin: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> BaseImage:
        return cls(**data)


@dataclass(frozen=True)
class Limits:
    """Resource limits applied to every measurement container.

    ``cpus`` is the CPU share in cores, enforced as a CFS quota of ``cpus *
    cpu_period_us`` microseconds per period. ``init_cpus``, when set, is the
    share for the phases counted against the "init" budget; the quota changes
    to ``cpus`` before the first other phase. ``profile`` names the preset the
    values came from, if any.
    """

    cpus: float = 0.1
    memory_bytes: int | None = None
    timeout_s: float = 120.0
    cpu_period_us: int = 100_000
    init_cpus: float | None = None
    profile: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Limits:
        known = {name: data[name] for name in cls.__dataclass_fields__ if name in data}
        return cls(**known)


@dataclass(frozen=True)
class PhaseResult:
    """Timings of one phase in one iteration.

    ``cgroup`` contains the change in the container's CFS counters over the phase
    (``nr_periods``, ``nr_throttled``, ``throttled_s``, ``usage_s``) when the
    probe could read them.
    """

    name: str
    wall_s: float
    cpu_s: float
    cgroup: Mapping[str, float] | None = None
    modules: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "name": self.name,
            "wall_s": self.wall_s,
            "cpu_s": self.cpu_s,
        }
        if self.cgroup is not None:
            data["cgroup"] = dict(self.cgroup)
        if self.modules:
            data["modules"] = list(self.modules)
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> PhaseResult:
        return cls(
            name=data["name"],
            wall_s=float(data["wall_s"]),
            cpu_s=float(data["cpu_s"]),
            cgroup=data.get("cgroup"),
            modules=tuple(data.get("modules", ())),
        )


class FailureKind(StrEnum):
    """Cause of an iteration that produced no complete record."""

    BUILD = "build"
    PHASE_RAISED = "phase-raised"
    TIMEOUT = "timeout"
    OUT_OF_MEMORY = "out-of-memory"
    PROBE_OUTPUT = "probe-output"
    ENGINE = "engine"


@dataclass(frozen=True)
class IterationRecord:
    """One line of ``raw.jsonl``: one container run of one build.

    A ``warmup`` record comes from an unrecorded container run before the first
    round, and no statistic counts it.
    """

    build: str
    iteration: int
    round: int
    started_at: str
    container_s: float
    phases: tuple[PhaseResult, ...] = ()
    failure: FailureKind | None = None
    error: str | None = None
    python_version: str | None = None
    peak_rss_kb: int | None = None
    telemetry: Mapping[str, Any] = field(default_factory=dict)
    warmup: bool = False

    @property
    def ok(self) -> bool:
        return self.failure is None

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": RESULT_FORMAT,
            "build": self.build,
            "iteration": self.iteration,
            "round": self.round,
            "started_at": self.started_at,
            "container_s": self.container_s,
            "status": "ok" if self.ok else "failed",
            "failure": self.failure.value if self.failure else None,
            "error": self.error,
            "python_version": self.python_version,
            "peak_rss_kb": self.peak_rss_kb,
            "phases": [phase.to_dict() for phase in self.phases],
            "telemetry": dict(self.telemetry),
            "warmup": self.warmup,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> IterationRecord:
        failure = data.get("failure")
        return cls(
            build=data["build"],
            iteration=int(data["iteration"]),
            round=int(data["round"]),
            started_at=data["started_at"],
            container_s=float(data["container_s"]),
            phases=tuple(PhaseResult.from_dict(p) for p in data.get("phases", ())),
            failure=FailureKind(failure) if failure else None,
            error=data.get("error"),
            python_version=data.get("python_version"),
            peak_rss_kb=data.get("peak_rss_kb"),
            telemetry=data.get("telemetry", {}),
            warmup=bool(data.get("warmup", False)),
        )

"""Import breakdown: which modules each phase imported, and what they cost.

The breakdown runs in iterations of its own, after the timed ones, with
``python3 -X importtime``: the option's bookkeeping and its stderr output make
every import slower, so timing the main iterations with it would distort them.

``-X importtime`` writes one line per imported module to stderr, with its
self and cumulative time in microseconds. Each module is attributed to the
phase whose ``modules`` list (what ``sys.modules`` gained during the phase)
contains it. Modules imported at interpreter start-up or by the untimed setup
belong to no phase and are left out. The raw log of each iteration is kept as
``importtime/<build>-<iteration>.log``, in the format that viewers such as
tuna read.
"""

from __future__ import annotations

import json
import logging
import re
import statistics
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from harness.models import IterationRecord, Limits, PreparedBuild, Scenario
from harness.probe import probe_command
from harness.runner import PlannedIteration, interpret_run, run_container

if TYPE_CHECKING:
    import docker

    from harness.results import RunDirectory

logger = logging.getLogger(__name__)

BREAKDOWN_FILE = "breakdown.json"
IMPORTTIME_DIR = "importtime"
DEFAULT_TOP = 10
IMPORTTIME_LINE = re.compile(r"^import time:\s+(\d+) \|\s+(\d+) \|( *)(\S.*?)\s*$")


@dataclass(frozen=True)
class ImportTime:
    """One ``-X importtime`` line: a module's own and cumulative import time."""

    module: str
    self_us: int
    cumulative_us: int
    depth: int


def parse_importtime(stderr: str) -> list[ImportTime]:
    """Return the ``-X importtime`` entries of a stderr text, in output order.

    Other lines (the header, the probe's phase markers, anything the code under
    test wrote) are skipped.
    """
    entries = []
    for line in stderr.splitlines():
        match = IMPORTTIME_LINE.match(line)
        if match is None:
            continue
        self_us, cumulative_us, indent, module = match.groups()
        # The top level is indented by one space, each nested level by two more.
        depth = max(0, (len(indent) - 1) // 2)
        entries.append(ImportTime(module, int(self_us), int(cumulative_us), depth))
    return entries


def extract_importtime_log(stderr: str) -> str:
    """Return only the ``import time:`` lines, header included, as tuna reads them."""
    lines = [line for line in stderr.splitlines() if line.startswith("import time:")]
    return "\n".join(lines) + "\n"


def attribute_to_phases(
    entries: Sequence[ImportTime], record: IterationRecord
) -> dict[str, dict[str, ImportTime]]:
    """Map each phase name to the entries of the modules that phase imported."""
    owner = {module: phase.name for phase in record.phases for module in phase.modules}
    phases: dict[str, dict[str, ImportTime]] = {p.name: {} for p in record.phases}
    for entry in entries:
        phase = owner.get(entry.module)
        if phase is not None:
            phases[phase][entry.module] = entry
    return phases


def top_level(module: str) -> str:
    return module.split(".", 1)[0]


# CPU share of the breakdown containers: a whole core, which no quota period
# throttles for a single-threaded import.
UNTHROTTLED_CPUS = 1.0


def run_breakdown(
    client: docker.DockerClient,
    run_dir: RunDirectory,
    builds: Sequence[PreparedBuild],
    scenario: Scenario,
    limits: Limits,
    iterations: int,
) -> dict[str, Any]:
    """Run ``iterations`` importtime containers per build and write the breakdown.

    Builds alternate within each round, as in the main plan. The containers
    get one whole core, because under the run's quota a module's wall time is
    mostly the throttling wait that happened to fall into it. The memory
    limit and timeout stay. Returns the aggregated breakdown, which is also
    written to ``breakdown.json``.
    """
    limits = replace(limits, cpus=UNTHROTTLED_CPUS, init_cpus=None)
    log_dir = run_dir.path / IMPORTTIME_DIR
    log_dir.mkdir(exist_ok=True)
    command = probe_command(scenario)
    command[1:1] = ["-X", "importtime"]
    samples: dict[str, list[dict[str, dict[str, ImportTime]]]] = defaultdict(list)
    for round_number in range(1, iterations + 1):
        for build in builds:
            planned = PlannedIteration(round_number, build.label, round_number)
            attributed = run_breakdown_iteration(
                client, run_dir, build, scenario, limits, planned, command
            )
            if attributed is not None:
                samples[build.label].append(attributed)
    breakdown = aggregate_breakdown(samples, [p.name for p in scenario.phases])
    breakdown["iterations"] = iterations
    run_dir.write_text(BREAKDOWN_FILE, json.dumps(breakdown, indent=2) + "\n")
    return breakdown


def run_breakdown_iteration(
    client: docker.DockerClient,
    run_dir: RunDirectory,
    build: PreparedBuild,
    scenario: Scenario,
    limits: Limits,
    planned: PlannedIteration,
    command: list[str],
) -> dict[str, dict[str, ImportTime]] | None:
    """Run one importtime container; return its entries per phase, None on failure."""
    labels = {
        "coldstart.run": run_dir.run_id,
        "coldstart.build": build.label,
        "coldstart.breakdown": "1",
    }
    run = run_container(client, build, scenario, limits, labels, command=command)
    stderr = run.stderr.decode("utf-8", errors="replace")
    log_path = run_dir.path / IMPORTTIME_DIR / f"{build.label}-{planned.iteration}.log"
    log_path.write_text(extract_importtime_log(stderr))
    record = interpret_run(run, build.label, planned, "", limits)
    if not record.ok:
        logger.warning(
            "breakdown iteration %d of build %s failed: %s",
            planned.iteration,
            build.label,
            record.error,
        )
        return None
    return attribute_to_phases(parse_importtime(stderr), record)


def aggregate_breakdown(
    samples: Mapping[str, Sequence[Mapping[str, Mapping[str, ImportTime]]]],
    phases: Sequence[str],
) -> dict[str, Any]:
    """Return medians per build, phase and module, and per top-level package.

    A module counts in a phase when at least half of the build's iterations
    imported it there; its medians are over those iterations. A package's
    self time is the median over iterations of the sum of its modules' self
    times in that phase.
    """
    builds: dict[str, Any] = {}
    for label, iterations in samples.items():
        builds[label] = {
            phase: aggregate_phase([it.get(phase, {}) for it in iterations])
            for phase in phases
        }
    return {"phases": list(phases), "builds": builds}


def aggregate_phase(iterations: Sequence[Mapping[str, ImportTime]]) -> dict[str, Any]:
    per_module: dict[str, list[ImportTime]] = defaultdict(list)
    package_totals: dict[str, list[int]] = defaultdict(lambda: [0] * len(iterations))
    for index, entries in enumerate(iterations):
        for module, entry in entries.items():
            per_module[module].append(entry)
            package_totals[top_level(module)][index] += entry.self_us
    quorum = len(iterations) / 2
    modules = {
        module: {
            "self_us": statistics.median(e.self_us for e in entries),
            "cumulative_us": statistics.median(e.cumulative_us for e in entries),
            "seen": len(entries),
        }
        for module, entries in per_module.items()
        if len(entries) >= quorum
    }
    packages = {
        package: statistics.median(totals) for package, totals in package_totals.items()
    }
    return {
        "modules": modules,
        "packages": packages,
        "self_us": sum(m["self_us"] for m in modules.values()),
    }


def top_modules(phase: Mapping[str, Any], count: int = DEFAULT_TOP) -> list[tuple]:
    """Return (module, self µs, cumulative µs) of the ``count`` costliest modules."""
    modules = phase.get("modules", {})
    ranked = sorted(modules.items(), key=lambda item: -item[1]["self_us"])
    return [
        (name, data["self_us"], data["cumulative_us"]) for name, data in ranked[:count]
    ]


def diff_phase(
    baseline: Mapping[str, Any], candidate: Mapping[str, Any]
) -> dict[str, dict[str, float]]:
    """Return the modules only the candidate imports in a phase, and the reverse.

    Values are the median self times in microseconds.
    """
    base_modules = baseline.get("modules", {})
    cand_modules = candidate.get("modules", {})
    added = {
        name: data["self_us"]
        for name, data in cand_modules.items()
        if name not in base_modules
    }
    removed = {
        name: data["self_us"]
        for name, data in base_modules.items()
        if name not in cand_modules
    }
    return {"added": added, "removed": removed}


def read_breakdown(path: Path) -> dict[str, Any] | None:
    """Return the run's breakdown, or None when the run has none."""
    file = path / BREAKDOWN_FILE
    if not file.is_file():
        return None
    data: dict[str, Any] = json.loads(file.read_text())
    return data

"""Harness under load: 200 iterations with no leaks of containers, files or memory.

Runs 2 builds x 100 iterations through the runner in this process, both builds
being the base image itself with ``import json`` as the phase, at ``--cpus 1``
so each container lasts well under a second. After every iteration a display
hook samples this process's open file descriptors (``/proc/self/fd``), its
resident set size (``VmRSS``) and the size of the run directory.
"""

from __future__ import annotations

import logging
import os
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import docker

from benchmarks.overhead import machine_description
from harness.baseimage import resolve_base_image
from harness.display import SilentDisplay
from harness.environment import Environment
from harness.models import (
    BuildSpec,
    IterationRecord,
    Limits,
    Phase,
    PreparedBuild,
    Scenario,
    SpecKind,
)
from harness.results import RunDirectory
from harness.runner import plan_iterations, run_plan

ITERATIONS = 100
LABELS = ("baseline", "candidate")
SCENARIO = Scenario(
    name="robustness-load",
    description="stdlib json as a stand-in SDK",
    phases=(Phase("import json", "import json", "init"),),
    budgets={"init": 10.0},
)


def count_open_files() -> int:
    return len(os.listdir("/proc/self/fd"))


def read_rss_kb() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS in /proc/self/status")


def directory_bytes(path: Path) -> int:
    return sum(child.stat().st_size for child in path.iterdir() if child.is_file())


@dataclass
class SamplingDisplay(SilentDisplay):
    """A silent display that samples the harness after each iteration."""

    run_path: Path = Path()
    open_files: list[int] = field(default_factory=list)
    rss_kb: list[int] = field(default_factory=list)
    directory_bytes: list[int] = field(default_factory=list)
    failures: int = 0

    def advance(self, record: IterationRecord) -> None:
        self.failures += 0 if record.ok else 1
        self.open_files.append(count_open_files())
        self.rss_kb.append(read_rss_kb())
        self.directory_bytes.append(directory_bytes(self.run_path))


def prepared_build(label: str, tag: str, image_id: str) -> PreparedBuild:
    spec = BuildSpec(label=label, kind=SpecKind.REQUIREMENT, raw=tag)
    return PreparedBuild(spec, "json", "stdlib", None, (), tag, image_id, tag)


def run() -> str:
    """Run the 200 iterations and return the Markdown section."""
    logging.getLogger("harness").setLevel(logging.WARNING)
    client = docker.from_env()
    base = resolve_base_image(client, "python:3.11-slim")
    builds = {label: prepared_build(label, base.tag, base.image_id) for label in LABELS}
    env = Environment(docker_factory=lambda: client, quiet=True)
    with tempfile.TemporaryDirectory(prefix="coldstart-load-") as scratch:
        run_dir = RunDirectory.create(Path(scratch), "load")
        run_dir.write_manifest({"status": "running"})
        display = SamplingDisplay(run_path=run_dir.path)
        plan = plan_iterations(list(LABELS), ITERATIONS, "shuffle", seed=1)
        started = time.monotonic()
        run_plan(env, run_dir, builds, SCENARIO, Limits(cpus=1.0), plan, display)
        elapsed = time.monotonic() - started
        leaked = client.containers.list(
            all=True, filters={"label": f"coldstart.run={run_dir.run_id}"}
        )
    return format_section(display, elapsed, len(leaked))


def format_section(display: SamplingDisplay, elapsed: float, leaked: int) -> str:
    count = len(display.open_files)
    sizes = display.directory_bytes
    per_record = [size / (index + 1) for index, size in enumerate(sizes)]
    first_rss, last_rss = display.rss_kb[9], display.rss_kb[-1]
    rows = [
        ("iterations run", f"{count} ({display.failures} failed)"),
        ("wall time", f"{elapsed:.0f} s ({elapsed / count:.2f} s per iteration)"),
        ("containers left afterwards", str(leaked)),
        (
            "open file descriptors (after iteration 10 / 200, max)",
            f"{display.open_files[9]} / {display.open_files[-1]}, "
            f"{max(display.open_files)}",
        ),
        (
            "RSS (after iteration 10 / 200)",
            f"{first_rss / 1024:.1f} MiB / {last_rss / 1024:.1f} MiB "
            f"({(last_rss - first_rss) / 1024:+.1f} MiB)",
        ),
        (
            "run directory (after 50 / 100 / 200)",
            f"{sizes[49]} / {sizes[99]} / {sizes[-1]} bytes",
        ),
        (
            "bytes per record (after 50 / 200)",
            f"{per_record[49]:.0f} / {per_record[-1]:.0f}",
        ),
    ]
    table = ["| figure | value |", "| --- | --- |"]
    table += [f"| {name} | {value} |" for name, value in rows]
    return "\n".join(
        [
            "## Harness under load: 200 iterations",
            "",
            "Command: `python -m benchmarks robustness` (2 builds x 100 "
            "iterations of `import json` on the base image at `--cpus 1`, "
            "through the runner in one process).",
            f"Machine: {machine_description()}.",
            "",
            *table,
            "",
            "Open files and RSS are the harness process's own, sampled after "
            "each iteration. The run directory grows by the same number of "
            "bytes per record, so its size is linear in the iterations.",
        ]
    )

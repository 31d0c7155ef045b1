"""``coldstart sweep``: one scenario over the product of one or more axes.

Each cell of the product is a small run with its own directory and manifest
under ``<results>/sweep-<id>/cells/``. The iterations of all cells are
interleaved: every round runs each cell's builds once, cells shuffled, so
drift of the host lands on all cells alike. At the end each cell gets its
report, and the sweep gets a matrix of each phase's median with its CI
(``sweep.md``, ``sweep.json``, ``sweep.png``).
"""

from __future__ import annotations

import io
import json
import logging
import random
import tarfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from harness.baseimage import resolve_base_image
from harness.builds import IMAGE_REPOSITORY, prepare_build
from harness.display import make_display
from harness.environment import Environment
from harness.errors import ColdstartError, Interrupted
from harness.models import (
    BaseImage,
    BuildSpec,
    IterationRecord,
    Limits,
    PreparedBuild,
    Scenario,
)
from harness.pipeline import RunRequest, finish_run, initial_manifest
from harness.results import RunDirectory, new_run_id
from harness.runner import PlannedIteration, raise_on_signals, run_iteration
from harness.sweep_axes import CellConfig, SweepAxis, SweepCell, configure_cell
from harness.sweep_axes import expand_cells as expand_cells

logger = logging.getLogger(__name__)

DROP_CACHES = Path("/proc/sys/vm/drop_caches")
SWEEP_MATRIX = "sweep.json"

Preparer = Callable[[Environment, BuildSpec, Scenario, BaseImage], PreparedBuild]

# Removes every .pyc under site-packages; the ENV keeps Python from writing new
# ones, as with an editable install or a package shipped without .pyc files.
NO_BYTECODE_DOCKERFILE = """\
FROM {image}
RUN python3 -c "import pathlib, shutil, site; \\
[shutil.rmtree(p) for d in site.getsitepackages() \\
 for p in pathlib.Path(d).rglob('__pycache__')]"
ENV PYTHONDONTWRITEBYTECODE=1
"""


@dataclass(frozen=True)
class SweepRequest:
    """Everything ``coldstart sweep`` was asked to do."""

    specs: tuple[BuildSpec, ...]
    scenario: Scenario
    axes: tuple[SweepAxis, ...]
    limits: Limits
    image: str
    iterations: int
    results_root: Path
    seed: int = 0
    command: tuple[str, ...] = ()
    # Added to every container's and derived image's labels.
    labels: Mapping[str, str] = field(default_factory=dict)


@dataclass
class CellRun:
    """A cell ready to run, or the reason it cannot run."""

    cell: SweepCell
    config: CellConfig
    run_dir: RunDirectory | None = None
    builds: list[PreparedBuild] = field(default_factory=list)
    unavailable: str | None = None
    page_cache_errors: list[str] = field(default_factory=list)


def run_sweep(
    env: Environment, request: SweepRequest, prepare: Preparer = prepare_build
) -> tuple[Path, dict[str, Any]]:
    """Prepare and run every cell, then write the matrix; return (dir, matrix).

    ``prepare`` turns a build spec into an image for a cell's scenario and
    base image; tests pass their own.
    """
    # Connect first: without an engine every cell would only be unavailable.
    env.docker.ping()
    sweep_dir = request.results_root / f"sweep-{new_run_id(env.now())}"
    (sweep_dir / "cells").mkdir(parents=True)
    logger.info("sweep results go to %s", sweep_dir)
    cells = expand_cells(request.axes)
    runs = [prepare_cell(env, request, cell, sweep_dir, prepare) for cell in cells]
    try:
        run_rounds(env, request, [run for run in runs if run.run_dir])
    except Interrupted:
        finish_cells(env, runs, status="interrupted")
        raise
    finish_cells(env, runs, status="complete")
    matrix = build_matrix(request, runs)
    write_matrix(sweep_dir, matrix)
    return sweep_dir, matrix


def prepare_cell(
    env: Environment,
    request: SweepRequest,
    cell: SweepCell,
    sweep_dir: Path,
    prepare: Preparer,
) -> CellRun:
    """Resolve the cell's base image and builds, and create its run directory."""
    config = configure_cell(cell, request.scenario, request.limits, request.image)
    run = CellRun(cell, config)
    try:
        base = resolve_base_image(env.docker, config.image, cache_dir=env.cache_dir)
        builds = [prepare(env, spec, config.scenario, base) for spec in request.specs]
        if config.bytecode == "none":
            builds = [strip_bytecode(env, b, request.labels) for b in builds]
    except ColdstartError as error:
        logger.error("cell %s (%s) is unavailable: %s", cell.cell_id, cell.label, error)
        run.unavailable = str(error)
        return run

    run.builds = builds
    run.run_dir = RunDirectory.create(sweep_dir / "cells", cell.cell_id)
    run_request = RunRequest(
        specs=request.specs,
        baseline=request.specs[0].label,
        scenario=config.scenario,
        limits=config.limits,
        iterations=request.iterations,
        image=config.image,
        results_root=sweep_dir / "cells",
        seed=request.seed,
        command=request.command,
    )

    manifest = initial_manifest(env, run_request, base, cell_run_id(run.run_dir))
    manifest["builds"] = [build.to_dict() for build in builds]
    manifest["sweep_cell"] = describe_cell(run)
    run.run_dir.write_manifest(manifest)
    return run


def cell_run_id(run_dir: RunDirectory) -> str:
    """Return a cell's run id, unique across sweeps: ``sweep-<id>-cell-01``.

    It names the cell in its manifest and labels its containers; the cell's
    directory keeps the short name ``cell-01``.
    """
    return f"{run_dir.path.parent.parent.name}-{run_dir.run_id}"


def describe_cell(run: CellRun) -> dict[str, Any]:
    return {
        "id": run.cell.cell_id,
        "label": run.cell.label,
        "settings": {axis.name: value for axis, value in run.cell.settings},
        "bytecode": run.config.bytecode,
        "page_cache": run.config.page_cache,
        "page_cache_dropped": run.config.page_cache == "dropped"
        and not run.page_cache_errors,
        "page_cache_errors": run.page_cache_errors[:1],
        "unavailable": run.unavailable,
    }


def strip_bytecode(
    env: Environment, build: PreparedBuild, labels: Mapping[str, str]
) -> PreparedBuild:
    """Return the build on an image without .pyc files in site-packages."""
    tag = f"{IMAGE_REPOSITORY}:{build.cache_key[:16]}-no-pyc"
    dockerfile = NO_BYTECODE_DOCKERFILE.format(image=build.image_tag).encode()
    context = io.BytesIO()
    with tarfile.open(fileobj=context, mode="w") as archive:
        info = tarfile.TarInfo("Dockerfile")
        info.size = len(dockerfile)
        archive.addfile(info, io.BytesIO(dockerfile))
    context.seek(0)
    logger.info("build %r: removing .pyc files into %s", build.label, tag)
    image, _ = env.docker.images.build(
        fileobj=context,
        custom_context=True,
        tag=tag,
        labels={"coldstart": "1", **labels},
        rm=True,
        forcerm=True,
        network_mode="none",
    )
    return replace(build, image_tag=tag, image_id=image.id or "")


def drop_page_cache() -> str | None:
    """Drop the host's page cache; return why it failed, or None when dropped.

    Needs root on the host, and a host (not a container) whose /proc/sys is
    writable.
    """
    try:
        DROP_CACHES.write_text("3\n")
    except OSError as error:
        return f"cannot write {DROP_CACHES}: {error.strerror or error}"
    return None


def run_rounds(env: Environment, request: SweepRequest, runs: list[CellRun]) -> None:
    """Run every cell's builds once per round, cells in a shuffled order."""
    rng = random.Random(request.seed)
    display = make_display(env)
    total = sum(len(run.builds) for run in runs) * request.iterations
    display.start(total, f"sweep of {request.scenario.name}: {len(runs)} cells")
    try:
        with raise_on_signals():
            for round_number in range(1, request.iterations + 1):
                order = list(runs)
                rng.shuffle(order)
                for run in order:
                    for build in run.builds:
                        planned = PlannedIteration(
                            round_number, build.label, round_number
                        )
                        record = run_cell_iteration(
                            env, run, build, planned, request.labels
                        )
                        display.advance(record)
    finally:
        display.stop()


def run_cell_iteration(
    env: Environment,
    run: CellRun,
    build: PreparedBuild,
    planned: PlannedIteration,
    labels: Mapping[str, str],
) -> IterationRecord:
    assert run.run_dir is not None
    page_cache = run.config.page_cache
    if page_cache == "dropped":
        error = drop_page_cache()
        if error is not None:
            run.page_cache_errors.append(error)
            page_cache = "not dropped"
    record = run_iteration(
        env.docker,
        build,
        run.config.scenario,
        run.config.limits,
        planned,
        cell_run_id(run.run_dir),
        env.now,
        labels={**labels, "coldstart.sweep.cell": run.cell.cell_id},
    )
    record = replace(record, telemetry={**record.telemetry, "page_cache": page_cache})
    run.run_dir.append_record(record)
    return record


def finish_cells(env: Environment, runs: Sequence[CellRun], status: str) -> None:
    for run in runs:
        if run.run_dir is None:
            continue
        run.run_dir.update_manifest(sweep_cell=describe_cell(run))
        finish_run(env, run.run_dir, status=status)


def build_matrix(request: SweepRequest, runs: Sequence[CellRun]) -> dict[str, Any]:
    """Return each cell's settings and, per build and phase, median and CI."""
    from harness.report import build_report

    cells = []
    for run in runs:
        entry: dict[str, Any] = {**describe_cell(run), "phases": {}}
        if run.run_dir is not None:
            manifest, _, summary = build_report(run.run_dir)
            entry["run_dir"] = str(run.run_dir.path)
            entry["ran_on"] = describe_image_ran(manifest)
            for stats in summary.phase_summaries:
                entry["phases"].setdefault(stats.phase, {})[stats.build] = {
                    "median_s": stats.wall.median,
                    "ci_s": [stats.wall.median_ci.low, stats.wall.median_ci.high],
                    "cpu_median_s": stats.cpu.median,
                    "n": stats.n,
                }
        cells.append(entry)
    return {
        "format": 1,
        "scenario": request.scenario.name,
        "axes": [{"name": a.name, "values": list(a.values)} for a in request.axes],
        "builds": [spec.label for spec in request.specs],
        "phases": [*(p.name for p in request.scenario.phases), "total"],
        "iterations": request.iterations,
        "cells": cells,
    }


def describe_image_ran(manifest: Mapping[str, Any]) -> str:
    """Return the image that really ran and its Python, as containers reported it."""
    versions = ", ".join(manifest.get("python_versions", [])) or "unknown"
    return f"{manifest['base_image']['tag']} (Python {versions})"


def write_matrix(sweep_dir: Path, matrix: dict[str, Any]) -> None:
    from harness.plots import plot_sweep_matrix
    from harness.sweep_report import render_sweep_markdown

    (sweep_dir / SWEEP_MATRIX).write_text(json.dumps(matrix, indent=2) + "\n")
    try:
        plot = plot_sweep_matrix(matrix, sweep_dir / "sweep.png")
    except OSError as error:
        logger.warning("could not write %s: %s", sweep_dir / "sweep.png", error)
        plot = None
    text = render_sweep_markdown(matrix, plot.name if plot else None)
    (sweep_dir / "sweep.md").write_text(text)
    logger.info("wrote %s", sweep_dir / "sweep.md")

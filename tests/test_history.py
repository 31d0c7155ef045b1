"""The run index, history queries, step changes and plots; two real runs."""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import subprocess
import sys
from dataclasses import dataclass, replace
from pathlib import Path

import docker
import docker.errors
import pytest
from stored_runs import copy_run, parse_github_output, run_cli

from harness.errors import InvalidInput
from harness.history import (
    HistoryPoint,
    HistoryQuery,
    describe_limits,
    find_step_changes,
    query_history,
    reindex,
)

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def point(run_id: str, median: float, low: float, high: float, build="main"):
    return HistoryPoint(
        run_id=run_id,
        started_at=f"2026-12-0{run_id[-1]}T10:00:00+00:00",
        scenario="s",
        build=build,
        spec=None,
        version="1",
        commit=None,
        phase="total",
        n=10,
        median=median,
        ci_low=low,
        ci_high=high,
        status="complete",
    )


def test_step_needs_disjoint_cis_and_size():
    points = [
        point("run1", 1.00, 0.98, 1.02),
        point("run2", 1.20, 1.15, 1.25),  # disjoint, +20%: a step
        point("run3", 1.25, 1.10, 1.40),  # overlaps run2: no step
        point("run4", 1.30, 1.29, 1.31),  # overlaps run3: no step
        point("run5", 1.34, 1.33, 1.35),  # disjoint but only +3%: no step
    ]
    steps = find_step_changes(points, threshold=0.10)
    assert [(s.before.run_id, s.after.run_id) for s in steps] == [("run1", "run2")]
    assert steps[0].relative == pytest.approx(0.20)


def test_step_detected_downwards_per_series():
    points = [
        point("run1", 1.0, 0.9, 1.1, build="a"),
        point("run1", 1.0, 0.9, 1.1, build="b"),
        point("run2", 1.0, 0.9, 1.1, build="a"),
        point("run2", 0.5, 0.45, 0.55, build="b"),
    ]
    steps = find_step_changes(points)
    assert [(s.after.build, round(s.relative, 2)) for s in steps] == [("b", -0.5)]


def test_single_iteration_never_a_step():
    points = [point("run1", 1.0, 1.0, 1.0), point("run2", 3.0, 3.0, 3.0)]
    points[0] = replace(points[0], n=1)
    assert find_step_changes(points) == []


def test_other_limits_start_new_series():
    points = [
        point("run1", 1.0, 0.9, 1.1),
        replace(point("run2", 0.3, 0.25, 0.35), limits="cpus 0.5"),
        point("run3", 1.0, 0.9, 1.1),
    ]
    points[0] = replace(points[0], limits="cpus 0.1")
    points[2] = replace(points[2], limits="cpus 0.1")
    assert find_step_changes(points) == []


def test_limits_described_in_few_words():
    assert describe_limits({"cpus": 0.1, "cpu_period_us": 100_000}) == "cpus 0.1"
    assert describe_limits({"profile": "lambda-128", "cpus": 0.0724}) == "lambda-128"
    assert (
        describe_limits(
            {
                "cpus": 0.1,
                "init_cpus": 1.0,
                "cpu_period_us": 20_000,
                "memory_bytes": 2**27,
            }
        )
        == "cpus 0.1, init 1, period 20000 us, memory 128 MiB"
    )


def test_undefined_ci_never_a_step():
    nan = float("nan")
    points = [point("run1", 1.0, nan, nan), point("run2", 3.0, 2.9, 3.1)]
    assert find_step_changes(points) == []


def copy_fixture_runs(root: Path) -> None:
    copy_run(root / "20261204-101500-a1b2")
    copy_run(
        root / "20261205-101500-b2c3",
        edit=lambda m: m.update(
            run_id="20261205-101500-b2c3", started_at="2026-12-05T10:15:00+00:00"
        ),
    )


def test_reindex_rows_per_run_build_phase(tmp_path):
    copy_fixture_runs(tmp_path)
    (tmp_path / "not-a-run").mkdir()
    assert reindex(tmp_path) == (2, 2 * 2 * 3)
    rows = sqlite3.connect(tmp_path / "index.sqlite").execute(
        "SELECT run_id, build, phase, n, spec, version, status FROM phase_results "
        "WHERE phase = 'import stripe' ORDER BY run_id, build"
    )
    assert rows.fetchall() == [
        ("20261204-101500-a1b2", "15.3.0", "import stripe", 6, "stripe==15.3.0")
        + ("15.3.0", "complete"),
        ("20261204-101500-a1b2", "15.3.1", "import stripe", 5, "stripe==15.3.1")
        + ("15.3.1", "complete"),
        ("20261205-101500-b2c3", "15.3.0", "import stripe", 6, "stripe==15.3.0")
        + ("15.3.0", "complete"),
        ("20261205-101500-b2c3", "15.3.1", "import stripe", 5, "stripe==15.3.1")
        + ("15.3.1", "complete"),
    ]


def test_query_filters_and_metric(tmp_path):
    copy_fixture_runs(tmp_path)
    reindex(tmp_path)
    wall = query_history(tmp_path, HistoryQuery(phase="import stripe", build="15.3.1"))
    assert [p.run_id for p in wall] == ["20261204-101500-a1b2", "20261205-101500-b2c3"]
    assert wall[0].median == pytest.approx(0.913)
    cpu = query_history(
        tmp_path, HistoryQuery(phase="import stripe", build="15.3.1", metric="cpu")
    )
    assert cpu[0].median < 0.2
    by_spec = query_history(tmp_path, HistoryQuery(spec_contains="==15.3.0"))
    assert {p.build for p in by_spec} == {"15.3.0"}
    assert query_history(tmp_path, HistoryQuery(scenario="other")) == []
    # The same data twice: no step change.
    assert find_step_changes(wall) == []


def test_query_without_index_rejected(tmp_path):
    with pytest.raises(InvalidInput) as caught:
        query_history(tmp_path, HistoryQuery())
    assert str(caught.value) == (
        f"no run index at {tmp_path / 'index.sqlite'}: run `coldstart run` first, "
        "or `coldstart history --reindex` to build it from the runs"
    )


def test_history_command_table_and_plot(tmp_path, capsys):
    copy_fixture_runs(tmp_path)
    plot = tmp_path / "history.png"
    result = run_cli(
        capsys,
        "history",
        "--results",
        str(tmp_path),
        "--reindex",
        "--phase",
        "import stripe",
        "--plot",
        str(plot),
    )
    assert result.returncode == 0
    assert "import stripe: median wall time per run" in result.stdout
    assert result.stdout.count("20261205-101500-b2c3") == 2
    assert plot.read_bytes().startswith(PNG_SIGNATURE)
    assert plot.stat().st_size > 10_000


def test_history_build_and_spec_exclusive(tmp_path, capsys):
    result = run_cli(
        capsys,
        "history",
        "--results",
        str(tmp_path),
        "--build",
        "a",
        "--spec-contains",
        "b",
    )
    assert result.returncode == 2
    assert result.stderr.strip() == (
        "error: --build and --spec-contains exclude each other: pass one"
    )


# --- two real runs on the engine ---------------------------------------------

PYPROJECT = """\
[build-system]
requires = ["setuptools>=61"]
build-backend = "setuptools.build_meta"

[project]
name = "gatesdk"
version = "{version}"
"""
# The slow build burns 0.3 s of CPU at import, so the candidate is slower by
# far more than the noise of a shared host.
SLOW_IMPORT = """\
import time

_end = time.process_time() + 0.3
while time.process_time() < _end:
    pass
"""
SCENARIO = """\
name = "gatesdk-import"
description = "Import of a synthetic SDK."

[budgets]
init = 10.0

[[phases]]
name = "import gatesdk"
budget = "init"
code = "import gatesdk"
"""


@dataclass(frozen=True)
class RealRuns:
    """Two finished runs of a fast baseline and a slow candidate SDK."""

    results: Path
    first: subprocess.CompletedProcess
    second: subprocess.CompletedProcess
    outputs: dict[str, str]


def write_sdk(path: Path, version: str, source: str) -> Path:
    (path / "gatesdk").mkdir(parents=True)
    (path / "pyproject.toml").write_text(PYPROJECT.format(version=version))
    (path / "gatesdk" / "__init__.py").write_text(source)
    return path


def run_coldstart(tmp: Path, cache_dir: Path, *extra: str):
    environ = {
        **os.environ,
        "COLDSTART_CACHE": str(cache_dir),
        "GITHUB_OUTPUT": str(tmp / "output"),
        "GITHUB_STEP_SUMMARY": str(tmp / "step-summary.md"),
    }
    command = [sys.executable, "-m", "harness", "run"]
    command += ["--baseline", str(tmp / "fast"), "--candidate", str(tmp / "slow")]
    command += ["--scenario", str(tmp / "scenario.toml"), "-n", "4", "--cpus", "1"]
    command += ["--order", "alternate", "--results", str(tmp / "results"), "-q"]
    return subprocess.run(
        [*command, *extra],
        capture_output=True,
        text=True,
        timeout=600,
        env=environ,
        cwd=tmp,
    )


def remove_build_images(client: docker.DockerClient, results: Path) -> None:
    for manifest_path in results.glob("*/manifest.json"):
        for build in json.loads(manifest_path.read_text()).get("builds", []):
            with contextlib.suppress(docker.errors.APIError):
                client.images.remove(build["image_tag"])


@pytest.fixture(scope="module")
def real_runs(tmp_path_factory, cache_dir, base_image, docker_client):
    tmp = tmp_path_factory.mktemp("gate-runs")
    write_sdk(tmp / "fast", "1.0", "")
    write_sdk(tmp / "slow", "2.0", SLOW_IMPORT)
    (tmp / "scenario.toml").write_text(SCENARIO)
    first = run_coldstart(
        tmp, cache_dir, "--gate", "--github", "--max-regression", "import gatesdk=10"
    )
    outputs = parse_github_output((tmp / "output").read_text())
    second = run_coldstart(tmp, cache_dir, "--gate", "--max-regression", "*=1000000")
    yield RealRuns(tmp / "results", first, second, outputs)
    remove_build_images(docker_client, tmp / "results")


@pytest.mark.docker
def test_real_run_gate_fails_on_regression(real_runs):
    assert real_runs.first.returncode == 1, real_runs.first.stderr
    failed = [
        line
        for line in real_runs.first.stderr.splitlines()
        if line.startswith("gate failed:")
    ]
    assert len(failed) == 1
    assert failed[0].startswith("gate failed: candidate / import gatesdk: +")
    assert failed[0].endswith("exceeds the maximum regression of 10%")


@pytest.mark.docker
def test_real_run_github_outputs(real_runs):
    outputs = real_runs.outputs
    assert outputs["verdict"] == "fail"
    assert outputs["import-gatesdk-verdict"] == "slower"
    assert float(outputs["import-gatesdk-ratio"]) > 5
    assert float(outputs["import-gatesdk-median-candidate"]) > 0.25
    report = Path(outputs["report"]).read_text()
    assert report.startswith("<!-- coldstart-report -->\n")
    assert "- **FAILED**: candidate / import gatesdk: +" in report


@pytest.mark.docker
def test_real_run_gate_passes_high_threshold(real_runs):
    assert real_runs.second.returncode == 0, real_runs.second.stderr
    assert "gate failed" not in real_runs.second.stderr


@pytest.mark.docker
def test_index_after_two_real_runs(real_runs):
    connection = sqlite3.connect(real_runs.results / "index.sqlite")
    rows = connection.execute(
        "SELECT run_id, build, phase, n, version, status, wall_median, cpu_median, "
        "wall_ci_low, wall_ci_high FROM phase_results ORDER BY started_at, build, phase"
    ).fetchall()
    run_ids = sorted(path.name for path in real_runs.results.iterdir() if path.is_dir())
    assert len(run_ids) == 2
    assert [row[:3] for row in rows] == [
        (run_id, build, phase)
        for run_id in run_ids
        for build in ("baseline", "candidate")
        for phase in ("import gatesdk", "total")
    ]
    assert {row[3] for row in rows} == {4}
    assert {(row[1], row[4]) for row in rows} == {
        ("baseline", "1.0"),
        ("candidate", "2.0"),
    }
    assert {row[5] for row in rows} == {"complete"}
    for row in rows:
        assert row[8] <= row[6] <= row[9]
        if row[1] == "candidate":
            assert row[7] > 0.25
        else:
            assert row[7] < 0.1


@pytest.mark.docker
def test_history_plot_after_real_runs(real_runs, capsys):
    plot = real_runs.results.parent / "history.png"
    result = run_cli(
        capsys,
        "history",
        "--results",
        str(real_runs.results),
        "--phase",
        "import gatesdk",
        "--build",
        "candidate",
        "--plot",
        str(plot),
    )
    assert result.returncode == 0, result.stderr
    assert "import gatesdk: median wall time per run" in result.stdout
    assert plot.read_bytes().startswith(PNG_SIGNATURE)
    assert plot.stat().st_size > 10_000

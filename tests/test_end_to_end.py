"""The main job end to end: the real CLI, real builds, real throttled containers."""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from harness.errors import ExitCode

pytestmark = pytest.mark.docker

PYPROJECT = """\
[build-system]
requires = ["setuptools>=61"]
build-backend = "setuptools.build_meta"

[project]
name = "slowsdk"
version = "{version}"
"""

# Burns a fixed amount of CPU at import: a loop count, not a duration, so the
# work is the same under any CPU quota.
BURN = """\
__version__ = "{version}"
_total = 0
for _i in range({loops}):
    _total += _i * _i
"""

SCENARIO = """\
name = "slowsdk-import"
description = "import the test SDK, then read its version"

[budgets]
init = 10.0
invoke = 3.0

[[phases]]
name = "import slowsdk"
budget = "init"
code = "import slowsdk"

[[phases]]
name = "version"
budget = "invoke"
code = "slowsdk.__version__"
"""

Run = Callable[..., subprocess.CompletedProcess]


@dataclass(frozen=True)
class StoredRun:
    """A finished ``coldstart run`` and the files it wrote."""

    result: subprocess.CompletedProcess
    path: Path
    manifest: dict
    raw: list[dict]
    summary: dict
    report: str


@pytest.fixture(scope="module")
def coldstart(cache_dir: Path, base_image) -> Run:
    """Run the CLI in a subprocess with the session's build cache."""
    environment = dict(os.environ, COLDSTART_CACHE=str(cache_dir))

    def run(*arguments: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", "harness", *arguments],
            capture_output=True,
            text=True,
            env=environment,
            cwd=cwd,
            timeout=900,
        )

    return run


def load_run(result: subprocess.CompletedProcess, results: Path) -> StoredRun:
    (path,) = [entry for entry in results.iterdir() if entry.is_dir()]
    return StoredRun(
        result=result,
        path=path,
        manifest=json.loads((path / "manifest.json").read_text()),
        raw=[
            json.loads(line) for line in (path / "raw.jsonl").read_text().splitlines()
        ],
        summary=json.loads((path / "summary.json").read_text()),
        report=(path / "report.md").read_text(),
    )


def phase_values(raw: list[dict], build: str, phase: str, key: str) -> list[float]:
    return [
        entry[key]
        for record in raw
        if record["build"] == build
        and record["status"] == "ok"
        and not record.get("warmup")
        for entry in record["phases"]
        if entry["name"] == phase
    ]


def summary_median(summary: dict, build: str, phase: str, metric: str) -> float:
    for entry in summary["stats"]:
        if entry["build"] == build and entry["phase"] == phase:
            return entry[metric]["median"]
    raise AssertionError(f"no summary for {build} / {phase}")


def write_sdk(path: Path, version: str, loops: int) -> None:
    (path / "slowsdk").mkdir(parents=True, exist_ok=True)
    (path / "pyproject.toml").write_text(PYPROJECT.format(version=version))
    source = BURN.format(version=version, loops=loops)
    (path / "slowsdk" / "__init__.py").write_text(source)


def git(path: Path, *arguments: str) -> str:
    return subprocess.run(
        ["git", "-C", str(path), "-c", "user.name=t", "-c", "user.email=t@t.invalid"]
        + list(arguments),
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()


@pytest.fixture(scope="module")
def stripe_run(coldstart: Run, tmp_path_factory) -> StoredRun:
    results = tmp_path_factory.mktemp("stripe-results")
    result = coldstart(
        "run",
        "--baseline", "stripe==15.3.0",
        "--candidate", "stripe==15.3.1",
        "-n", "3",
        "--breakdown", "0",
        "--quiet",
        "--results", str(results),
    )  # fmt: skip
    assert result.returncode == ExitCode.OK, result.stderr
    return load_run(result, results)


def test_stripe_client_median_falls_threefold(stripe_run: StoredRun):
    baseline = phase_values(stripe_run.raw, "baseline", "StripeClient()", "wall_s")
    candidate = phase_values(stripe_run.raw, "candidate", "StripeClient()", "wall_s")
    assert len(baseline) == 3
    assert len(candidate) == 3
    assert statistics.median(candidate) * 3 <= statistics.median(baseline)


def test_stripe_import_costs_more_cpu_in_candidate(stripe_run: StoredRun):
    baseline = phase_values(stripe_run.raw, "baseline", "import stripe", "cpu_s")
    candidate = phase_values(stripe_run.raw, "candidate", "import stripe", "cpu_s")
    assert statistics.median(candidate) > statistics.median(baseline)


def test_stripe_manifest_records_builds_and_image(stripe_run: StoredRun):
    manifest = stripe_run.manifest
    versions = {build["label"]: build["version"] for build in manifest["builds"]}
    assert versions == {"baseline": "15.3.0", "candidate": "15.3.1"}
    assert manifest["status"] == "complete"
    assert manifest["limits"]["cpus"] == 0.1
    assert manifest["base_image"]["requested"] == "python:3.11-slim"
    assert manifest["python_versions"]
    assert all(v.startswith("3.11.") for v in manifest["python_versions"])
    wheels = {
        w["filename"].split("-")[0] for b in manifest["builds"] for w in b["wheels"]
    }
    assert {"stripe", "requests"} <= wheels


def test_stripe_raw_is_interleaved(stripe_run: StoredRun):
    rounds: dict[int, list[str]] = {}
    for record in stripe_run.raw:
        rounds.setdefault(record["round"], []).append(record["build"])
    # Round 0 contains the one warm-up container per build.
    warmups = [record for record in stripe_run.raw if record.get("warmup")]
    assert [record["round"] for record in warmups] == [0, 0]
    assert len(rounds) == 4
    for builds in rounds.values():
        assert sorted(builds) == ["baseline", "candidate"]


def test_stripe_summary_agrees_with_raw(stripe_run: StoredRun):
    for build in ("baseline", "candidate"):
        for phase in ("import stripe", "StripeClient()"):
            values = phase_values(stripe_run.raw, build, phase, "wall_s")
            expected = statistics.median(values)
            actual = summary_median(stripe_run.summary, build, phase, "wall")
            assert actual == pytest.approx(expected, abs=1e-6)


def test_stripe_report_names_image_that_ran(stripe_run: StoredRun):
    image = stripe_run.manifest["base_image"]
    assert image["tag"] in stripe_run.report
    assert f"Python {image['python_version']}" in stripe_run.report
    if image["stand_in"]:
        assert "stand-in for python:3.11-slim" in stripe_run.report


def test_stripe_report_rerenders_from_raw(stripe_run: StoredRun, coldstart: Run):
    result = coldstart("report", str(stripe_run.path), "--format", "json")
    assert result.returncode == ExitCode.OK, result.stderr
    rendered = json.loads(result.stdout)
    for build in ("baseline", "candidate"):
        stored = summary_median(stripe_run.summary, build, "StripeClient()", "wall")
        again = summary_median(rendered, build, "StripeClient()", "wall")
        assert again == stored


def test_stripe_markdown_printed_matches_file(stripe_run: StoredRun, coldstart: Run):
    result = coldstart("report", str(stripe_run.path), "--format", "markdown")
    assert result.returncode == ExitCode.OK
    assert result.stdout.strip() == stripe_run.report.strip()


@pytest.fixture(scope="module")
def sdk_checkout(tmp_path_factory) -> Path:
    """A git checkout whose ``slow`` branch burns far more CPU at import."""
    path = tmp_path_factory.mktemp("checkouts") / "slowsdk"
    path.mkdir()
    git(path, "init", "--quiet", "--initial-branch=main")
    write_sdk(path, "1.0", loops=1_000)
    git(path, "add", ".")
    git(path, "commit", "--quiet", "-m", "Import cheaply")
    git(path, "tag", "v1.0")
    git(path, "checkout", "--quiet", "-b", "perf/slow-import")
    write_sdk(path, "1.1", loops=3_000_000)
    git(path, "commit", "--quiet", "-am", "Import expensively")
    git(path, "checkout", "--quiet", "main")
    (path.parent / "slowsdk.toml").write_text(SCENARIO)
    return path


def test_git_refs_show_slower_import(coldstart: Run, sdk_checkout: Path, tmp_path):
    scenario = sdk_checkout.parent / "slowsdk.toml"
    result = coldstart(
        "run",
        "--baseline", f"{sdk_checkout}@v1.0",
        "--candidate", f"{sdk_checkout}@perf/slow-import",
        "--scenario", str(scenario),
        "-n", "3",
        "--breakdown", "0",
        "--quiet",
        "--format", "json",
        "--results", str(tmp_path),
    )  # fmt: skip
    assert result.returncode == ExitCode.OK, result.stderr
    stored = load_run(result, tmp_path)
    commits = {b["label"]: b["commit"] for b in stored.manifest["builds"]}
    assert commits["baseline"] == git(sdk_checkout, "rev-parse", "v1.0")
    assert commits["candidate"] == git(sdk_checkout, "rev-parse", "perf/slow-import")
    baseline = summary_median(stored.summary, "baseline", "import slowsdk", "cpu")
    candidate = summary_median(stored.summary, "candidate", "import slowsdk", "cpu")
    assert candidate > 5 * baseline
    (comparison,) = [
        c
        for c in json.loads(result.stdout)["comparisons"]
        if c["phase"] == "import slowsdk"
    ]
    assert comparison["delta"] > 0


def test_uninstallable_build_exits_2_and_keeps_other(
    coldstart: Run, sdk_checkout: Path, tmp_path
):
    scenario = sdk_checkout.parent / "slowsdk.toml"
    result = coldstart(
        "run",
        "--baseline", f"{sdk_checkout}@v1.0",
        "--candidate", "coldstart-no-such-package-zzz==1.0",
        "--scenario", str(scenario),
        "-n", "2",
        "--quiet",
        "--results", str(tmp_path),
    )  # fmt: skip
    assert result.returncode == ExitCode.INVALID_INPUT
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith(
        "error: build 'candidate' failed: No matching distribution found for "
        "coldstart-no-such-package-zzz==1.0 (see "
    )
    assert "Traceback" not in result.stderr
    stored = load_run(result, tmp_path)
    failed = [r for r in stored.raw if r["status"] == "failed"]
    assert [(r["build"], r["failure"]) for r in failed] == [("candidate", "build")]
    assert len(phase_values(stored.raw, "baseline", "import slowsdk", "wall_s")) == 2
    assert stored.manifest["failed_builds"][0]["label"] == "candidate"
    assert stored.manifest["status"] == "complete"
    # The cause appears once, in the final error line.
    assert result.stderr.count("No matching distribution") == 1
    assert "Budgets passed (2 not measured)." in stored.report
    assert "| candidate | init | 10.000 s | import slowsdk | 0 | 0 | n/a | not " in (
        stored.report
    )
    assert (
        "Build candidate (coldstart-no-such-package-zzz==1.0) was not measured"
        in stored.report
    )
    assert "not built" not in stored.report


def test_import_that_raises_exits_4_and_keeps_other(
    coldstart: Run, sdk_checkout: Path, tmp_path
):
    broken = tmp_path / "brokensdk"
    broken.mkdir()
    write_sdk(broken, "9.9", loops=10)
    init = broken / "slowsdk" / "__init__.py"
    init.write_text(init.read_text() + 'raise RuntimeError("no credentials found")\n')
    scenario = sdk_checkout.parent / "slowsdk.toml"
    results = tmp_path / "results"
    result = coldstart(
        "run",
        "--baseline", f"{sdk_checkout}@v1.0",
        "--candidate", str(broken),
        "--scenario", str(scenario),
        "-n", "2",
        "--quiet",
        "--results", str(results),
    )  # fmt: skip
    assert result.returncode == ExitCode.MEASUREMENT_FAILED
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith(
        "error: 2 of 4 iterations failed (first: build 'candidate', "
    )
    assert "RuntimeError: no credentials found" in last
    assert "Traceback" not in result.stderr
    stored = load_run(result, results)
    failures = {r["failure"] for r in stored.raw if r["build"] == "candidate"}
    assert failures == {"phase-raised"}
    assert len(phase_values(stored.raw, "baseline", "import slowsdk", "wall_s")) == 2
    assert "RuntimeError: no credentials found" in stored.report

"""Tests for the run directory: manifest, raw records and write failures."""

from __future__ import annotations

import json
import logging
import os
import re
import subprocess
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import pytest

from harness.errors import ExitCode, InvalidInput
from harness.models import (
    RESULT_FORMAT,
    FailureKind,
    IterationRecord,
    Limits,
    PhaseResult,
)
from harness.results import (
    ResultsUnwritable,
    RunDirectory,
    new_run_id,
)


def make_record(iteration: int, build: str = "baseline") -> IterationRecord:
    return IterationRecord(
        build=build,
        iteration=iteration,
        round=iteration,
        started_at="2026-12-04T15:43:00+00:00",
        container_s=1.25,
        phases=(
            PhaseResult(
                name="import stripe",
                wall_s=0.9,
                cpu_s=0.1,
                cgroup={"nr_periods": 9, "nr_throttled": 8},
                modules=("stripe", "uuid"),
            ),
        ),
        python_version="3.11.2",
        peak_rss_kb=20480,
        telemetry={"exit_code": 0},
    )


@pytest.fixture
def run_dir(tmp_path: Path) -> RunDirectory:
    directory = RunDirectory.create(tmp_path / "results", "20261204-154300-abcd")
    directory.write_manifest({"run_id": directory.run_id, "status": "running"})
    return directory


def test_new_run_id_format() -> None:
    now = datetime(2026, 12, 4, 15, 43, 0, tzinfo=UTC)
    run_id = new_run_id(now)
    assert re.fullmatch(r"20261204-154300-[0-9a-f]{4}", run_id)


def test_create_makes_directory(tmp_path: Path) -> None:
    directory = RunDirectory.create(tmp_path / "new" / "results", "run-1")
    assert directory.path.is_dir()
    assert directory.run_id == "run-1"
    assert directory.raw_path == tmp_path / "new" / "results" / "run-1" / "raw.jsonl"


def test_create_rejects_existing(run_dir: RunDirectory) -> None:
    with pytest.raises(InvalidInput) as caught:
        RunDirectory.create(run_dir.path.parent, run_dir.run_id)
    assert str(caught.value) == (
        f"results directory already exists: {run_dir.path} (choose another run id)"
    )


def test_open_rejects_plain_directory(tmp_path: Path) -> None:
    with pytest.raises(InvalidInput) as caught:
        RunDirectory.open(tmp_path)
    assert str(caught.value) == (
        f"not a coldstart run directory: {tmp_path} (no manifest.json)"
    )


def test_open_reads_existing(run_dir: RunDirectory) -> None:
    reopened = RunDirectory.open(run_dir.path)
    assert reopened.read_manifest()["status"] == "running"


def test_manifest_carries_format(run_dir: RunDirectory) -> None:
    on_disk = json.loads(run_dir.manifest_path.read_text())
    assert on_disk["format"] == RESULT_FORMAT
    assert on_disk["run_id"] == run_dir.run_id


def test_update_manifest_keeps_other_fields(run_dir: RunDirectory) -> None:
    run_dir.update_manifest(status="complete", finished_at="later")
    manifest = run_dir.read_manifest()
    assert manifest["status"] == "complete"
    assert manifest["finished_at"] == "later"
    assert manifest["run_id"] == run_dir.run_id


def test_manifest_write_leaves_no_temporary(run_dir: RunDirectory) -> None:
    for status in ("a", "b", "c"):
        run_dir.update_manifest(status=status)
    assert sorted(p.name for p in run_dir.path.iterdir()) == ["manifest.json"]


def test_manifest_write_is_atomic(run_dir: RunDirectory) -> None:
    """A reader in another process always reads a complete manifest."""
    reader = subprocess.Popen(
        [
            "python3",
            "-c",
            "import json, sys\n"
            "for _ in range(3000):\n"
            "    json.load(open(sys.argv[1]))\n",
            str(run_dir.manifest_path),
        ],
        stderr=subprocess.PIPE,
    )
    big = ["x" * 1000] * 200
    while reader.poll() is None:
        run_dir.update_manifest(padding=big)
    _, stderr = reader.communicate()
    assert reader.returncode == 0, stderr.decode()


def test_newer_manifest_format_rejected(run_dir: RunDirectory) -> None:
    run_dir.manifest_path.write_text(json.dumps({"format": RESULT_FORMAT + 1}))
    with pytest.raises(InvalidInput) as caught:
        RunDirectory.open(run_dir.path)
    assert str(caught.value) == (
        f"{run_dir.manifest_path} uses result format {RESULT_FORMAT + 1}, but this "
        f"coldstart reads format {RESULT_FORMAT} and older (upgrade coldstart)"
    )


def test_manifest_without_format_rejected(run_dir: RunDirectory) -> None:
    run_dir.manifest_path.write_text("{}")
    with pytest.raises(InvalidInput) as caught:
        run_dir.read_manifest()
    assert str(caught.value) == (
        f"invalid {run_dir.manifest_path}: missing or invalid 'format' field"
    )


def test_corrupt_manifest_rejected(run_dir: RunDirectory) -> None:
    run_dir.manifest_path.write_text("{not json")
    with pytest.raises(InvalidInput) as caught:
        run_dir.read_manifest()
    assert str(caught.value).startswith(f"cannot read {run_dir.manifest_path}: ")


def test_records_round_trip(run_dir: RunDirectory) -> None:
    failed = IterationRecord(
        build="candidate",
        iteration=2,
        round=2,
        started_at="2026-12-04T15:44:00+00:00",
        container_s=3.0,
        failure=FailureKind.TIMEOUT,
        error="phase 'import stripe' timed out after 3 s",
    )
    written = [make_record(1), failed, make_record(3)]
    for record in written:
        run_dir.append_record(record)
    assert run_dir.read_records() == written


def test_each_record_is_one_line(run_dir: RunDirectory) -> None:
    run_dir.append_record(make_record(1))
    run_dir.append_record(make_record(2))
    lines = run_dir.raw_path.read_text().split("\n")
    assert len(lines) == 3
    assert lines[2] == ""
    assert json.loads(lines[0])["format"] == RESULT_FORMAT


def test_no_records_yet(run_dir: RunDirectory) -> None:
    assert run_dir.read_records() == []


def test_truncated_last_line_ignored(
    run_dir: RunDirectory, caplog: pytest.LogCaptureFixture
) -> None:
    run_dir.append_record(make_record(1))
    run_dir.append_record(make_record(2))
    data = run_dir.raw_path.read_bytes()
    run_dir.raw_path.write_bytes(data[:-40])
    with caplog.at_level(logging.WARNING, logger="harness.results"):
        records = run_dir.read_records()
    assert [record.iteration for record in records] == [1]
    assert f"ignoring truncated last line 2 of {run_dir.raw_path}" in caplog.text


def test_append_after_crash_drops_partial_line(run_dir: RunDirectory) -> None:
    run_dir.append_record(make_record(1))
    with run_dir.raw_path.open("ab") as raw:
        raw.write(b'{"format": 1, "build": "base')
    reopened = RunDirectory.open(run_dir.path)
    reopened.append_record(make_record(2))
    assert [record.iteration for record in reopened.read_records()] == [1, 2]


@pytest.mark.parametrize(
    ("line", "problem"),
    [
        ("not json", "invalid JSON (Expecting value: line 1 column 1 (char 0))"),
        ("[1, 2]", "expected a JSON object"),
        ('{"build": "base"}', "missing or invalid 'format' field"),
        ('{"format": 1, "build": "base"}', "invalid field (KeyError: 'iteration')"),
    ],
)
def test_bad_middle_line_skipped_with_warning(
    run_dir: RunDirectory, caplog: pytest.LogCaptureFixture, line: str, problem: str
) -> None:
    run_dir.append_record(make_record(1))
    with run_dir.raw_path.open("a") as raw:
        raw.write(line + "\n")
    run_dir.append_record(make_record(3))
    with caplog.at_level(logging.WARNING, logger="harness.results"):
        records = run_dir.read_records()
    assert [record.iteration for record in records] == [1, 3]
    assert caplog.messages == [f"skipping line 2 of {run_dir.raw_path}: {problem}"]


def test_run_files_readable_by_others(run_dir: RunDirectory) -> None:
    previous = os.umask(0o022)
    try:
        run_dir.write_text("report.md", "report\n")
        run_dir.update_manifest(status="complete")
        run_dir.append_record(make_record(1))
    finally:
        os.umask(previous)
    for path in (run_dir.report_path, run_dir.manifest_path, run_dir.raw_path):
        assert path.stat().st_mode & 0o777 == 0o644, path


def test_newer_record_format_rejected(run_dir: RunDirectory) -> None:
    data = make_record(1).to_dict()
    data["format"] = RESULT_FORMAT + 1
    run_dir.raw_path.write_text(json.dumps(data) + "\n")
    with pytest.raises(InvalidInput) as caught:
        run_dir.read_records()
    assert f"uses result format {RESULT_FORMAT + 1}" in str(caught.value)


def test_write_text_replaces_file(run_dir: RunDirectory) -> None:
    run_dir.write_text("report.md", "first\n")
    run_dir.write_text("report.md", "second\n")
    assert run_dir.report_path.read_text() == "second\n"


def test_write_text_rejects_paths(run_dir: RunDirectory) -> None:
    with pytest.raises(ValueError):
        run_dir.write_text("../escape.md", "x")
    assert not (run_dir.path.parent / "escape.md").exists()


def test_disk_full_gives_exact_error(run_dir: RunDirectory) -> None:
    """/dev/full fails every write with ENOSPC, as a full disk does."""
    run_dir.raw_path.symlink_to("/dev/full")
    with pytest.raises(ResultsUnwritable) as caught:
        run_dir.append_record(make_record(1))
    assert str(caught.value) == (
        f"cannot write results to {run_dir.raw_path}: No space left on device "
        "(free space or pass a writable directory with --results)"
    )
    assert caught.value.exit_code == ExitCode.INVALID_INPUT


@pytest.fixture
def read_only_dir(run_dir: RunDirectory) -> Iterator[tuple[RunDirectory, str]]:
    """Make the run directory unwritable and return the expected cause.

    Root ignores permission bits, so as root the directory is made immutable
    with chattr, which fails writes with EPERM instead of EACCES.
    """
    if os.geteuid() == 0:
        subprocess.run(["chattr", "+i", str(run_dir.path)], check=True)
        yield run_dir, "Operation not permitted"
        subprocess.run(["chattr", "-i", str(run_dir.path)], check=True)
    else:
        run_dir.path.chmod(0o555)
        yield run_dir, "Permission denied"
        run_dir.path.chmod(0o755)


def test_unwritable_directory_gives_exact_error(
    read_only_dir: tuple[RunDirectory, str],
) -> None:
    run_dir, cause = read_only_dir
    with pytest.raises(ResultsUnwritable) as caught:
        run_dir.append_record(make_record(1))
    assert str(caught.value) == (
        f"cannot write results to {run_dir.raw_path}: {cause} "
        "(pass a writable directory with --results)"
    )
    with pytest.raises(ResultsUnwritable) as caught:
        run_dir.update_manifest(status="failed")
    assert str(caught.value) == (
        f"cannot write results to {run_dir.manifest_path}: {cause} "
        "(pass a writable directory with --results)"
    )
    assert run_dir.read_manifest()["status"] == "running"


def test_create_in_unwritable_root(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(ResultsUnwritable) as caught:
        RunDirectory.create(blocker, "run")
    assert str(caught.value) == (
        f"cannot write results to {blocker}: File exists "
        "(pass a writable directory with --results)"
    )


def test_warmup_flag_round_trips(run_dir: RunDirectory) -> None:
    run_dir.append_record(replace(make_record(1), warmup=True))
    run_dir.append_record(make_record(2))
    first, second = run_dir.read_records()
    assert first.warmup is True
    assert second.warmup is False


def test_record_without_warmup_field_loads() -> None:
    data = make_record(1).to_dict()
    del data["warmup"]
    assert IterationRecord.from_dict(data).warmup is False


def test_limits_from_old_manifest_get_defaults() -> None:
    limits = Limits.from_dict({"cpus": 0.25, "memory_bytes": None, "timeout_s": 60})
    assert limits.cpu_period_us == 100_000
    assert limits.init_cpus is None
    assert Limits.from_dict(limits.to_dict()) == limits

"""Tests for how the pipeline marks a run that a signal stopped."""

from __future__ import annotations

import json
import signal
from pathlib import Path

import pytest
from stored_runs import copy_run

from harness.environment import Environment
from harness.errors import ExitCode, Interrupted
from harness.pipeline import stop_on_failure
from harness.results import RunDirectory


def open_running_copy(tmp_path: Path) -> RunDirectory:
    path = copy_run(tmp_path / "run", edit=lambda m: m.update(status="running"))
    return RunDirectory.open(path)


def test_ctrl_c_while_preparing_marks_run_interrupted(tmp_path: Path) -> None:
    run_dir = open_running_copy(tmp_path)
    stop = stop_on_failure(Environment(), run_dir)
    with pytest.raises(Interrupted) as caught, stop:
        raise KeyboardInterrupt
    assert caught.value.exit_code == ExitCode.INTERRUPTED
    assert str(caught.value) == (
        f"interrupted by signal 2; the run so far is in {run_dir.path}"
    )
    manifest = json.loads(run_dir.manifest_path.read_text())
    assert manifest["status"] == "interrupted"
    assert manifest["stop_reason"] == "interrupted by signal 2"


def test_signal_while_measuring_names_run_directory(tmp_path: Path) -> None:
    run_dir = open_running_copy(tmp_path)
    stop = stop_on_failure(Environment(), run_dir)
    with pytest.raises(Interrupted) as caught, stop:
        raise Interrupted(signal.SIGTERM)
    assert caught.value.exit_code == 143
    assert str(caught.value).endswith(f"the run so far is in {run_dir.path}")
    manifest = json.loads(run_dir.manifest_path.read_text())
    assert manifest["status"] == "interrupted"

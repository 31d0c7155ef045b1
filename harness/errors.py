"""Exit codes and the user-facing exception hierarchy.

Every failure a user can cause or fix raises a subclass of ``ColdstartError``.
The CLI catches it once, prints a single ``error:`` line and exits with the
subclass's code. Anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

from enum import IntEnum
from pathlib import Path


class ExitCode(IntEnum):
    """Process exit status, one value per failure class."""

    OK = 0
    GATE_FAILED = 1
    INVALID_INPUT = 2
    ENGINE_UNAVAILABLE = 3
    MEASUREMENT_FAILED = 4
    INTERRUPTED = 130
    TERMINATED = 143


EXIT_CODE_HELP = """\
Exit codes:
  0    success
  1    a budget or a regression gate failed
  2    invalid input: option, build spec, scenario, or a build that fails to install
  3    the Docker engine or the base image is unavailable
  4    iterations failed: a phase raised, timed out or ran out of memory
  130  interrupted (SIGINT)
  143  terminated (SIGTERM)"""


REPORT_EXIT_CODE_HELP = """\
Exit codes:
  0    the report was written, whatever its budgets and verdicts
       (`coldstart gate` exits 1 when a budget or gate fails)
  2    invalid input: not a run directory, or an unreadable manifest
  130  interrupted (SIGINT)"""


class ColdstartError(Exception):
    """A failure the user can act on; the message names the value and the fix."""

    exit_code: ExitCode = ExitCode.INVALID_INPUT


class InvalidInput(ColdstartError):
    """An option, build spec, scenario file or run directory is invalid."""

    exit_code = ExitCode.INVALID_INPUT


class BuildFailed(InvalidInput):
    """A build could not be resolved, built or installed into its image."""

    def __init__(self, label: str, cause: str) -> None:
        super().__init__(f"build {label!r} failed: {cause}")
        self.label = label
        self.cause = cause


class EngineUnavailable(ColdstartError):
    """The Docker engine cannot be reached or the base image cannot be had."""

    exit_code = ExitCode.ENGINE_UNAVAILABLE


class MeasurementFailed(ColdstartError):
    """Iterations failed, so the run has no complete result for some build."""

    exit_code = ExitCode.MEASUREMENT_FAILED


class GateFailed(ColdstartError):
    """A budget or regression gate failed; the report has already been written."""

    exit_code = ExitCode.GATE_FAILED


class Interrupted(ColdstartError):
    """The run was stopped by a signal; what was measured is on disk."""

    def __init__(self, signal_number: int, run_path: Path | None = None) -> None:
        message = f"interrupted by signal {signal_number}"
        if run_path is not None:
            message += f"; the run so far is in {run_path}"
        super().__init__(message)
        self.signal_number = signal_number
        self.run_path = run_path
        self.exit_code = ExitCode(128 + signal_number)

"""Host side of the probe: the container command and the parser for its record.

The probe itself is ``probe_main.py``. Its source is sent with every container
command, so changing it never invalidates a build image.
"""

from __future__ import annotations

import inspect
import json
from functools import cache
from typing import Any

from harness import probe_main
from harness.models import Scenario
from harness.probe_main import (
    PHASE_DONE_MARKER,
    PHASE_MARKER,
    QUOTA_OPTION,
    RECORD_MARKER,
)

PROBE_VERSION = 1
EXCERPT_CHARS = 300


class ProbeOutputError(Exception):
    """The probe's record is missing, truncated or not valid JSON.

    ``excerpt`` contains the end of the output for the failure message.
    """

    def __init__(self, problem: str, excerpt: str) -> None:
        super().__init__(f"{problem}; output ends with: {excerpt!r}")
        self.problem = problem
        self.excerpt = excerpt


@cache
def probe_source() -> str:
    # inspect reads the source through the module's loader. importlib.resources
    # fails with NotADirectoryError outside the checkout when the package is an
    # editable install (setuptools 65.5), because ``harness`` then imports as a
    # namespace package.
    return inspect.getsource(probe_main)


def probe_command(
    scenario: Scenario, quota_switch: tuple[int, int] | None = None
) -> list[str]:
    """Return the container command that runs the scenario's phases once.

    ``quota_switch`` is (phase index, quota in microseconds): the probe waits
    for that CPU quota before that phase.
    """
    command = ["python3", "-c", probe_source()]
    if quota_switch is not None:
        index, quota = quota_switch
        command.append(f"{QUOTA_OPTION}{index}:{quota}")
    command.append(scenario.setup)
    for phase in scenario.phases:
        command += [phase.name, phase.code]
    return command


def parse_probe_output(stdout: bytes) -> dict[str, Any]:
    """Return the probe's record from a container's stdout.

    The record is the last line that starts with the marker, so anything the
    code under test printed before it is ignored. Raises ProbeOutputError.
    """
    text = stdout.decode("utf-8", errors="replace")
    line = find_marked_line("\n" + text, RECORD_MARKER)
    if line is None:
        raise ProbeOutputError("no probe record in the output", excerpt_tail(text))
    try:
        record = json.loads(line)
    except json.JSONDecodeError as error:
        problem = f"probe record is not valid JSON ({error.msg} at char {error.pos})"
        raise ProbeOutputError(problem, excerpt_tail(text)) from None
    if not isinstance(record, dict) or record.get("probe") != PROBE_VERSION:
        problem = f"probe record is not a version {PROBE_VERSION} record"
        raise ProbeOutputError(problem, excerpt_tail(text))
    return record


def find_last_phase(stderr: bytes) -> str | None:
    """Return the name of the last phase the probe announced on stderr."""
    text = stderr.decode("utf-8", errors="replace")
    line = find_marked_line("\n" + text, PHASE_MARKER)
    return line.strip() or None if line is not None else None


def find_finished_phases(stderr: bytes) -> list[dict[str, Any]]:
    """Return the phases the probe reported as finished on stderr, in order.

    Each is a dict in the form of a record's phase; a line that cannot be
    parsed (cut off by a kill) ends the list.
    """
    text = "\n" + stderr.decode("utf-8", errors="replace")
    phases = []
    for chunk in text.split("\n" + PHASE_DONE_MARKER)[1:]:
        line, newline, _ = chunk.partition("\n")
        phase = parse_finished_phase(line) if newline else None
        if phase is None:
            break
        phases.append(phase)
    return phases


def parse_finished_phase(line: str) -> dict[str, Any] | None:
    """Parse one ``PHASE_DONE_MARKER`` line; None if it is malformed."""
    fields_text, found, name = line.partition(" name=")
    if not found:
        return None
    fields = dict(field.partition("=")[::2] for field in fields_text.split(" "))
    try:
        phase: dict[str, Any] = {
            "name": name,
            "wall_s": float(fields["wall_s"]),
            "cpu_s": float(fields["cpu_s"]),
            "modules": [m for m in fields.get("modules", "").split(",") if m],
        }
        cgroup = {
            key.removeprefix("cgroup."): parse_number(value)
            for key, value in fields.items()
            if key.startswith("cgroup.")
        }
    except (KeyError, ValueError):
        return None
    if cgroup:
        phase["cgroup"] = cgroup
    return phase


def parse_number(text: str) -> int | float | None:
    if text == "none":
        return None
    try:
        return int(text)
    except ValueError:
        return float(text)


def find_marked_line(text: str, marker: str) -> str | None:
    """Return the rest of the last line that starts with ``marker``."""
    start = text.rfind("\n" + marker)
    if start < 0:
        return None
    return text[start + 1 + len(marker) :].split("\n", 1)[0]


def excerpt_tail(text: str, size: int = EXCERPT_CHARS) -> str:
    """Return the last ``size`` characters of ``text``, marked when cut."""
    text = text.strip()
    if len(text) <= size:
        return text
    return "..." + text[-size:]

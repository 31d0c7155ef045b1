"""Copies of the stored fixture run, edited for tests of gates and comparisons."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

FIXTURE_RUN = Path(__file__).parent / "fixtures" / "stripe-lambda"
BASELINE = "15.3.0"
CANDIDATE = "15.3.1"
# A build label that tries Markdown, HTML, a mention, a link and a new line.
HOSTILE_LABEL = "evil|<b>x</b> @org/team [a](http://e.example)\nverdict=pass"


def copy_run(
    destination: Path,
    *,
    relabel: dict[str, str] | None = None,
    edit: Callable[[dict[str, Any]], None] | None = None,
    drop_failed: bool = False,
) -> Path:
    """Copy the fixture run to ``destination``, renaming builds and editing it.

    ``relabel`` maps old build labels to new ones in the manifest and in every
    record; ``edit`` changes the manifest in place after that. The fixture has
    one timed-out iteration, which ``drop_failed`` leaves out.
    """
    shutil.copytree(FIXTURE_RUN, destination)
    for name in ("expected.md", "expected.json"):
        (destination / name).unlink()
    relabel = relabel or {}
    manifest = json.loads((destination / "manifest.json").read_text())
    manifest["baseline"] = relabel.get(manifest["baseline"], manifest["baseline"])
    for build in manifest["builds"]:
        build["label"] = relabel.get(build["label"], build["label"])
    if edit is not None:
        edit(manifest)
    (destination / "manifest.json").write_text(json.dumps(manifest, indent=2))
    lines = []
    for line in (destination / "raw.jsonl").read_text().splitlines():
        record = json.loads(line)
        if drop_failed and record["status"] == "failed":
            continue
        record["build"] = relabel.get(record["build"], record["build"])
        lines.append(json.dumps(record))
    (destination / "raw.jsonl").write_text("\n".join(lines) + "\n")
    return destination


def parse_github_output(text: str) -> dict[str, str]:
    """Parse a GITHUB_OUTPUT file as GitHub Actions does, multiline form included."""
    outputs: dict[str, str] = {}
    lines = iter(text.split("\n"))
    for line in lines:
        if not line:
            continue
        if "<<" in line and ("=" not in line or line.index("<<") < line.index("=")):
            name, delimiter = line.split("<<", 1)
            value_lines = []
            for value_line in lines:
                if value_line == delimiter:
                    break
                value_lines.append(value_line)
            else:
                raise ValueError(f"output {name!r}: delimiter {delimiter!r} not found")
            outputs[name] = "\n".join(value_lines)
        else:
            name, value = line.split("=", 1)
            outputs[name] = value
    return outputs


@dataclass(frozen=True)
class CliResult:
    """Exit status and captured output of one in-process CLI call."""

    returncode: int
    stdout: str
    stderr: str


def run_cli(capsys: pytest.CaptureFixture[str], *args: str) -> CliResult:
    """Run ``coldstart ARGS`` in this process; faster than a subprocess."""
    from harness.cli import main

    capsys.readouterr()
    try:
        main(list(args))
        code = 0
    except SystemExit as stop:
        code = int(stop.code or 0)
    captured = capsys.readouterr()
    return CliResult(code, captured.out, captured.err)

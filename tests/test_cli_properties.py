"""Property tests: any scenario file or build spec gets one clean result.

The CLI runs in-process through ``harness.cli.main``, with the experiment
itself replaced, so an input is either accepted (it reaches the experiment) or
rejected with exit 2 and a single ``error:`` line. A traceback is a bug.
"""

from __future__ import annotations

import contextlib
import io
import tempfile
from pathlib import Path
from typing import Any
from unittest import mock

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from harness.cli import main

SCENARIO_KEYS = ["name", "description", "packages", "setup", "env", "budgets"]
PHASE_KEYS = ["name", "code", "budget"]


class Accepted(Exception):
    """Raised in place of running the experiment once the input was accepted."""


def run_cli(argv: list[str]) -> tuple[int | None, str]:
    """Run the CLI in-process; return its exit status and stderr."""
    stderr = io.StringIO()
    with (
        mock.patch("harness.pipeline.run_experiment", side_effect=Accepted),
        contextlib.redirect_stderr(stderr),
        contextlib.redirect_stdout(io.StringIO()),
    ):
        try:
            main(argv)
        except Accepted:
            return None, stderr.getvalue()
        except SystemExit as stop:
            return int(stop.code or 0), stderr.getvalue()
    return 0, stderr.getvalue()


def assert_clean_result(code: int | None, stderr: str) -> None:
    assert "Traceback" not in stderr
    if code is None:
        return
    assert code == 2
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1
    assert lines[0].startswith("error: ")


def toml_value(value: Any) -> str:
    """Write a value as TOML, or as something close to TOML."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(item) for item in value) + "]"
    if isinstance(value, dict):
        pairs = (f"{key} = {toml_value(item)}" for key, item in value.items())
        return "{" + ", ".join(pairs) + "}"
    return str(value)


scalars = st.one_of(
    st.text(max_size=12),
    st.integers(-5, 50),
    st.floats(allow_nan=True, allow_infinity=True),
    st.booleans(),
)
values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.dictionaries(st.sampled_from(["a", "init", "X_1", "1"]), inner, max_size=3)
    ),
    max_leaves=6,
)
tables = st.dictionaries(st.sampled_from([*SCENARIO_KEYS, "other"]), values, max_size=6)
phases = st.lists(
    st.dictionaries(
        st.sampled_from([*PHASE_KEYS, "extra"]),
        st.one_of(st.sampled_from(["init", "import json", "pass", "x ="]), values),
        max_size=4,
    ),
    max_size=3,
)


def render_scenario(table: dict[str, Any], phase_tables: list[dict[str, Any]]) -> str:
    lines = [f"{key} = {toml_value(value)}" for key, value in table.items()]
    for phase in phase_tables:
        lines.append("[[phases]]")
        lines += [f"{key} = {toml_value(value)}" for key, value in phase.items()]
    return "\n".join(lines) + "\n"


@settings(max_examples=150, deadline=None)
@given(table=tables, phase_tables=phases, garbage=st.text(max_size=20))
def test_any_scenario_file_handled(
    table: dict[str, Any], phase_tables: list[dict[str, Any]], garbage: str
) -> None:
    document = render_scenario(table, phase_tables)
    for text in (document, document + garbage):
        with tempfile.TemporaryDirectory() as scratch:
            path = Path(scratch) / "scenario.toml"
            path.write_text(text, encoding="utf-8", errors="surrogatepass")
            argv = ["run", "--baseline", "a==1", "--candidate", "a==2"]
            code, stderr = run_cli([*argv, "--scenario", str(path)])
        assert_clean_result(code, stderr)


@settings(
    max_examples=300,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(spec=st.text(max_size=30), label=st.text(max_size=12))
def test_any_build_spec_handled(spec: str, label: str) -> None:
    for argv in (
        ["run", "--baseline", spec, "--candidate", "x==1"],
        ["run", "--build", f"{label}={spec}"],
    ):
        code, stderr = run_cli(argv)
        assert_clean_result(code, stderr)


@settings(max_examples=100, deadline=None)
@given(
    spec=st.sampled_from(
        ["..@", "/@HEAD", ".@--help", "./@x", "~@x", "a@b@c", "~0", "~nobody0@x"]
    )
)
def test_ref_like_specs_handled(spec: str) -> None:
    code, stderr = run_cli(["run", "--baseline", spec, "--candidate", "x==1"])
    assert_clean_result(code, stderr)

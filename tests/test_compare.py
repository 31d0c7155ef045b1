"""Comparing builds across two stored runs, and the refusals."""

from __future__ import annotations

import json

import pytest
from stored_runs import (
    BASELINE,
    CANDIDATE,
    HOSTILE_LABEL,
    copy_run,
    run_cli,
)

from harness.compare import compare_runs
from harness.errors import InvalidInput
from harness.export.markdown import escape_markdown

RUN_ID = "20261204-101500-a1b2"


@pytest.fixture
def coldstart(capsys):
    return lambda *args: run_cli(capsys, *args)


def test_baseline_of_a_against_candidate_of_b(tmp_path):
    run_a = copy_run(tmp_path / "a")
    run_b = copy_run(tmp_path / "b")
    comparison = compare_runs(run_a, run_b)
    assert (comparison.build_a, comparison.build_b) == (BASELINE, CANDIDATE)
    import_stripe = comparison.summary.comparisons[0]
    assert import_stripe.phase == "import stripe"
    assert import_stripe.result.verdict.value == "slower"
    assert import_stripe.result.n_baseline == 6
    assert import_stripe.result.n_candidate == 5
    assert comparison.summary.paired == ()


def test_same_build_in_both_runs_gets_run_ids(tmp_path):
    run_a = copy_run(tmp_path / "a")
    run_b = copy_run(
        tmp_path / "b", edit=lambda m: m.update(run_id="20261205-090000-ffff")
    )
    comparison = compare_runs(run_a, run_b, build_b=BASELINE)
    assert comparison.summary.builds == (
        f"{BASELINE} (run {RUN_ID})",
        f"{BASELINE} (run 20261205-090000-ffff)",
    )
    # The same data on both sides: every phase is unchanged.
    assert {c.result.ratio for c in comparison.summary.comparisons} == {1.0}


def test_compare_command_names_runs_and_builds(tmp_path, coldstart):
    run_a = copy_run(tmp_path / "a")
    run_b = copy_run(tmp_path / "b")
    result = coldstart("compare", str(run_a), str(run_b), "--format", "markdown")
    assert result.returncode == 0
    lines = result.stdout.splitlines()
    assert lines[0] == "<!-- coldstart-report -->"
    assert lines[1] == escape_markdown(
        f"Compares build 15.3.0 of run {RUN_ID} ({run_a}) as the baseline with "
        f"build 15.3.1 of run {RUN_ID} ({run_b}) as the candidate."
    )
    assert f"run {RUN_ID} vs {RUN_ID}" in result.stdout
    assert "Paired by round" not in result.stdout


def test_compare_json_lists_compared_runs(tmp_path, coldstart):
    run_a = copy_run(tmp_path / "a")
    run_b = copy_run(tmp_path / "b")
    result = coldstart("compare", str(run_a), str(run_b), "--format", "json")
    assert result.returncode == 0
    data = json.loads(result.stdout)
    assert data["compared_runs"] == [
        {"run_id": RUN_ID, "path": str(run_a), "build": BASELINE},
        {"run_id": RUN_ID, "path": str(run_b), "build": CANDIDATE},
    ]
    assert data["baseline"] == BASELINE


def test_compare_markdown_escapes_hostile_label(tmp_path, coldstart):
    run_a = copy_run(tmp_path / "a")
    run_b = copy_run(tmp_path / "b", relabel={CANDIDATE: HOSTILE_LABEL})
    result = coldstart("compare", str(run_a), str(run_b), "--format", "markdown")
    assert result.returncode == 0
    text = result.stdout
    assert "<b>x</b>" not in text
    assert "@org/team" not in text
    assert "[a](http" not in text
    assert "http://e.example" not in text
    assert "\nverdict=pass" not in text
    assert "evil&#124;&lt;b&gt;x&lt;/b&gt; &#64;org/team" in text.splitlines()[1]


def set_path(manifest: dict, dotted: str, value: object) -> None:
    *parents, key = dotted.split(".")
    for parent in parents:
        manifest = manifest[parent]
    manifest[key] = value


@pytest.mark.parametrize(
    ("field", "value", "shown_a", "shown_b"),
    [
        (
            "base_image.image_id",
            "sha256:0000",
            '"sha256:0b1c2d3e4f5a6b7c8d9e0f1a2b3c4d5e6f7a8b9c0d1e2f3a4b5c6d7e8f9a0b1c"',
            '"sha256:0000"',
        ),
        (
            "base_image.tag",
            "python:3.11-slim",
            '"coldstart-base:bookworm-python3.11"',
            '"python:3.11-slim"',
        ),
        ("base_image.python_version", "3.11.9", '"3.11.2"', '"3.11.9"'),
        ("python_versions", ["3.11.9"], "[]", '["3.11.9"]'),
        ("limits.cpus", 0.25, "0.1", "0.25"),
        ("limits.memory_bytes", 134217728, "null", "134217728"),
        ("limits.cpu_period_us", 50000, "null", "50000"),
        ("scenario.setup", "import os", '""', '"import os"'),
        ("scenario.env", {"EAGER": "1"}, "{}", '{"EAGER":"1"}'),
        ("scenario.packages", [], '["requests"]', "[]"),
    ],
)
def test_different_environment_rejected(
    tmp_path, coldstart, field, value, shown_a, shown_b
):
    run_a = copy_run(tmp_path / "a")
    run_b = copy_run(
        tmp_path / "b",
        edit=lambda m: (
            set_path(m, field, value),
            m.update(run_id="20261205-090000-ffff"),
        ),
    )
    result = coldstart("compare", str(run_a), str(run_b))
    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr.strip().splitlines() == [
        f"error: cannot compare run {RUN_ID} with run 20261205-090000-ffff: "
        f"{field} differs ({shown_a} in {RUN_ID}, {shown_b} in "
        "20261205-090000-ffff); compare runs made with the same base image, "
        "limits and scenario"
    ]


def test_different_phase_code_rejected(tmp_path):
    def edit(manifest):
        manifest["scenario"]["phases"][1]["code"] = "stripe.StripeClient('x')"

    run_a = copy_run(tmp_path / "a")
    run_b = copy_run(tmp_path / "b", edit=edit)
    with pytest.raises(InvalidInput) as caught:
        compare_runs(run_a, run_b)
    message = str(caught.value)
    assert "scenario.phases differs" in message
    assert "stripe.StripeClient('x')" in message


def test_different_timeout_accepted(tmp_path):
    run_a = copy_run(tmp_path / "a")
    run_b = copy_run(tmp_path / "b", edit=lambda m: set_path(m, "limits.timeout_s", 5))
    assert compare_runs(run_a, run_b).build_b == CANDIDATE


def test_unknown_build_rejected(tmp_path, coldstart):
    run_a = copy_run(tmp_path / "a")
    run_b = copy_run(tmp_path / "b")
    result = coldstart("compare", str(run_a), str(run_b), "--build-b", "main")
    assert result.returncode == 2
    assert result.stderr.strip() == (
        f"error: run B ({run_b}) has no build 'main': its builds are '15.3.0', "
        "'15.3.1' (choose one with --build-b)"
    )

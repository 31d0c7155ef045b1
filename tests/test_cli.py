"""CLI behaviour without containers: options, bad input, exit codes."""

import subprocess
import sys

import pytest

from harness.cli import parse_memory
from harness.errors import InvalidInput


def coldstart(*args: str, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "harness", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=60,
    )


@pytest.mark.parametrize(
    ("text", "expected"),
    [("128m", 128 * 1024**2), ("1g", 1024**3), ("64M", 64 * 1024**2), (None, None)],
)
def test_parse_memory_units(text, expected):
    assert parse_memory(text) == expected


@pytest.mark.parametrize("text", ["12x", "m", "-5m", "1 gb"])
def test_parse_memory_rejects_text(text):
    with pytest.raises(InvalidInput, match=f"invalid --memory '{text}'"):
        parse_memory(text)


def test_parse_memory_rejects_tiny_limit():
    with pytest.raises(InvalidInput, match="Docker needs at least 6m"):
        parse_memory("1m")


def test_help_lists_exit_codes_and_units():
    result = coldstart("run", "--help")
    assert result.returncode == 0
    assert "3    the Docker engine or the base image is unavailable" in result.stdout
    assert "130  interrupted (SIGINT)" in result.stdout
    assert "CPU share of each container in cores" in result.stdout
    assert "Memory limit of each container with a unit" in result.stdout


def test_run_without_builds_exits_2():
    result = coldstart("run")
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "error: no builds given: pass --baseline SPEC and --candidate SPEC, "
        "or --build LABEL=SPEC"
    ]
    assert "Traceback" not in result.stderr


def test_run_with_bad_spec_exits_2_in_one_line():
    result = coldstart("run", "--baseline", "stripe=15.3.0", "--candidate", "x==1")
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("error: invalid build spec 'stripe=15.3.0'")
    assert result.stdout == ""


def test_run_with_duplicate_labels_exits_2():
    result = coldstart("run", "--build", "a=stripe==1", "--build", "a=stripe==2")
    assert result.returncode == 2
    assert "build label 'a' is used twice" in result.stderr


def test_run_with_unknown_scenario_exits_2():
    result = coldstart(
        "run",
        "--baseline",
        "stripe==1",
        "--candidate",
        "stripe==2",
        "--scenario",
        "nope",
    )
    assert result.returncode == 2
    assert "error: unknown scenario 'nope'" in result.stderr


def test_run_with_bad_memory_exits_2():
    result = coldstart(
        "run",
        "--baseline",
        "stripe==1",
        "--candidate",
        "stripe==2",
        "--memory",
        "lots",
    )
    assert result.returncode == 2
    assert result.stderr.strip() == (
        "error: invalid --memory 'lots': use a number with a unit b, k, m or g "
        "(for example 128m)"
    )


def test_report_on_non_run_directory_exits_2(tmp_path):
    result = coldstart("report", str(tmp_path))
    assert result.returncode == 2
    assert "not a coldstart run directory" in result.stderr
    assert "Traceback" not in result.stderr


def test_click_usage_error_exits_2():
    result = coldstart("run", "--cpus", "zero")
    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        "error: invalid value for '--cpus': 'zero' is not a valid float range "
        "(see coldstart run --help)"
    ]


@pytest.mark.parametrize(
    ("arguments", "expected"),
    [
        (
            ("run", "-n", "0"),
            "error: invalid value for '-n' / '--iterations': 0 is not in the "
            "range x>=1 (see coldstart run --help)",
        ),
        (
            ("run", "--order", "random"),
            "error: invalid value for '--order': 'random' is not one of "
            "'shuffle', 'alternate' (see coldstart run --help)",
        ),
        (("nosuch",), "error: no such command 'nosuch' (see coldstart --help)"),
    ],
)
def test_option_error_is_one_error_line(arguments, expected):
    result = coldstart(*arguments)
    assert result.returncode == 2
    assert result.stderr.splitlines() == [expected]
    assert result.stdout == ""


@pytest.mark.parametrize("option", ["--baseline", "--candidate"])
def test_run_with_empty_spec_exits_2(option):
    other = "--candidate" if option == "--baseline" else "--baseline"
    result = coldstart("run", option, "", other, "stripe==15.3.0")
    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        f"error: empty build spec for {option}: pass a requirement, wheel, "
        "directory or PATH@REF (an unset shell variable gives an empty value)"
    ]


@pytest.mark.parametrize(
    "arguments",
    [
        ("run", "--baseline", "stripe==15.3.0", "--image", "bad image"),
        ("doctor", "--image", "bad image"),
        ("image", "--image", "bad image"),
        ("sweep", "--baseline", "stripe==15.3.0", "--image", "bad image"),
    ],
)
def test_invalid_image_reference_exits_2(arguments):
    result = coldstart(*arguments)
    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        "error: invalid --image 'bad image': not a valid image reference "
        "(for example python:3.11-slim)"
    ]


def test_run_help_lists_shaping_and_analysis_options():
    result = coldstart("run", "--help")
    assert result.returncode == 0
    for option in (
        "--profile",
        "--cpu-period",
        "--init-cpus",
        "--warmup",
        "--metric",
        "--alpha",
        "--min-effect",
    ):
        assert option in result.stdout
    assert "lambda-1769" in result.stdout


def test_run_with_unknown_profile_exits_2():
    result = coldstart(
        "run", "--baseline", "stripe==1", "--candidate", "stripe==2", "--profile", "x"
    )
    assert result.returncode == 2
    assert "error: invalid value for '--profile': 'x' is not one of" in result.stderr


def test_run_init_cpus_needs_init_phases_first(tmp_path):
    scenario = tmp_path / "late-init.toml"
    scenario.write_text(
        'name = "late-init"\n'
        "[budgets]\ninit = 10.0\ninvoke = 3.0\n"
        '[[phases]]\nname = "call"\nbudget = "invoke"\ncode = "pass"\n'
        '[[phases]]\nname = "import"\nbudget = "init"\ncode = "pass"\n'
    )
    result = coldstart(
        "run",
        "--baseline",
        "stripe==1",
        "--scenario",
        str(scenario),
        "--init-cpus",
        "1",
        "--results",
        str(tmp_path / "results"),
    )
    assert result.returncode == 2
    assert result.stderr.strip() == (
        "error: --init-cpus needs the init phases first, but init phase 'import' "
        "of scenario 'late-init' follows a phase of another budget; reorder the "
        "phases or drop --init-cpus"
    )


def test_report_metric_option_changes_verdicts():
    fixture = "tests/fixtures/stripe-lambda"
    wall = coldstart("report", fixture, "--format", "json")
    cpu = coldstart("report", fixture, "--format", "json", "--metric", "cpu")
    strict = coldstart("report", fixture, "--format", "json", "--alpha", "0.0001")
    assert wall.returncode == cpu.returncode == strict.returncode == 0
    assert '"metric": "wall"' in wall.stdout
    assert '"metric": "cpu"' in cpu.stdout
    assert '"alpha": 0.0001' in strict.stdout


def test_report_rejects_min_effect_of_one():
    result = coldstart("report", "tests/fixtures/stripe-lambda", "--min-effect", "1")
    assert result.returncode == 2
    assert "error: invalid value for '--min-effect'" in result.stderr


def test_sweep_without_axis_exits_2():
    result = coldstart("sweep", "--build", "s=stripe==15.3.1")
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "error: no axis to sweep: pass at least one of --cpus, --memory, --env, "
        "--packages, --image, --bytecode or --page-cache"
    ]


def test_sweep_bad_cpus_exits_2():
    result = coldstart("sweep", "--build", "s=stripe==15.3.1", "--cpus", "0.1,x")
    assert result.returncode == 2
    assert result.stderr.startswith("error: invalid --cpus value 'x'")


def test_run_help_documents_breakdown():
    result = coldstart("run", "--help")
    assert result.returncode == 0
    assert "--breakdown" in result.stdout
    assert "python3 -X importtime" in result.stdout


def test_several_failed_builds_named_in_one_error(tmp_path):
    from harness.cli import raise_for_outcome
    from harness.errors import BuildFailed
    from harness.pipeline import RunOutcome

    failures = [
        BuildFailed("baseline", "no such version"),
        BuildFailed("candidate", "setup.py raised"),
    ]
    outcome = RunOutcome(run_dir=None, summary=None, failed_builds=failures)
    with pytest.raises(InvalidInput) as caught:
        raise_for_outcome(outcome)
    assert str(caught.value) == (
        "builds 'baseline' and 'candidate' failed: 'baseline': no such version; "
        "'candidate': setup.py raised"
    )


@pytest.mark.parametrize(
    ("option", "value"),
    [
        ("--cpus", "nan"),
        ("--init-cpus", "nan"),
        ("--alpha", "nan"),
        ("--min-effect", "nan"),
        ("--timeout", "inf"),
        ("--max-regression-default", "nan"),
    ],
)
def test_run_rejects_non_finite_number(option, value):
    result = coldstart("run", "--baseline", "x", "--candidate", "y", option, value)
    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        f"error: invalid value for '{option}': '{value}' is not a finite number "
        "(see coldstart run --help)"
    ]


def test_report_help_lists_only_its_exit_codes():
    result = coldstart("report", "--help")
    assert result.returncode == 0
    assert "0    the report was written, whatever its budgets" in result.stdout
    assert "2    invalid input: not a run directory" in result.stdout
    assert "budget or a regression gate failed" not in result.stdout
    assert "iterations failed" not in result.stdout


def test_image_help_describes_quiet_without_report():
    result = coldstart("image", "--help")
    assert result.returncode == 0
    assert "the report" not in result.stdout
    assert "Print only the command's output, warnings and errors" in result.stdout


@pytest.mark.parametrize(("iterations", "warned"), [(3, True), (4, False)])
def test_gate_warns_when_it_cannot_fail(caplog, monkeypatch, iterations, warned):
    import logging

    from harness.cli import warn_if_gate_cannot_fail

    # configure_logging, if an earlier test ran it, stops propagation to root.
    monkeypatch.setattr(logging.getLogger("harness"), "propagate", True)
    with caplog.at_level("WARNING", logger="harness"):
        warn_if_gate_cannot_fail(iterations, 0.05)
    expected = (
        "with -n 3 no regression gate can fail: the smallest possible "
        "Mann-Whitney p-value is 0.1, not below --alpha 0.05; use more iterations"
    )
    assert caplog.messages == ([expected] if warned else [])


def test_sweep_repeated_env_variable_exits_2():
    result = coldstart(
        "sweep", "--baseline", "stripe==15.3.0", "--env", "A=1,2", "--env", "A=3"
    )
    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        "error: --env A is given twice: list all its values in one --env A=V1,V2"
    ]


def test_history_plot_needs_png_name(tmp_path):
    result = coldstart(
        "history", "--results", str(tmp_path), "--plot", str(tmp_path / "h.txt")
    )
    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        f"error: invalid --plot '{tmp_path / 'h.txt'}': the plot is a PNG, so "
        "name the file with .png"
    ]

"""Gates: pure evaluation on stored summaries, and the gate command's exit codes."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
from stored_runs import (
    CANDIDATE,
    FIXTURE_RUN,
    HOSTILE_LABEL,
    copy_run,
    parse_github_output,
    run_cli,
)

from harness.analysis import Summary
from harness.errors import InvalidInput
from harness.gate import (
    evaluate_gates,
    merge_thresholds,
    parse_threshold,
    render_gates_markdown,
    threshold_for,
)
from harness.report import build_report
from harness.stats import Verdict

IMPORT_FAILED = (
    "gate failed: 15.3.1 / import stripe: +76.4% (95% CI +39.1% .. +94.2%) "
    "exceeds the maximum regression of 10%"
)


@pytest.fixture
def coldstart(capsys):
    return lambda *args: run_cli(capsys, *args)


@pytest.fixture(scope="module")
def summary() -> Summary:
    return build_report(FIXTURE_RUN)[2]


def regression_results(summary: Summary, thresholds: dict[str, float]):
    return [r for r in evaluate_gates(summary, thresholds) if r.kind == "regression"]


def test_slower_beyond_threshold_fails(summary):
    results = regression_results(summary, {"import stripe": 10})
    assert len(results) == 1
    assert not results[0].passed
    assert results[0].build == CANDIDATE
    assert results[0].message == IMPORT_FAILED.removeprefix("gate failed: ")


def test_slower_within_threshold_passes(summary):
    [result] = regression_results(summary, {"import stripe": 80})
    assert result.passed
    assert result.message.endswith(
        "is within the maximum regression of 80% (verdict: slower)"
    )


def test_star_covers_phases_and_total(summary):
    results = regression_results(summary, {"*": 10})
    assert [r.subject for r in results] == ["import stripe", "StripeClient()", "total"]
    assert [r.passed for r in results] == [False, True, True]


def test_large_change_without_significance_passes(summary):
    import_stripe = summary.comparisons[0]
    doubled = replace(
        import_stripe,
        result=replace(import_stripe.result, ratio=2.0, verdict=Verdict.INCONCLUSIVE),
    )
    unsure = replace(summary, comparisons=(doubled,))
    [result] = regression_results(unsure, {"import stripe": 10})
    assert result.passed
    assert "+100.0%" in result.message
    assert result.message.endswith(
        "exceeds the maximum regression of 10%, but the change is not "
        "significant (verdict: inconclusive)"
    )


def test_budget_gates_follow_budget_checks(summary):
    budget = [r for r in evaluate_gates(summary, {}) if r.kind == "budget"]
    assert len(budget) == len(summary.budget_checks) == 4
    assert all(r.passed for r in budget)
    assert budget[0].message == (
        "15.3.0 / budget init (10 s): 0 of 6 iterations over, worst 0.702 s"
    )


def test_unknown_phase_threshold_rejected(summary):
    with pytest.raises(InvalidInput) as caught:
        evaluate_gates(summary, {"import stripe.http": 10})
    assert str(caught.value) == (
        "maximum regression set for unknown phase 'import stripe.http': the run's "
        "phases are 'import stripe', 'StripeClient()', 'total', or use '*' for "
        "every phase"
    )


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("import stripe=10", ("import stripe", 10.0)),
        ("*=2.5", ("*", 2.5)),
        ("total=5%", ("total", 5.0)),
        ("a=b=7", ("a=b", 7.0)),
    ],
)
def test_parse_threshold(text, expected):
    assert parse_threshold(text) == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("10", "invalid --max-regression '10': use PHASE=PERCENT"),
        ("=10", "invalid --max-regression '=10': use PHASE=PERCENT"),
        (
            "total=-1",
            "invalid --max-regression 'total=-1': the maximum regression must be "
            "a percentage of 0 or more, not '-1'",
        ),
        ("total=ten", "not 'ten'"),
    ],
)
def test_parse_threshold_rejects(text, message):
    with pytest.raises(InvalidInput) as caught:
        parse_threshold(text)
    assert message in str(caught.value)


def test_options_override_scenario_gates():
    merged = merge_thresholds({"init": 50, "*": 30}, [("init", 5)], 20)
    assert merged == {"*": 30, "init": 5}
    assert threshold_for("init", merged) == 5
    assert threshold_for("other", merged) == 30
    assert threshold_for("other", merge_thresholds({}, [], 20)) == 20
    assert threshold_for("other", merge_thresholds({}, [], None)) is None


def test_gates_markdown_escapes_labels(summary):
    hostile = replace(
        summary,
        comparisons=tuple(
            replace(c, candidate=HOSTILE_LABEL) for c in summary.comparisons
        ),
    )
    markdown = render_gates_markdown(evaluate_gates(hostile, {"*": 10}))
    assert "<b>" not in markdown
    assert "@org" not in markdown
    assert "](http" not in markdown
    assert "evil&#124;&lt;b&gt;x&lt;/b&gt; &#64;org/team" in markdown
    # The new line in the label is printed as \n and cannot start a new item.
    assert all(line.startswith(("- ", "### ")) for line in markdown.split("\n") if line)


# --- the gate command on stored runs -----------------------------------------


def test_gate_command_fails_with_one_line(tmp_path, coldstart):
    run_dir = copy_run(tmp_path / "run")
    result = coldstart("gate", str(run_dir), "--max-regression", "import stripe=10")
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert IMPORT_FAILED in lines
    assert lines[-1] == "error: 1 of 5 gates failed (see the 'gate failed' lines above)"
    assert "### Gates" in (run_dir / "report.md").read_text()


def test_gate_command_uses_run_metric(tmp_path, coldstart):
    def use_cpu(manifest):
        manifest["analysis"] = {"metric": "cpu", "alpha": 0.05, "min_effect": 0.05}

    wall_dir = copy_run(tmp_path / "wall")
    cpu_dir = copy_run(tmp_path / "cpu", edit=use_cpu)
    arguments = ("--max-regression", "import stripe=10")
    wall = coldstart("gate", str(wall_dir), *arguments)
    cpu = coldstart("gate", str(cpu_dir), *arguments)
    explicit = coldstart("gate", str(wall_dir), "--metric", "cpu", *arguments)
    assert IMPORT_FAILED in wall.stderr.splitlines()
    cpu_line = next(line for line in cpu.stderr.splitlines() if "gate failed" in line)
    assert cpu_line != IMPORT_FAILED
    assert cpu_line in explicit.stderr.splitlines()


def test_gate_command_passes_within_threshold(tmp_path, coldstart):
    run_dir = copy_run(tmp_path / "run")
    result = coldstart("gate", str(run_dir), "--max-regression-default", "100")
    assert result.returncode == 0
    assert "gate failed" not in result.stderr
    assert result.stderr.count("gate passed:") == 7


def test_gate_command_uses_scenario_gates(tmp_path, coldstart):
    def add_gates(manifest):
        manifest["scenario"]["gates"] = {"import stripe": 10}

    run_dir = copy_run(tmp_path / "run", edit=add_gates)
    result = coldstart("gate", str(run_dir), "-q")
    assert result.returncode == 1
    assert IMPORT_FAILED in result.stderr.splitlines()
    overridden = coldstart(
        "gate", str(run_dir), "-q", "--max-regression", "import stripe=90"
    )
    assert overridden.returncode == 0


def test_gate_command_over_budget_fails(tmp_path, coldstart):
    def tighten(manifest):
        manifest["scenario"]["budgets"]["init"] = 0.6

    run_dir = copy_run(tmp_path / "run", edit=tighten)
    result = coldstart("gate", str(run_dir), "-q")
    assert result.returncode == 1
    assert result.stderr.splitlines()[:2] == [
        "gate failed: 15.3.0 / budget init (0.6 s): 2 of 6 iterations over, "
        "worst 0.702 s",
        "gate failed: 15.3.1 / budget init (0.6 s): 5 of 5 iterations over, "
        "worst 1.005 s",
    ]


def test_gate_command_unknown_phase_exits_2(tmp_path, coldstart):
    run_dir = copy_run(tmp_path / "run")
    result = coldstart("gate", str(run_dir), "--max-regression", "import=10")
    assert result.returncode == 2
    assert result.stderr.startswith(
        "error: maximum regression set for unknown phase 'import'"
    )


# --- GitHub Actions files ------------------------------------------------------


@pytest.fixture
def github_env(tmp_path, monkeypatch):
    """Point the GitHub Actions variables at files in ``tmp_path``."""
    monkeypatch.setenv("GITHUB_OUTPUT", str(tmp_path / "output"))
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(tmp_path / "step-summary.md"))


def test_gate_github_writes_outputs(tmp_path, coldstart, github_env):
    run_dir = copy_run(tmp_path / "run")
    result = coldstart(
        "gate", str(run_dir), "-q", "--github", "--max-regression", "*=10"
    )
    assert result.returncode == 1
    outputs = parse_github_output((tmp_path / "output").read_text())
    assert outputs["verdict"] == "fail"
    assert outputs["report"] == str(run_dir / "report.md")
    assert outputs["import-stripe-median-baseline"] == "0.5175"
    assert outputs["import-stripe-median-candidate"] == "0.913"
    assert outputs["import-stripe-ratio"] == "1.76425"
    assert outputs["import-stripe-verdict"] == "slower"
    assert outputs["stripeclient-verdict"] == "faster"
    assert outputs["total-verdict"] == "inconclusive"
    assert len(outputs) == 2 + 3 * 4
    step_summary = (tmp_path / "step-summary.md").read_text()
    assert step_summary.startswith("<!-- coldstart-report -->\n")
    assert "- **FAILED**: 15.3.1 / import stripe: +76.4%" in step_summary


def test_stored_gate_options_reused(tmp_path, coldstart, github_env):
    run_dir = copy_run(tmp_path / "run", drop_failed=True)
    first = coldstart("gate", str(run_dir), "--max-regression", "import stripe=10")
    assert first.returncode == 1
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["gate_options"] == {
        "max_regression": {"import stripe": 10.0},
        "max_regression_default": None,
    }
    again = coldstart("gate", str(run_dir))
    assert again.returncode == 1
    assert IMPORT_FAILED in again.stderr.splitlines()
    assert "- **FAILED**: 15.3.1 / import stripe" in (run_dir / "report.md").read_text()
    report = coldstart("report", str(run_dir), "--github")
    assert report.returncode == 0
    outputs = parse_github_output((tmp_path / "output").read_text())
    assert outputs["verdict"] == "fail"


def test_report_github_appends(tmp_path, coldstart, github_env):
    run_dir = copy_run(tmp_path / "run", drop_failed=True)
    (tmp_path / "output").write_text("earlier=1\n")
    for _ in range(2):
        result = coldstart("report", str(run_dir), "--github")
        assert result.returncode == 0
    outputs = parse_github_output((tmp_path / "output").read_text())
    assert outputs["earlier"] == "1"
    assert outputs["verdict"] == "pass"
    assert outputs["report"] == str(run_dir / "report.md")
    assert (run_dir / "report.md").read_text().startswith("<!-- coldstart-report")
    summary_text = (tmp_path / "step-summary.md").read_text()
    assert summary_text.count("<!-- coldstart-report -->") == 2


def test_report_github_fails_on_failed_iteration(tmp_path, coldstart, github_env):
    run_dir = copy_run(tmp_path / "run")
    result = coldstart("report", str(run_dir), "--github")
    assert result.returncode == 0
    outputs = parse_github_output((tmp_path / "output").read_text())
    assert outputs["verdict"] == "fail"


def test_hostile_label_cannot_inject_output(tmp_path, coldstart, github_env):
    run_dir = copy_run(tmp_path / "run", relabel={CANDIDATE: HOSTILE_LABEL})
    result = coldstart(
        "gate", str(run_dir), "-q", "--github", "--max-regression", "*=10"
    )
    assert result.returncode == 1
    failed = [
        line for line in result.stderr.splitlines() if line.startswith("gate failed")
    ]
    assert failed == [
        "gate failed: evil|<b>x</b> @org/team [a](http://e.example)\\nverdict=pass "
        "/ import stripe: +76.4% (95% CI +39.1% .. +94.2%) exceeds the maximum "
        "regression of 10%"
    ]
    outputs = parse_github_output((tmp_path / "output").read_text())
    assert outputs["verdict"] == "fail"
    assert all(name == name.lower() and " " not in name for name in outputs)
    report = (run_dir / "report.md").read_text()
    assert "<b>x</b>" not in report
    assert "@org/team" not in report
    assert "[a](http" not in report
    assert "\nverdict=pass" not in report


@pytest.mark.parametrize("missing", ["GITHUB_OUTPUT", "GITHUB_STEP_SUMMARY"])
def test_github_without_variable_exits_2(
    tmp_path, missing, coldstart, github_env, monkeypatch
):
    run_dir = copy_run(tmp_path / "run")
    monkeypatch.delenv(missing)
    result = coldstart("gate", str(run_dir), "--github")
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f"error: --github needs the environment variable {missing}, which is not "
        "set: run inside GitHub Actions or set it to a file path"
    ]
    assert not (tmp_path / "output").exists()
    assert not (tmp_path / "step-summary.md").exists()


def test_run_rejects_unknown_phase_before_work(coldstart):
    result = coldstart(
        "run",
        "--baseline",
        "stripe==15.3.0",
        "--candidate",
        "stripe==15.3.1",
        "--gate",
        "--max-regression",
        "import=10",
    )
    assert result.returncode == 2
    assert result.stderr.strip() == (
        "error: maximum regression set for unknown phase 'import': the run's "
        "phases are 'import stripe', 'StripeClient()', 'total', or use '*' for "
        "every phase"
    )


def test_run_github_without_variables_exits_2(coldstart, monkeypatch):
    monkeypatch.delenv("GITHUB_STEP_SUMMARY", raising=False)
    result = coldstart(
        "run", "--baseline", "stripe==15.3.0", "--candidate", "x==1", "--github"
    )
    assert result.returncode == 2
    assert result.stderr.strip() == (
        "error: --github needs the environment variable GITHUB_STEP_SUMMARY, which "
        "is not set: run inside GitHub Actions or set it to a file path"
    )

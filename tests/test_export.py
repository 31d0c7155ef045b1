import copy
import difflib
import json
import re
import shutil
from pathlib import Path
from typing import Any

import pytest

from harness.analysis import summarise
from harness.errors import InvalidInput
from harness.export import ReportData, get_exporter
from harness.export.markdown import escape_markdown
from harness.export.table import EXPORTER as TABLE_EXPORTER
from harness.models import IterationRecord
from harness.report import build_report, render, write_report

FIXTURES = Path(__file__).parent / "fixtures"
STRIPE_RUN = FIXTURES / "stripe-lambda"
HOSTILE = "x|y<script>@org/team [a](http://e)"


def assert_matches_golden(actual: str, golden: Path) -> None:
    """Compare with a golden file and show a unified diff when they differ."""
    expected = golden.read_text(encoding="utf-8")
    if actual != expected:
        diff = difflib.unified_diff(
            expected.splitlines(keepends=True),
            actual.splitlines(keepends=True),
            fromfile=str(golden),
            tofile="rendered",
        )
        pytest.fail("rendered output differs from the golden file:\n" + "".join(diff))


def load_stripe_run() -> tuple[dict[str, Any], list[IterationRecord]]:
    manifest, records, _ = build_report(STRIPE_RUN)
    return manifest, records


def make_hostile_report() -> ReportData:
    """Relabel the candidate build and its records with markup-laden text."""
    manifest, records = load_stripe_run()
    manifest = copy.deepcopy(manifest)
    manifest["builds"][1]["label"] = HOSTILE
    manifest["builds"][1]["version"] = "1.0`rm -rf`"
    manifest["failed_builds"] = [
        {"label": "@admins", "spec": "<b>x</b>", "error": "boom\n| injected | row |"}
    ]
    relabelled = []
    for record in records:
        data = record.to_dict()
        if data["build"] == "15.3.1":
            data["build"] = HOSTILE
            if data["error"]:
                data["error"] = "line one\nline two ![img](http://e/x.png)"
        relabelled.append(IterationRecord.from_dict(data))
    summary = summarise(manifest, relabelled)
    return ReportData(manifest=manifest, records=tuple(relabelled), summary=summary)


def test_markdown_matches_golden() -> None:
    manifest, records, summary = build_report(STRIPE_RUN)
    assert_matches_golden(
        render("markdown", manifest, records, summary), STRIPE_RUN / "expected.md"
    )


def test_json_matches_golden() -> None:
    manifest, records, summary = build_report(STRIPE_RUN)
    assert_matches_golden(
        render("json", manifest, records, summary), STRIPE_RUN / "expected.json"
    )


def test_write_report_writes_both_files(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    shutil.copytree(STRIPE_RUN, run_dir)
    (run_dir / "expected.md").unlink()
    (run_dir / "expected.json").unlink()
    manifest, records, summary = build_report(run_dir)
    write_report(run_dir, summary, manifest, records)
    # report.md is the Markdown report followed by links to the plots.
    report, plots = (run_dir / "report.md").read_text().split("\n## Plots\n")
    assert_matches_golden(report, STRIPE_RUN / "expected.md")
    assert "![Wall time per phase](phases.png)" in plots
    assert_matches_golden(
        (run_dir / "summary.json").read_text(), STRIPE_RUN / "expected.json"
    )
    assert sorted(path.name for path in run_dir.iterdir()) == [
        "budgets.png",
        "cpu-wall.png",
        "manifest.json",
        "phases.png",
        "raw.jsonl",
        "report.md",
        "summary.json",
    ]


def test_markdown_marker_then_verdict() -> None:
    manifest, records, summary = build_report(STRIPE_RUN)
    lines = render("markdown", manifest, records, summary).splitlines()
    assert lines[0] == "<!-- coldstart-report -->"
    assert lines[1] == (
        "**Budgets passed.** 15.3.1 vs 15.3.0 (wall time): import stripe slower "
        "+0.395 s (1.76x), StripeClient() faster -0.497 s (0.03x), total "
        "inconclusive."
    )


def test_markdown_names_stand_in_image() -> None:
    manifest, records, summary = build_report(STRIPE_RUN)
    text = render("markdown", manifest, records, summary)
    assert (
        "Base image coldstart-base:bookworm-python3.11 (Python 3.11.2, stand-in "
        "for python:3.11-slim), cpus 0.1 per 100 ms CFS period, memory no limit, "
        "6 iterations per build"
    ) in text
    real = copy.deepcopy(manifest)
    real["base_image"].update(tag="python:3.11-slim", stand_in=False)
    real["base_image"]["python_version"] = "3.11.9"
    real_text = render("markdown", real, records, summarise(real, records))
    assert "Base image python:3.11-slim (Python 3.11.9), cpus" in real_text
    assert "stand-in" not in real_text


def test_markdown_cfs_note_and_details() -> None:
    manifest, records, summary = build_report(STRIPE_RUN)
    text = render("markdown", manifest, records, summary)
    assert "wall time moves in whole periods (100 ms by default)" in text
    details = text[text.index("<details>") :]
    assert details.count("\n| 15.3.") == 12
    assert details.rstrip().endswith("</details>")


def test_escape_markdown_hostile_label() -> None:
    escaped = escape_markdown(HOSTILE)
    assert escaped == ("x&#124;y&lt;script&gt;&#64;org/team &#91;a&#93;(http&#58;//e)")


@pytest.mark.parametrize(
    ("raw", "escaped"),
    [
        ("a\nb\r\nc\rd", "a<br>b<br>c<br>d"),
        ("`code`", "\\`code\\`"),
        ("\\`", "&#92;\\`"),
        ("a & b", "a &amp; b"),
        (
            "**bold** _em_ ~~s~~",
            "&#42;&#42;bold&#42;&#42; &#95;em&#95; &#126;&#126;s&#126;&#126;",
        ),
        ("fixes #12", "fixes &#35;12"),
        ("see www.example.com", "see www&#46;example.com"),
        ("back\\slash", "back&#92;slash"),
        ("stripe==15.3.1", "stripe==15.3.1"),
    ],
)
def test_escape_markdown_cases(raw: str, escaped: str) -> None:
    assert escape_markdown(raw) == escaped


def test_markdown_report_escapes_hostile_values() -> None:
    text = get_exporter("markdown").render(make_hostile_report())
    for raw in ("<script>", "@org", "@admins", "[a]", "http://", "<b>"):
        assert raw not in text, raw
    # Every backtick is escaped, so none can open a code span.
    assert re.search(r"(?<!\\)`", text) is None
    assert "![img]" not in text
    assert "x&#124;y&lt;script&gt;&#64;org/team" in text
    assert "boom<br>&#124; injected &#124; row &#124;" in text


def test_markdown_hostile_values_keep_table_shape() -> None:
    text = get_exporter("markdown").render(make_hostile_report())
    lines = text.splitlines()
    for index, line in enumerate(lines):
        if not line.startswith("| ") or lines[index - 1].startswith("|"):
            continue
        width = line.count("|")
        block = []
        for row in lines[index:]:
            if not row.startswith("|"):
                break
            block.append(row)
        assert all(row.count("|") == width for row in block), block


def test_table_render_plain_text() -> None:
    manifest, records, summary = build_report(STRIPE_RUN)
    text = render("table", manifest, records, summary)
    assert text.startswith("Budgets passed. 15.3.1 import stripe: slower.")
    assert "0.518 s" in text
    assert "[+0.257, +0.487] s" in text
    assert "stand-in for python:3.11-slim" in text
    assert "wall time moves in whole periods (100 ms by default)" in text
    assert "\x1b[" not in text


def test_table_shows_markup_in_labels_literally() -> None:
    manifest, records = load_stripe_run()
    manifest = copy.deepcopy(manifest)
    manifest["baseline"] = "[bold]base[/bold]"
    manifest["builds"][0]["label"] = "[bold]base[/bold]"
    relabelled = [
        IterationRecord.from_dict({**r.to_dict(), "build": "[bold]base[/bold]"})
        if r.build == "15.3.0"
        else r
        for r in records
    ]
    report = ReportData(manifest, tuple(relabelled), summarise(manifest, relabelled))
    text = TABLE_EXPORTER.render(report)
    assert "[bold]base[/bold]" in text


def test_table_renderables_for_terminal() -> None:
    manifest, records, summary = build_report(STRIPE_RUN)
    report = ReportData(manifest, tuple(records), summary)
    renderables = TABLE_EXPORTER.renderables(report)
    titles = [getattr(item, "title", None) for item in renderables]
    assert "Budgets (wall time)" in titles
    assert "Wall time per build" in titles
    assert "CPU time per build" in titles


def test_json_contains_summary_and_run() -> None:
    manifest, records, summary = build_report(STRIPE_RUN)
    data = json.loads(render("json", manifest, records, summary))
    assert data["format"] == 1
    assert data["run"]["base_image"]["stand_in"] is True
    assert data["run"]["builds"][1]["spec"] == "stripe==15.3.1"
    verdicts = {c["phase"]: c["verdict"] for c in data["comparisons"]}
    assert verdicts == {
        "import stripe": "slower",
        "StripeClient()": "faster",
        "total": "inconclusive",
    }


def test_get_exporter_unknown_format() -> None:
    with pytest.raises(InvalidInput) as caught:
        get_exporter("html")
    assert str(caught.value) == (
        "unknown report format 'html'; choose one of: json, markdown, table"
    )


def test_markdown_single_build_verdict_line() -> None:
    manifest, records = load_stripe_run()
    manifest = copy.deepcopy(manifest)
    manifest["builds"] = manifest["builds"][:1]
    baseline_records = [record for record in records if record.build == "15.3.0"]
    summary = summarise(manifest, baseline_records)
    text = render("markdown", manifest, baseline_records, summary)
    assert text.splitlines()[1] == "**Budgets passed.**"
    assert summary.comparisons == ()


def test_table_shows_throttling_beside_times() -> None:
    manifest, records, summary = build_report(STRIPE_RUN)
    lines = render("table", manifest, records, summary).splitlines()
    wall_header = lines[lines.index(next(x for x in lines if "Wall time per" in x)) + 2]
    cpu_header = lines[lines.index(next(x for x in lines if "CPU time per" in x)) + 2]
    assert "throttled time" in wall_header
    assert "throttled periods" in cpu_header
    row = next(x for x in lines if "│ 15.3.1 │ import stripe" in x and "0.088 s" in x)
    assert row.rstrip(" │").endswith("9")


def test_reports_name_warmups_and_memory_peak() -> None:
    manifest, records = load_stripe_run()
    manifest = copy.deepcopy(manifest)
    manifest["plan"]["warmup"] = 2
    manifest["limits"].update(init_cpus=1.0, cpu_period_us=50_000, profile="lambda-128")
    peaked = [
        IterationRecord.from_dict(
            {**r.to_dict(), "telemetry": {"cgroup": {"memory_peak_bytes": 30 * 2**20}}}
        )
        for r in records
    ]
    summary = summarise(manifest, peaked)
    text = render("markdown", manifest, peaked, summary)
    assert (
        "cpus 0.1 per 50 ms CFS period (init phases: cpus 1.0), profile lambda-128"
        in text
    )
    assert "after 2 unrecorded warm-up containers per build" in text
    assert "- Peak memory of 15.3.0: median 30.0 MiB, max 30.0 MiB over 6" in text
    table = render("table", manifest, peaked, summary)
    assert "Peak memory of 15.3.1: median 30.0 MiB, max 30.0 MiB over 6" in table


def test_markdown_marks_warmup_rows() -> None:
    manifest, records = load_stripe_run()
    warmup = IterationRecord.from_dict({**records[0].to_dict(), "warmup": True})
    with_warmup = [warmup, *records]
    summary = summarise(manifest, with_warmup)
    text = render("markdown", manifest, with_warmup, summary)
    assert (
        f"<summary>Per-iteration data ({len(records)} iterations) and 1 warm-up "
        "container, not counted</summary>"
    ) in text
    assert "| 15.3.0 | 1 | 1 | warm-up, ok |" in text
    assert summary.warmups == 1


def test_markdown_wording_for_default_labels(tmp_path: Path) -> None:
    from stored_runs import copy_run

    def one_iteration(manifest: dict) -> None:
        manifest["plan"]["iterations"] = 1

    run = copy_run(tmp_path / "run", relabel={"15.3.0": "baseline"}, edit=one_iteration)
    manifest, records, summary = build_report(run)
    text = render("markdown", manifest, records, summary)
    assert "### Comparison with baseline (wall time, medians)" in text
    assert "baseline baseline" not in text
    assert " 1 iteration per build " in text

"""Plots: PNG files next to report.md, linked from it."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from matplotlib.figure import Figure

from harness.breakdown import BREAKDOWN_FILE
from harness.report import build_report, write_report
from harness.results import RunDirectory

FIXTURE = Path(__file__).parent / "fixtures" / "stripe-lambda"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
PLOTS = ("phases.png", "budgets.png", "cpu-wall.png", "breakdown.png")

BREAKDOWN = {
    "iterations": 2,
    "phases": ["import stripe", "StripeClient()"],
    "builds": {
        "baseline": {
            "import stripe": {
                "modules": {"stripe": {"self_us": 9000, "cumulative_us": 20000}},
                "packages": {"stripe": 9000},
                "self_us": 9000,
            },
            "StripeClient()": {
                "modules": {"requests": {"self_us": 30000, "cumulative_us": 90000}},
                "packages": {"requests": 30000},
                "self_us": 30000,
            },
        },
    },
}


def copy_fixture(tmp_path: Path) -> RunDirectory:
    target = tmp_path / "run"
    shutil.copytree(FIXTURE, target)
    return RunDirectory.open(target)


def write(run_dir: RunDirectory) -> str:
    manifest, records, summary = build_report(run_dir)
    write_report(run_dir, summary, manifest, records)
    return (run_dir.path / "report.md").read_text()


def test_plots_are_pngs_linked_from_report(tmp_path: Path):
    run_dir = copy_fixture(tmp_path)
    (run_dir.path / BREAKDOWN_FILE).write_text(json.dumps(BREAKDOWN))
    report = write(run_dir)
    for name in PLOTS:
        data = (run_dir.path / name).read_bytes()
        assert data.startswith(PNG_SIGNATURE), name
        assert len(data) > 10_000, name
        assert f"]({name})" in report
    assert "## Plots" in report
    assert "## Import breakdown" in report


def test_no_breakdown_plot_without_breakdown(tmp_path: Path):
    run_dir = copy_fixture(tmp_path)
    report = write(run_dir)
    assert not (run_dir.path / "breakdown.png").exists()
    assert "](breakdown.png)" not in report
    assert "## Import breakdown" not in report
    assert (run_dir.path / "phases.png").read_bytes().startswith(PNG_SIGNATURE)


def test_plot_write_failure_keeps_report(tmp_path: Path, monkeypatch):
    def fail(self, path, **options):
        Path(path).write_bytes(b"\x89PNG partial")
        raise OSError(27, "File too large")

    monkeypatch.setattr(Figure, "savefig", fail)
    run_dir = copy_fixture(tmp_path)
    report = write(run_dir)
    assert "## Plots" not in report
    assert "**Budgets passed.**" in report
    for name in PLOTS:
        assert not (run_dir.path / name).exists(), name

"""Import breakdown: parsing -X importtime, attribution, medians, differences."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest

from harness.breakdown import (
    ImportTime,
    aggregate_breakdown,
    attribute_to_phases,
    diff_phase,
    extract_importtime_log,
    parse_importtime,
    top_modules,
)
from harness.environment import Environment
from harness.models import BaseImage, IterationRecord, Limits, PhaseResult
from harness.pipeline import RunRequest, run_experiment
from harness.scenario import load_scenario
from harness.specs import parse_spec

STDERR = """\
import time: self [us] | cumulative | imported package
import time:       126 |        126 |   _io
import time:       356 |        783 | _frozen_importlib_external

\x1ecoldstart-phase import sdk
import time:       900 |        900 |     sdk.helpers
import time:      1200 |       2100 |   sdk
some line the SDK printed
import time:        50 |         50 | json

\x1ecoldstart-phase Client()
import time:       400 |        400 | uuid
"""


def make_record(phases: dict[str, tuple[str, ...]]) -> IterationRecord:
    return IterationRecord(
        build="b",
        iteration=1,
        round=1,
        started_at="",
        container_s=1.0,
        phases=tuple(
            PhaseResult(name, 0.1, 0.1, modules=modules)
            for name, modules in phases.items()
        ),
    )


def test_parse_importtime_entries():
    entries = parse_importtime(STDERR)
    assert [entry.module for entry in entries] == [
        "_io",
        "_frozen_importlib_external",
        "sdk.helpers",
        "sdk",
        "json",
        "uuid",
    ]
    assert entries[3] == ImportTime("sdk", 1200, 2100, 1)
    assert entries[1].depth == 0
    assert entries[2].depth == 2


def test_extract_log_keeps_header_only_importtime():
    log = extract_importtime_log(STDERR)
    lines = log.splitlines()
    assert lines[0] == "import time: self [us] | cumulative | imported package"
    assert len(lines) == 7
    assert all(line.startswith("import time:") for line in lines)


def test_attribute_uses_phase_module_lists():
    record = make_record(
        {"import sdk": ("sdk", "sdk.helpers"), "Client()": ("json", "uuid")}
    )
    phases = attribute_to_phases(parse_importtime(STDERR), record)
    assert sorted(phases["import sdk"]) == ["sdk", "sdk.helpers"]
    # json appears in the stderr before the second marker but the probe saw it
    # arrive during Client(), so the module lists decide.
    assert sorted(phases["Client()"]) == ["json", "uuid"]
    assert "_io" not in phases["import sdk"]


def entry(module: str, self_us: int) -> ImportTime:
    return ImportTime(module, self_us, self_us, 0)


def test_aggregate_medians_and_quorum():
    iterations = [
        {
            "p": {
                "a": entry("a", 100),
                "a.x": entry("a.x", 10),
                "rare": entry("rare", 5),
            }
        },
        {"p": {"a": entry("a", 300), "a.x": entry("a.x", 30)}},
        {"p": {"a": entry("a", 200), "a.x": entry("a.x", 20)}},
    ]
    result = aggregate_breakdown({"b": iterations}, ["p"])
    phase = result["builds"]["b"]["p"]
    assert phase["modules"]["a"]["self_us"] == 200
    assert phase["modules"]["a.x"]["self_us"] == 20
    assert phase["modules"]["a"]["seen"] == 3
    # Seen in one of three iterations: below the quorum of half.
    assert "rare" not in phase["modules"]
    # Package a: per-iteration sums 110, 330, 220; median 220.
    assert phase["packages"]["a"] == 220
    assert phase["self_us"] == 220


def test_top_modules_sorted_by_self_time():
    phase = {
        "modules": {
            "a": {"self_us": 5, "cumulative_us": 50},
            "b": {"self_us": 9, "cumulative_us": 9},
            "c": {"self_us": 7, "cumulative_us": 7},
        }
    }
    assert top_modules(phase, 2) == [("b", 9, 9), ("c", 7, 7)]


def test_diff_phase_both_directions():
    base = {"modules": {"uuid": {"self_us": 40}, "os": {"self_us": 1}}}
    candidate = {"modules": {"requests": {"self_us": 90}, "os": {"self_us": 1}}}
    diff = diff_phase(base, candidate)
    assert diff["added"] == {"requests": 90}
    assert diff["removed"] == {"uuid": 40}


MOVED = ("requests", "urllib3", "charset_normalizer", "idna", "certifi")


@pytest.fixture(scope="module")
def stripe_run(
    env: Environment, base_image: BaseImage, tmp_path_factory: pytest.TempPathFactory
) -> Path:
    """stripe 15.3.0 against 15.3.1, 2 timed and 2 breakdown iterations each."""
    request = RunRequest(
        specs=(
            parse_spec("baseline", "stripe==15.3.0"),
            parse_spec("candidate", "stripe==15.3.1"),
        ),
        baseline="baseline",
        scenario=load_scenario("stripe-lambda"),
        limits=Limits(cpus=0.5),
        iterations=2,
        image="python:3.11-slim",
        results_root=tmp_path_factory.mktemp("results"),
        order="alternate",
        breakdown=2,
    )
    return run_experiment(env, request).run_dir.path


def packages_of(breakdown: dict, build: str, phase: str) -> set[str]:
    modules = breakdown["builds"][build][phase]["modules"]
    return {name.split(".")[0] for name in modules}


@pytest.mark.docker
def test_requests_moves_from_invoke_to_init(stripe_run: Path):
    breakdown = json.loads((stripe_run / "breakdown.json").read_text())
    assert breakdown["iterations"] == 2
    for package in MOVED:
        assert package in packages_of(breakdown, "baseline", "StripeClient()")
        assert package not in packages_of(breakdown, "baseline", "import stripe")
        assert package in packages_of(breakdown, "candidate", "import stripe")
        assert package not in packages_of(breakdown, "candidate", "StripeClient()")
    init_diff = diff_phase(
        breakdown["builds"]["baseline"]["import stripe"],
        breakdown["builds"]["candidate"]["import stripe"],
    )
    assert "requests" in init_diff["added"]
    assert init_diff["added"]["requests"] > 0
    invoke_diff = diff_phase(
        breakdown["builds"]["baseline"]["StripeClient()"],
        breakdown["builds"]["candidate"]["StripeClient()"],
    )
    assert "requests" in invoke_diff["removed"]


@pytest.mark.docker
def test_breakdown_logs_and_report(stripe_run: Path):
    logs = sorted(path.name for path in (stripe_run / "importtime").iterdir())
    assert logs == [
        "baseline-1.log",
        "baseline-2.log",
        "candidate-1.log",
        "candidate-2.log",
    ]
    log = (stripe_run / "importtime" / "candidate-1.log").read_text()
    assert log.startswith("import time: self [us] | cumulative | imported package")
    assert any(line.endswith(" requests") for line in log.splitlines())
    report = (stripe_run / "report.md").read_text()
    assert "## Import breakdown" in report
    assert "From 2 separate iterations per build" in report
    assert "Modules only candidate imports here" in report
    # The breakdown iterations stay out of raw.jsonl, which has 2 timed
    # iterations and 1 warm-up per build.
    lines = (stripe_run / "raw.jsonl").read_text().splitlines()
    records = [json.loads(line) for line in lines]
    assert len([r for r in records if not r["warmup"]]) == 4
    assert len([r for r in records if r["warmup"]]) == 2


def test_breakdown_runs_without_quota(tmp_path: Path, monkeypatch) -> None:
    from harness import breakdown as breakdown_module
    from harness.models import Phase, Scenario
    from harness.results import RunDirectory

    seen = []

    def record_limits(client, run_dir, build, scenario, limits, planned, command):
        seen.append(limits)
        return None

    monkeypatch.setattr(breakdown_module, "run_breakdown_iteration", record_limits)
    scenario = Scenario(
        name="s",
        description="",
        phases=(Phase("import x", "import x", "init"),),
        budgets={"init": 10.0},
    )
    build = SimpleNamespace(label="baseline")
    run_dir = RunDirectory.create(tmp_path, "run")
    limits = Limits(cpus=0.1, init_cpus=0.5, memory_bytes=128 * 2**20, timeout_s=30)
    breakdown_module.run_breakdown(None, run_dir, [build], scenario, limits, 2)
    assert len(seen) == 2
    for used in seen:
        assert used.cpus == 1.0
        assert used.init_cpus is None
        assert used.memory_bytes == 128 * 2**20
        assert used.timeout_s == 30

import json
import math
from typing import Any

import pytest

from harness.analysis import records_to_frame, summarise
from harness.errors import InvalidInput
from harness.stats import Verdict

# Wall times per iteration. CPU time is a tenth of wall time throughout.
BASELINE_IMPORT = [0.30, 0.40, 0.50, 0.60, 0.70]
BASELINE_CALL = [0.10, 0.20, 0.25, 0.15, 0.30]
CANDIDATE_IMPORT = [0.20, 0.22, 0.24, 0.26, 0.28]
# The candidate's 5th iteration raised in the call phase after its import.
CANDIDATE_CALL = [0.05, 0.06, 0.07, 0.08]


def phase(name: str, wall: float, cgroup: dict[str, float] | None = None) -> dict:
    data: dict[str, Any] = {"name": name, "wall_s": wall, "cpu_s": wall / 10}
    if cgroup is not None:
        data["cgroup"] = cgroup
    return data


def record(build: str, iteration: int, phases: list[dict], **extra: Any) -> dict:
    data = {
        "format": 1,
        "build": build,
        "iteration": iteration,
        "round": iteration,
        "started_at": f"2026-12-04T10:00:{iteration:02d}+00:00",
        "container_s": 1.5,
        "status": "ok",
        "failure": None,
        "error": None,
        "phases": phases,
        "telemetry": {},
    }
    data.update(extra)
    return data


def make_records() -> list[dict]:
    records = []
    for index in range(5):
        cgroup = {"nr_periods": 5.0, "nr_throttled": 4.0, "throttled_s": 0.25}
        records.append(
            record(
                "base",
                index + 1,
                [
                    phase("import", BASELINE_IMPORT[index], cgroup),
                    phase("call", BASELINE_CALL[index], cgroup),
                ],
            )
        )
        candidate_phases = [phase("import", CANDIDATE_IMPORT[index])]
        if index < 4:
            candidate_phases.append(phase("call", CANDIDATE_CALL[index]))
            records.append(record("cand", index + 1, candidate_phases))
        else:
            records.append(
                record(
                    "cand",
                    index + 1,
                    candidate_phases,
                    status="failed",
                    failure="phase-raised",
                    error="phase 'call' raised ValueError: bad key",
                )
            )
    return records


def make_manifest(**extra: Any) -> dict:
    manifest = {
        "format": 1,
        "run_id": "run-1",
        "status": "complete",
        "baseline": "base",
        "scenario": {
            "name": "synthetic",
            "phases": [
                {"name": "import", "code": "import sdk", "budget": "init"},
                {"name": "call", "code": "sdk.Client()", "budget": "invoke"},
            ],
            "budgets": {"init": 0.55, "invoke": 0.2},
        },
        "builds": [{"label": "base"}, {"label": "cand"}],
        "failed_builds": [],
        "base_image": {"stand_in": False, "tag": "python:3.11-slim"},
    }
    manifest.update(extra)
    return manifest


def find(items: Any, **keys: Any) -> Any:
    matches = [
        item for item in items if all(getattr(item, k) == v for k, v in keys.items())
    ]
    assert len(matches) == 1, f"expected one match for {keys}, got {matches}"
    return matches[0]


def test_frame_has_phase_and_total_rows() -> None:
    frame = records_to_frame(
        make_records(), phase_budgets={"import": "init", "call": "invoke"}
    )
    assert list(frame.columns) == [
        "build",
        "iteration",
        "round",
        "phase",
        "budget",
        "wall_s",
        "cpu_s",
        "throttled_s",
        "nr_throttled",
    ]
    # base: 5 x 2 phases + 5 totals; cand: 4 x 2 + 1 import + 4 totals.
    assert len(frame) == 28
    counts = frame.groupby(["build", "phase"]).size().to_dict()
    assert counts[("base", "total")] == 5
    assert counts[("cand", "import")] == 5
    assert counts[("cand", "call")] == 4
    assert counts[("cand", "total")] == 4


def test_frame_total_excludes_incomplete_iteration() -> None:
    frame = records_to_frame(make_records())
    totals = frame[(frame["build"] == "cand") & (frame["phase"] == "total")]
    assert sorted(totals["iteration"]) == [1, 2, 3, 4]
    assert len(frame[frame["phase"] == "total"]) == 9
    first = totals[totals["iteration"] == 1].iloc[0]
    assert first["wall_s"] == pytest.approx(0.25)
    assert first["cpu_s"] == pytest.approx(0.025)
    assert first["budget"] is None


def test_frame_reads_cgroup_counters() -> None:
    frame = records_to_frame(
        make_records(), phase_budgets={"import": "init", "call": "invoke"}
    )
    base_import = frame[(frame["build"] == "base") & (frame["phase"] == "import")]
    assert set(base_import["throttled_s"]) == {0.25}
    assert set(base_import["nr_throttled"]) == {4.0}
    assert set(base_import["budget"]) == {"init"}
    base_total = frame[(frame["build"] == "base") & (frame["phase"] == "total")]
    assert base_total["throttled_s"].tolist() == pytest.approx([0.5] * 5)
    cand_import = frame[(frame["build"] == "cand") & (frame["phase"] == "import")]
    assert cand_import["throttled_s"].isna().all()


def test_summary_descriptive_statistics_exact() -> None:
    summary = summarise(make_manifest(), make_records())
    base_import = find(summary.phase_summaries, build="base", phase="import")
    assert base_import.n == 5
    assert base_import.wall.mean == pytest.approx(0.5)
    assert base_import.wall.median == pytest.approx(0.5)
    assert base_import.wall.min == pytest.approx(0.3)
    assert base_import.wall.max == pytest.approx(0.7)
    assert base_import.wall.stdev == pytest.approx(math.sqrt(0.025))
    assert base_import.wall.cv == pytest.approx(math.sqrt(0.025) / 0.5)
    assert base_import.wall.p90 == pytest.approx(0.66)
    assert base_import.cpu.median == pytest.approx(0.05)
    assert base_import.throttled_s_median == pytest.approx(0.25)
    cand_call = find(summary.phase_summaries, build="cand", phase="call")
    assert cand_call.n == 4
    assert cand_call.wall.mean == pytest.approx(0.065)
    assert cand_call.wall.median == pytest.approx(0.065)
    assert cand_call.throttled_s_median is None
    cand_total = find(summary.phase_summaries, build="cand", phase="total")
    assert cand_total.n == 4
    assert cand_total.wall.max == pytest.approx(0.34)


def test_summary_budget_over_counts_and_worst_case() -> None:
    summary = summarise(make_manifest(), make_records())
    base_init = find(summary.budget_checks, build="base", budget="init")
    assert base_init.phases == ("import",)
    assert base_init.n == 5
    assert base_init.over == 2
    assert base_init.worst_s == pytest.approx(0.7)
    assert not base_init.passed
    base_invoke = find(summary.budget_checks, build="base", budget="invoke")
    assert base_invoke.over == 2
    assert base_invoke.worst_s == pytest.approx(0.30)
    cand_init = find(summary.budget_checks, build="cand", budget="init")
    assert cand_init.n == 5
    assert cand_init.over == 0
    assert cand_init.worst_s == pytest.approx(0.28)
    assert cand_init.passed
    cand_invoke = find(summary.budget_checks, build="cand", budget="invoke")
    assert cand_invoke.n == 4
    assert cand_invoke.passed
    assert summary.passed is False


def test_summary_budget_sums_phases_of_one_budget() -> None:
    manifest = make_manifest()
    for scenario_phase in manifest["scenario"]["phases"]:
        scenario_phase["budget"] = "init"
    manifest["scenario"]["budgets"] = {"init": 1.0}
    summary = summarise(manifest, make_records())
    base_init = find(summary.budget_checks, build="base", budget="init")
    assert base_init.phases == ("import", "call")
    assert base_init.worst_s == pytest.approx(1.0)
    assert base_init.over == 0
    cand_init = find(summary.budget_checks, build="cand", budget="init")
    assert cand_init.n == 4
    assert summary.passed is True


def test_summary_compares_candidate_with_baseline() -> None:
    summary = summarise(make_manifest(), make_records())
    assert summary.phases == ("import", "call", "total")
    assert [c.phase for c in summary.comparisons] == ["import", "call", "total"]
    import_comparison = find(summary.comparisons, phase="import")
    assert import_comparison.baseline == "base"
    assert import_comparison.candidate == "cand"
    assert import_comparison.result.verdict is Verdict.FASTER
    assert import_comparison.result.ratio == pytest.approx(0.24 / 0.5)
    assert import_comparison.result.p_value == pytest.approx(2 / 252)


def test_summary_metric_cpu_uses_cpu_times() -> None:
    summary = summarise(make_manifest(), make_records(), metric="cpu")
    call = find(summary.comparisons, phase="call")
    assert call.metric == "cpu"
    assert call.result.baseline_median == pytest.approx(0.02)
    assert call.result.candidate_median == pytest.approx(0.0065)


def test_summary_counts_failures_and_warns() -> None:
    summary = summarise(make_manifest(), make_records())
    failure = find(summary.failures, build="cand")
    assert failure.kind == "phase-raised"
    assert failure.count == 1
    assert failure.first_error == "phase 'call' raised ValueError: bad key"
    codes = [warning.code for warning in summary.warnings]
    assert "failed-iterations" in codes
    assert "stand-in-image" not in codes
    failed = find(summary.warnings, code="failed-iterations")
    assert failed.message.startswith("cand: 1 of 5 iterations failed (1 phase-raised)")


def test_summary_warns_unstable_phase_with_remedies() -> None:
    summary = summarise(make_manifest(), make_records())
    unstable = [w for w in summary.warnings if w.code == "unstable-phase"]
    messages = [w.message for w in unstable]
    assert any(
        m.startswith("base / import: wall time is unstable, CV 31.6%") for m in messages
    )
    assert all("--metric cpu" in m for m in messages)
    assert not any(" / total:" in m for m in messages)
    cpu_summary = summarise(make_manifest(), make_records(), metric="cpu")
    cpu_messages = [
        w.message for w in cpu_summary.warnings if w.code == "unstable-phase"
    ]
    assert cpu_messages
    assert not any("--metric cpu" in m for m in cpu_messages)


def test_summary_warns_from_manifest() -> None:
    manifest = make_manifest(
        status="interrupted",
        failed_builds=[{"label": "bad", "spec": "sdk==9", "error": "no such version"}],
        base_image={
            "requested": "python:3.11-slim",
            "tag": "coldstart-base:bookworm",
            "python_version": "3.11.2",
            "stand_in": True,
            "origin": "stand-in built from Debian bookworm packages",
        },
    )
    summary = summarise(manifest, make_records())
    codes = [warning.code for warning in summary.warnings]
    assert codes[:3] == ["stand-in-image", "failed-build", "incomplete-run"]
    stand_in = find(summary.warnings, code="stand-in-image")
    assert "coldstart-base:bookworm (Python 3.11.2) is a stand-in" in stand_in.message
    failed_build = find(summary.warnings, code="failed-build")
    assert (
        "Build bad (sdk==9) was not measured: no such version." in failed_build.message
    )


def test_summary_to_dict_is_json_ready() -> None:
    summary = summarise(make_manifest(), make_records())
    data = summary.to_dict()
    text = json.dumps(data, allow_nan=False)
    assert json.loads(text)["format"] == 1
    assert data["baseline"] == "base"
    assert data["passed"] is False
    assert data["budgets"][0]["phases"] == ["import"]
    assert data["comparisons"][0]["verdict"] == "faster"


def test_summary_too_few_iterations_is_inconclusive() -> None:
    records = [r for r in make_records() if r["build"] == "base" or r["iteration"] <= 2]
    summary = summarise(make_manifest(), records)
    comparison = find(summary.comparisons, phase="import")
    assert comparison.result.verdict is Verdict.INCONCLUSIVE
    assert comparison.result.reason.startswith("too few iterations (5 baseline, 2")
    data = summary.to_dict()
    assert data["comparisons"][0]["p_value"] is None


def test_summary_rejects_manifest_without_baseline() -> None:
    manifest = make_manifest()
    del manifest["baseline"]
    with pytest.raises(InvalidInput) as caught:
        summarise(manifest, make_records())
    assert str(caught.value) == (
        "the manifest has no baseline; it was not written by `coldstart run`, "
        "or the run failed before it started"
    )


def test_summary_rejects_unknown_metric() -> None:
    with pytest.raises(ValueError, match="metric must be 'wall' or 'cpu', not 'rss'"):
        summarise(make_manifest(), make_records(), metric="rss")  # type: ignore[arg-type]


def test_frame_total_sums_only_scenario_phases() -> None:
    frame = records_to_frame(make_records(), phase_budgets={"import": "init"})
    base_total = frame[(frame["build"] == "base") & (frame["phase"] == "total")]
    assert base_total["wall_s"].tolist() == pytest.approx(BASELINE_IMPORT)
    cand_total = frame[(frame["build"] == "cand") & (frame["phase"] == "total")]
    assert len(cand_total) == 4


def test_summary_pairs_builds_by_round() -> None:
    summary = summarise(make_manifest(), make_records())
    paired = find(summary.paired, phase="import", candidate="cand")
    assert paired.result.pairs == 5
    # Per-round ratios 0.67, 0.55, 0.48, 0.43, 0.40: the median is round 3's.
    assert paired.result.ratio == pytest.approx(0.24 / 0.50)
    assert paired.result.ratio_ci.high <= 0.67
    assert paired.result.p_value == pytest.approx(0.0625)
    call = find(summary.paired, phase="call", candidate="cand")
    assert call.result.pairs == 4
    total = find(summary.paired, phase="total", candidate="cand")
    assert total.result.pairs == 4


def test_summary_paired_in_json() -> None:
    data = summarise(make_manifest(), make_records()).to_dict()
    first = data["paired"][0]
    assert first["phase"] == "import"
    assert first["pairs"] == 5
    assert first["ratio"] == pytest.approx(0.48)
    assert data["nodes"] == []


def test_summary_medians_per_node() -> None:
    records = make_records()
    for item in records:
        hostname = "node-a" if item["round"] % 2 else "node-b"
        item["telemetry"] = {"node": {"id": hostname, "hostname": hostname}}
    summary = summarise(make_manifest(), records)
    on_a = find(summary.nodes, node="node-a", build="base", phase="import")
    assert on_a.n == 3
    assert on_a.wall_median == pytest.approx(0.50)
    on_b = find(summary.nodes, node="node-b", build="base", phase="import")
    assert on_b.n == 2
    assert on_b.wall_median == pytest.approx(0.50)
    assert on_b.cpu_median == pytest.approx(0.05)


def test_summary_warns_cpu_starved_phase() -> None:
    """Base's import waits 0.5 - 0.05 - 0.25 = 0.2 s beyond quota at the median."""
    summary = summarise(make_manifest(), make_records())
    starved = [w for w in summary.warnings if w.code == "cpu-starved"]
    assert [w.message.split(":")[0] for w in starved] == ["base / import"]
    assert "waited 0.200 s (median) for a CPU beyond its quota" in starved[0].message


def test_summary_excludes_warmup_records() -> None:
    warmup = record(
        "base",
        1,
        [phase("import", 9.0), phase("call", 9.0)],
        round=0,
        warmup=True,
        status="failed",
        failure="timeout",
        error="phase 'import' timed out after 120 s",
    )
    summary = summarise(make_manifest(), [warmup, *make_records()])
    plain = summarise(make_manifest(), make_records())
    assert summary.warmups == 1
    assert plain.warmups == 0
    assert summary.phase_summaries == plain.phase_summaries
    assert summary.failures == plain.failures
    assert summary.budget_checks == plain.budget_checks
    assert summary.to_dict()["warmups"] == 1


def test_summary_median_throttled_periods() -> None:
    summary = summarise(make_manifest(), make_records())
    by_key = {(s.build, s.phase): s for s in summary.phase_summaries}
    assert by_key[("base", "import")].nr_throttled_median == 4.0
    assert by_key[("base", "total")].nr_throttled_median == 8.0
    assert by_key[("base", "import")].throttled_s_median == 0.25
    assert by_key[("cand", "import")].nr_throttled_median is None


def test_summary_memory_peak_per_build() -> None:
    records = make_records()
    for index, item in enumerate(records):
        if item["build"] == "base":
            item["telemetry"] = {"cgroup": {"memory_peak_bytes": (index + 1) * 2**20}}
    summary = summarise(make_manifest(), records)
    (peak,) = summary.memory_peaks
    assert peak.build == "base"
    assert peak.n == 5
    # Base records sit at even positions 0, 2, ..., 8 of the list.
    assert peak.median_bytes == 5 * 2**20
    assert peak.max_bytes == 9 * 2**20


def test_failed_build_budgets_not_measured() -> None:
    records = [r for r in make_records() if r["build"] == "base"]
    build_failure = {"status": "failed", "failure": "build", "error": "no such version"}
    records.append(record("cand", 0, [], **build_failure))
    spec = {"label": "cand", "kind": "requirement", "raw": "sdk==9", "ref": None}
    manifest = make_manifest(
        builds=[{"label": "base"}],
        failed_builds=[{"label": "cand", "spec": spec, "error": "no such version"}],
        scenario={**make_manifest()["scenario"], "budgets": {"init": 5, "invoke": 5}},
    )
    summary = summarise(manifest, records)
    unmeasured = [c for c in summary.budget_checks if c.build == "cand"]
    assert [c.result for c in unmeasured] == ["not measured", "not measured"]
    assert summary.passed is True
    assert summary.budget_verdict == "passed"
    assert summary.describe_budgets() == "Budgets passed (2 not measured)"
    failed_build = find(summary.warnings, code="failed-build")
    assert failed_build.message.startswith(
        "Build cand (sdk==9) was not measured: no such version."
    )


def test_summary_without_records_has_no_data() -> None:
    summary = summarise(make_manifest(), [])
    assert summary.passed is False
    assert summary.budget_verdict == "no data"
    assert summary.describe_budgets() == (
        "No data: no iteration completed a budget's phases"
    )
    assert find(summary.warnings, code="no-data").message.startswith(
        "The run has no iteration records (raw.jsonl is missing or empty)"
    )

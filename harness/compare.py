"""Compare a build of one stored run with a build of another.

Run A provides the baseline build and run B the candidate build, each from its
own ``raw.jsonl``. The two runs must have measured under the same conditions:
``check_comparable`` rejects runs whose base image, Python version, resource
limits or scenario code differ, because a difference in timings could then come
from the setup rather than from the builds. The pair is then summarised and
rendered like one run, with the same analysis and exporters.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from harness.analysis import Metric, Summary, summarise
from harness.errors import InvalidInput
from harness.models import IterationRecord
from harness.results import RunDirectory

logger = logging.getLogger(__name__)

Getter = Callable[[Mapping[str, Any]], Any]

# Limits that do not change what a container measures.
IGNORED_LIMITS = {"timeout_s"}


@dataclass(frozen=True)
class StoredRun:
    """A run directory's manifest and records, read once."""

    path: Path
    manifest: Mapping[str, Any]
    records: tuple[IterationRecord, ...]

    @property
    def run_id(self) -> str:
        return str(self.manifest.get("run_id") or self.path.name)

    @classmethod
    def read(cls, path: Path) -> StoredRun:
        directory = RunDirectory.open(path)
        return cls(path, directory.read_manifest(), tuple(directory.read_records()))


@dataclass(frozen=True)
class RunComparison:
    """Two stored builds summarised as one baseline-candidate pair."""

    run_a: StoredRun
    run_b: StoredRun
    build_a: str
    build_b: str
    manifest: Mapping[str, Any]
    records: tuple[IterationRecord, ...]
    summary: Summary


def build_labels(run: StoredRun) -> list[str]:
    """Return the run's build labels: its baseline first, then in manifest order."""
    labels: dict[str, None] = {}
    if run.manifest.get("baseline"):
        labels[str(run.manifest["baseline"])] = None
    for build in run.manifest.get("builds", []):
        labels.setdefault(build["label"], None)
    return list(labels)


def choose_build(run: StoredRun, label: str | None, side: str, default: str) -> str:
    """Return ``label`` if the run has it, else raise InvalidInput naming the run."""
    labels = build_labels(run)
    chosen = label if label is not None else default
    if chosen not in labels:
        known = ", ".join(repr(name) for name in labels) or "none"
        raise InvalidInput(
            f"run {side} ({run.path}) has no build {chosen!r}: its builds are "
            f"{known} (choose one with --build-{side.lower()})"
        )
    return chosen


def default_candidate(run: StoredRun) -> str:
    """Return the first build of the run that is not its baseline, else the baseline."""
    labels = build_labels(run)
    others = [label for label in labels if label != run.manifest.get("baseline")]
    return others[0] if others else str(run.manifest.get("baseline"))


# --- what must match ---------------------------------------------------------


def get_path(manifest: Mapping[str, Any], dotted: str) -> Any:
    value: Any = manifest
    for key in dotted.split("."):
        value = value.get(key) if isinstance(value, Mapping) else None
    return value


def scenario_phases(manifest: Mapping[str, Any]) -> Any:
    phases = get_path(manifest, "scenario.phases") or []
    return [{"name": p.get("name"), "code": p.get("code")} for p in phases]


def field_getter(dotted: str, empty: Any = None) -> Getter:
    def get(manifest: Mapping[str, Any]) -> Any:
        value = get_path(manifest, dotted)
        return empty if value is None else value

    return get


def comparable_fields(
    manifest_a: Mapping[str, Any], manifest_b: Mapping[str, Any]
) -> list[tuple[str, Getter]]:
    """Return (field name, getter) for every manifest field that must match."""
    fields = [
        ("base_image.image_id", field_getter("base_image.image_id")),
        ("base_image.tag", field_getter("base_image.tag")),
        ("base_image.python_version", field_getter("base_image.python_version")),
        ("python_versions", field_getter("python_versions", [])),
    ]
    limits = set(manifest_a.get("limits") or {}) | set(manifest_b.get("limits") or {})
    for key in sorted(limits - IGNORED_LIMITS):
        fields.append((f"limits.{key}", field_getter(f"limits.{key}")))
    fields += [
        ("scenario.phases", scenario_phases),
        ("scenario.setup", field_getter("scenario.setup", "")),
        ("scenario.env", field_getter("scenario.env", {})),
        ("scenario.packages", field_getter("scenario.packages", [])),
    ]
    return fields


def check_comparable(run_a: StoredRun, run_b: StoredRun) -> None:
    """Raise InvalidInput naming the first field that differs between the runs."""
    for name, getter in comparable_fields(run_a.manifest, run_b.manifest):
        value_a, value_b = getter(run_a.manifest), getter(run_b.manifest)
        if value_a != value_b:
            raise InvalidInput(
                f"cannot compare run {run_a.run_id} with run {run_b.run_id}: "
                f"{name} differs ({format_value(value_a)} in {run_a.run_id}, "
                f"{format_value(value_b)} in {run_b.run_id}); compare runs made "
                "with the same base image, limits and scenario"
            )


def format_value(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


# --- the combined run --------------------------------------------------------


def distinct_labels(
    run_a: StoredRun, build_a: str, run_b: StoredRun, build_b: str
) -> tuple[str, str]:
    """Return report labels; equal labels get their run ids, so they stay apart."""
    if build_a != build_b:
        return build_a, build_b
    return f"{build_a} (run {run_a.run_id})", f"{build_b} (run {run_b.run_id})"


def relabel_build(run: StoredRun, label: str, new_label: str) -> dict[str, Any]:
    for build in run.manifest.get("builds", []):
        if build["label"] == label:
            return {**build, "label": new_label}
    return {"label": new_label}


def relabel_records(
    run: StoredRun, label: str, new_label: str
) -> list[IterationRecord]:
    return [replace(r, build=new_label) for r in run.records if r.build == label]


def combined_status(run_a: StoredRun, run_b: StoredRun) -> str:
    statuses = {run.manifest.get("status", "complete") for run in (run_a, run_b)}
    return "complete" if statuses == {"complete"} else ", ".join(sorted(statuses))


def combine_manifests(
    run_a: StoredRun, run_b: StoredRun, labels: Sequence[str], builds: Sequence[str]
) -> dict[str, Any]:
    """Return a manifest for the pair: run A's setup, one build from each run."""
    manifest = dict(run_a.manifest)
    plan_a = dict(run_a.manifest.get("plan") or {})
    plan_b = run_b.manifest.get("plan") or {}
    if plan_a.get("iterations") != plan_b.get("iterations"):
        plan_a["iterations"] = f"{plan_a.get('iterations')}/{plan_b.get('iterations')}"
    manifest.update(
        run_id=f"{run_a.run_id} vs {run_b.run_id}",
        status=combined_status(run_a, run_b),
        baseline=labels[0],
        builds=[
            relabel_build(run_a, builds[0], labels[0]),
            relabel_build(run_b, builds[1], labels[1]),
        ],
        failed_builds=[],
        plan=plan_a,
        compared_runs=[
            {"run_id": run.run_id, "path": str(run.path), "build": build}
            for run, build in ((run_a, builds[0]), (run_b, builds[1]))
        ],
    )
    return manifest


def compare_runs(
    path_a: Path,
    path_b: Path,
    *,
    build_a: str | None = None,
    build_b: str | None = None,
    metric: Metric = "wall",
) -> RunComparison:
    """Compare build ``build_a`` of run A (baseline) with ``build_b`` of run B.

    By default run A's baseline is compared with run B's first build that is
    not its baseline. Raises InvalidInput when a build is missing or the runs
    are not comparable.
    """
    run_a, run_b = StoredRun.read(path_a), StoredRun.read(path_b)
    label_a = choose_build(run_a, build_a, "A", str(run_a.manifest.get("baseline")))
    label_b = choose_build(run_b, build_b, "B", default_candidate(run_b))
    check_comparable(run_a, run_b)
    labels = distinct_labels(run_a, label_a, run_b, label_b)
    records = relabel_records(run_a, label_a, labels[0])
    records += relabel_records(run_b, label_b, labels[1])
    manifest = combine_manifests(run_a, run_b, labels, (label_a, label_b))
    # Round r of one run has no relation to round r of another, so the paired
    # comparison, which pairs builds by round, does not apply.
    summary = replace(summarise(manifest, records, metric=metric), paired=())
    logger.info(
        "comparing %s of run %s with %s of run %s",
        label_a,
        run_a.run_id,
        label_b,
        run_b.run_id,
    )
    return RunComparison(
        run_a, run_b, label_a, label_b, manifest, tuple(records), summary
    )


def describe_comparison(comparison: RunComparison) -> str:
    """Name the runs and builds compared, in one plain-text sentence."""
    return (
        f"Compares build {comparison.build_a} of run {comparison.run_a.run_id} "
        f"({comparison.run_a.path}) as the baseline with build {comparison.build_b} "
        f"of run {comparison.run_b.run_id} ({comparison.run_b.path}) as the "
        "candidate."
    )


def render_comparison(comparison: RunComparison, output_format: str) -> str:
    """Render the pair in ``output_format``, headed by which runs it compares."""
    from harness.export.markdown import REPORT_MARKER, escape_markdown
    from harness.report import render

    text = render(
        output_format, comparison.manifest, comparison.records, comparison.summary
    )
    sentence = describe_comparison(comparison)
    if output_format == "json":
        data = json.loads(text)
        data["compared_runs"] = comparison.manifest["compared_runs"]
        return json.dumps(data, indent=2, allow_nan=False) + "\n"
    if output_format == "markdown":
        body = text.removeprefix(REPORT_MARKER + "\n")
        return f"{REPORT_MARKER}\n{escape_markdown(sentence)}\n\n{body}"
    return f"{sentence}\n\n{text}"

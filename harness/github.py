"""GitHub Actions integration: the step summary and step outputs.

GitHub Actions sets two environment variables that name files a step appends
to: ``GITHUB_STEP_SUMMARY`` (Markdown shown on the run's summary page) and
``GITHUB_OUTPUT`` (``name=value`` lines that later steps read as
``steps.<id>.outputs.<name>``). Every output is written in the multiline form
``name<<DELIMITER``, value, ``DELIMITER`` with a random delimiter, so no value
can end its own entry early and inject another output.
"""

from __future__ import annotations

import logging
import math
import re
import secrets
from collections.abc import Iterable, Mapping
from pathlib import Path

from harness.analysis import Comparison, Summary
from harness.errors import InvalidInput

logger = logging.getLogger(__name__)

STEP_SUMMARY_VARIABLE = "GITHUB_STEP_SUMMARY"
OUTPUT_VARIABLE = "GITHUB_OUTPUT"
SLUG_PATTERN = re.compile(r"[^a-z0-9]+")


def slugify(text: str) -> str:
    """Return ``text`` as lowercase letters, digits and dashes, for output names."""
    return SLUG_PATTERN.sub("-", text.lower()).strip("-") or "phase"


def github_file(environ: Mapping[str, str], variable: str) -> Path:
    """Return the file named by ``variable``; raise InvalidInput if it is unset."""
    value = environ.get(variable)
    if not value:
        raise InvalidInput(
            f"--github needs the environment variable {variable}, which is not "
            "set: run inside GitHub Actions or set it to a file path"
        )
    return Path(value)


def require_github_files(environ: Mapping[str, str]) -> tuple[Path, Path]:
    """Return the step summary and output files; raise InvalidInput if unset."""
    return (
        github_file(environ, STEP_SUMMARY_VARIABLE),
        github_file(environ, OUTPUT_VARIABLE),
    )


def format_output(name: str, value: str) -> str:
    """Return one output entry in the multiline form with a random delimiter."""
    delimiter = f"coldstart_{secrets.token_hex(16)}"
    while delimiter in value:
        delimiter = f"coldstart_{secrets.token_hex(16)}"
    return f"{name}<<{delimiter}\n{value}\n{delimiter}\n"


def phase_slugs(phases: Iterable[str]) -> dict[str, str]:
    """Map each phase to a unique slug; a repeated slug gets a numeric suffix."""
    slugs: dict[str, str] = {}
    used: set[str] = set()
    for phase in phases:
        slug = slugify(phase)
        candidate, number = slug, 2
        while candidate in used:
            candidate, number = f"{slug}-{number}", number + 1
        used.add(candidate)
        slugs[phase] = candidate
    return slugs


def comparison_outputs(
    comparison: Comparison, prefix: str, candidate_key: str
) -> list[tuple[str, str]]:
    result = comparison.result
    return [
        (f"{prefix}-median-baseline", format_number(result.baseline_median)),
        (f"{prefix}-median-{candidate_key}", format_number(result.candidate_median)),
        (f"{prefix}-ratio", format_number(result.ratio)),
        (f"{prefix}-verdict", result.verdict.value),
    ]


def format_number(value: float) -> str:
    return "nan" if math.isnan(value) else f"{value:.6g}"


def collect_outputs(
    summary: Summary, report_path: Path, passed: bool
) -> list[tuple[str, str]]:
    """Return the step outputs: verdict, report path and figures per phase.

    Phases of the first candidate are named ``<phase-slug>-...``. Any further
    candidate's phases are named ``<phase-slug>-<build-slug>-...``. Medians
    are in seconds, of the summary's metric.
    """
    outputs = [("verdict", "pass" if passed else "fail"), ("report", str(report_path))]
    slugs = phase_slugs(summary.phases)
    candidates = [build for build in summary.builds if build != summary.baseline]
    for comparison in summary.comparisons:
        slug = slugs[comparison.phase]
        if comparison.candidate == candidates[0]:
            outputs += comparison_outputs(comparison, slug, "candidate")
        else:
            prefix = f"{slug}-{slugify(comparison.candidate)}"
            outputs += comparison_outputs(comparison, prefix, "candidate")
    return outputs


def append_text(path: Path, text: str) -> None:
    try:
        with path.open("a", encoding="utf-8") as file:
            file.write(text)
    except OSError as error:
        raise InvalidInput(
            f"cannot append to {path}: {error.strerror or error} (check the path "
            "in GITHUB_STEP_SUMMARY or GITHUB_OUTPUT)"
        ) from error


def write_github(
    environ: Mapping[str, str],
    summary: Summary,
    markdown: str,
    report_path: Path,
    passed: bool,
) -> None:
    """Append the Markdown report to the step summary and the figures to outputs.

    Both variables are checked before either file is written, so a missing one
    leaves both files unchanged.
    """
    summary_file, output_file = require_github_files(environ)
    append_text(summary_file, markdown if markdown.endswith("\n") else markdown + "\n")
    outputs = collect_outputs(summary, report_path, passed)
    append_text(output_file, "".join(format_output(n, v) for n, v in outputs))
    logger.info(
        "wrote the step summary to %s and %d outputs to %s",
        summary_file,
        len(outputs),
        output_file,
    )

"""The on-disk result format: one directory per run under ``results/``.

A run directory contains ``manifest.json`` (how the run was set up and how it
ended), ``raw.jsonl`` (one IterationRecord per line, appended as each container
finishes), and ``summary.json`` and ``report.md`` written at the end. Every
file carries ``format`` = models.RESULT_FORMAT.

Each manifest write replaces the file atomically, and each record is flushed
and fsynced before the next container starts. A crash can therefore lose at
most the line being written, and readers skip such a truncated last line.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import re
import secrets
import tempfile
from datetime import datetime
from pathlib import Path
from typing import Any

from harness.errors import ColdstartError, ExitCode, InvalidInput
from harness.models import RESULT_FORMAT, IterationRecord

logger = logging.getLogger(__name__)

MANIFEST = "manifest.json"
RAW = "raw.jsonl"
SUMMARY = "summary.json"
REPORT = "report.md"


class ResultsUnwritable(ColdstartError):
    """A results file could not be written: no permission, disk full, ..."""

    exit_code = ExitCode.INVALID_INPUT

    def __init__(self, path: Path, error: OSError) -> None:
        cause = error.strerror or str(error)
        if error.errno in SPACE_ERRORS:
            fix = "free space or pass a writable directory with --results"
        else:
            fix = "pass a writable directory with --results"
        super().__init__(f"cannot write results to {path}: {cause} ({fix})")
        self.path = path


# Write errors that more space fixes: a full disk, a quota, a file size limit.
SPACE_ERRORS = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG}


def read_file_mode() -> int:
    """Return the mode that open() gives a new file under this process's umask.

    os.umask can only be read by setting it, so this runs once at import,
    before any thread could create a file in between.
    """
    mask = os.umask(0o022)
    os.umask(mask)
    return 0o666 & ~mask


# mkstemp creates files with mode 0600; the run's files get the usual mode so
# that a CI uploader running as another user can read them, as raw.jsonl.
FILE_MODE = read_file_mode()


# Characters kept in names derived from labels, git refs or run ids.
UNSAFE_NAME_CHARACTERS = re.compile(r"[^A-Za-z0-9._-]+")
MAX_NAME_LENGTH = 80


def safe_file_name(text: str) -> str:
    """Return ``text`` as a single, visible path component.

    Runs of characters other than letters, digits, '.', '_' and '-' become
    '-', and leading dots and dashes are dropped, so ``jar/lazy-imports``
    becomes ``jar-lazy-imports`` and ``../../etc`` becomes ``etc``. The result
    is never empty, '.' or '..', and at most MAX_NAME_LENGTH characters.
    """
    name = UNSAFE_NAME_CHARACTERS.sub("-", text).lstrip(".-")[:MAX_NAME_LENGTH]
    return name or "unnamed"


def new_run_id(now: datetime) -> str:
    """Return a run id such as ``20261204-154300-3fa2``, sortable by time."""
    return f"{now:%Y%m%d-%H%M%S}-{secrets.token_hex(2)}"


class RunDirectory:
    """One run's results directory. Create it with create() or open()."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._raw_tail_checked = False

    @classmethod
    def create(cls, root: Path, run_id: str) -> RunDirectory:
        """Create ``root/run_id``; raises if it exists, so no run is overwritten.

        Raises InvalidInput when ``run_id`` is not a plain file name.
        """
        if safe_file_name(run_id) != run_id:
            raise InvalidInput(
                f"invalid run id {run_id!r}: use letters, digits, '.', '_' or '-'"
            )
        path = root / run_id
        try:
            root.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise ResultsUnwritable(root, error) from error
        try:
            path.mkdir()
        except FileExistsError:
            raise InvalidInput(
                f"results directory already exists: {path} (choose another run id)"
            ) from None
        except OSError as error:
            raise ResultsUnwritable(path, error) from error
        return cls(path)

    @classmethod
    def open(cls, path: Path) -> RunDirectory:
        """Open an existing run directory and check its manifest's format."""
        if not (path / MANIFEST).is_file():
            raise InvalidInput(f"not a coldstart run directory: {path} (no {MANIFEST})")
        run_dir = cls(path)
        run_dir.read_manifest()
        return run_dir

    @property
    def run_id(self) -> str:
        return self.path.name

    @property
    def manifest_path(self) -> Path:
        return self.path / MANIFEST

    @property
    def raw_path(self) -> Path:
        return self.path / RAW

    @property
    def summary_path(self) -> Path:
        return self.path / SUMMARY

    @property
    def report_path(self) -> Path:
        return self.path / REPORT

    def write_manifest(self, data: dict[str, Any]) -> None:
        """Replace the manifest atomically; ``format`` is always set."""
        manifest = {"format": RESULT_FORMAT, **data}
        self.write_text(MANIFEST, json.dumps(manifest, indent=2) + "\n")

    def update_manifest(self, **fields: Any) -> None:
        """Set the given top-level manifest fields and keep the others."""
        manifest = self.read_manifest()
        manifest.update(fields)
        self.write_manifest(manifest)

    def read_manifest(self) -> dict[str, Any]:
        """Return the manifest; raises InvalidInput if it is unreadable or newer."""
        manifest = load_json(self.manifest_path)
        if not isinstance(manifest, dict):
            raise InvalidInput(f"invalid manifest {self.manifest_path}: not an object")
        check_format(manifest.get("format"), self.manifest_path)
        return manifest

    def append_record(self, record: IterationRecord) -> None:
        """Append one line to raw.jsonl and fsync it before returning."""
        line = json.dumps(record.to_dict(), sort_keys=True) + "\n"
        try:
            if not self._raw_tail_checked:
                drop_partial_line(self.raw_path)
                self._raw_tail_checked = True
            with self.raw_path.open("ab") as raw:
                raw.write(line.encode("utf-8"))
                raw.flush()
                os.fsync(raw.fileno())
        except OSError as error:
            raise ResultsUnwritable(self.raw_path, error) from error

    def read_records(self) -> list[IterationRecord]:
        """Return every record in raw.jsonl, skipping a truncated last line."""
        if not self.raw_path.exists():
            return []
        lines = self.raw_path.read_text("utf-8", errors="replace").split("\n")
        records = []
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            is_last = number == len(lines)
            record = parse_record_line(self.raw_path, number, line, is_last)
            if record is not None:
                records.append(record)
        return records

    def write_text(self, name: str, text: str) -> None:
        """Write a file in the run directory atomically (temp file + rename)."""
        if Path(name).name != name or name in (".", ".."):
            raise ValueError(f"not a plain file name: {name!r}")
        target = self.path / name
        try:
            write_atomically(target, text.encode("utf-8"))
        except OSError as error:
            raise ResultsUnwritable(target, error) from error


def write_atomically(target: Path, data: bytes) -> None:
    """Write ``data`` to a temporary file beside ``target``, then rename it."""
    handle, temporary = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.")
    try:
        os.fchmod(handle, FILE_MODE)
        with os.fdopen(handle, "wb") as file:
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, target)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def drop_partial_line(path: Path) -> None:
    """Cut a line that a crash left without its newline, so appends stay valid."""
    if not path.exists() or path.stat().st_size == 0:
        return
    data = path.read_bytes()
    if data.endswith(b"\n"):
        return
    keep = data.rfind(b"\n") + 1
    logger.warning(
        "dropping a truncated last line (%d bytes) from %s", len(data) - keep, path
    )
    with path.open("r+b") as raw:
        raw.truncate(keep)
        os.fsync(raw.fileno())


def parse_record_line(
    path: Path, number: int, line: str, is_last: bool
) -> IterationRecord | None:
    """Parse one raw.jsonl line; return None, with a warning, for a bad line.

    A bad last line is what a crash mid-write leaves. A record of a newer
    format raises InvalidInput, because skipping it would hide data.
    """
    problem = find_record_problem(line)
    if problem is None:
        data = json.loads(line)
        check_format(data["format"], path)
        try:
            return IterationRecord.from_dict(data)
        except (ValueError, KeyError, TypeError, AttributeError) as error:
            problem = f"invalid field ({type(error).__name__}: {error})"
    if is_last:
        logger.warning("ignoring truncated last line %d of %s", number, path)
    else:
        logger.warning("skipping line %d of %s: %s", number, path, problem)
    return None


def find_record_problem(line: str) -> str | None:
    """Return why a raw.jsonl line is not a record object, or None."""
    try:
        data = json.loads(line)
    except ValueError as error:
        return f"invalid JSON ({error})"
    if not isinstance(data, dict):
        return "expected a JSON object"
    version = data.get("format")
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        return "missing or invalid 'format' field"
    return None


def load_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text("utf-8"))
    except FileNotFoundError:
        raise InvalidInput(f"missing {path}: not a coldstart run directory") from None
    except (OSError, ValueError) as error:
        raise InvalidInput(f"cannot read {path}: {error}") from None


def check_format(version: Any, path: Path) -> None:
    """Raise InvalidInput unless ``version`` is a format this code can read."""
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise InvalidInput(f"invalid {path}: missing or invalid 'format' field")
    if version > RESULT_FORMAT:
        raise InvalidInput(
            f"{path} uses result format {version}, but this coldstart reads "
            f"format {RESULT_FORMAT} and older (upgrade coldstart)"
        )

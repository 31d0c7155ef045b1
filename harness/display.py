"""Progress display for a run, on stderr, with a silent variant.

The runner calls the same four methods whatever the display is, so ``--quiet``,
pipes and tests use SilentDisplay and a terminal gets RichDisplay.
"""

from __future__ import annotations

from typing import Protocol

from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from harness.environment import Environment
from harness.models import IterationRecord


class Display(Protocol):
    """Receiver of run progress: total work up front, then one call per record."""

    def start(self, total: int, description: str) -> None: ...

    def advance(self, record: IterationRecord) -> None: ...

    def log(self, message: str) -> None: ...

    def stop(self) -> None: ...


class SilentDisplay:
    """A display that shows nothing, for --quiet, pipes and tests."""

    def start(self, total: int, description: str) -> None:
        pass

    def advance(self, record: IterationRecord) -> None:
        pass

    def log(self, message: str) -> None:
        pass

    def stop(self) -> None:
        pass


class RichDisplay:
    """A progress bar with counts, elapsed time and ETA on the given console.

    Each failed iteration gets a line above the bar naming the build and cause.
    """

    def __init__(self, console: Console) -> None:
        self.console = console
        self.failures = 0
        self._progress: Progress | None = None
        self._task: TaskID | None = None

    def start(self, total: int, description: str) -> None:
        self._progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[failures]}"),
            TimeElapsedColumn(),
            TextColumn("ETA"),
            TimeRemainingColumn(),
            console=self.console,
            transient=False,
        )
        self._task = self._progress.add_task(
            escape(description), total=total, failures=""
        )
        self._progress.start()

    def advance(self, record: IterationRecord) -> None:
        if self._progress is None or self._task is None:
            return
        if not record.ok:
            self.failures += 1
            self.log(format_failure(record))
        failures = f"[red]{self.failures} failed[/]" if self.failures else ""
        self._progress.update(self._task, advance=1, failures=failures)

    def log(self, message: str) -> None:
        # Printing through the Progress's console keeps the bar below the line.
        self.console.print(message, markup=False, highlight=False)

    def stop(self) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None


def format_failure(record: IterationRecord) -> str:
    """Return one line naming the build, the iteration and the cause."""
    kind = record.failure.value if record.failure else "unknown"
    return (
        f"build {record.build!r} iteration {record.iteration} failed "
        f"({kind}): {record.error}"
    )


def make_display(env: Environment) -> Display:
    """Return a RichDisplay on a terminal, else (or with --quiet) a silent one."""
    if env.interactive:
        return RichDisplay(env.stderr)
    return SilentDisplay()

"""Parse build specs: where a build's SDK comes from.

A spec is one of, checked in this order:

- a wheel file (``dist/stripe-15.3.0-py3-none-any.whl``);
- ``PATH@REF``, a git ref of a local checkout (``../sdk@feature/lazy-imports``);
- a local source directory with ``pyproject.toml`` or ``setup.py``;
- a PEP 508 requirement (``stripe==15.3.0``).

Relative paths are resolved against ``cwd`` and stored absolute.
"""

from __future__ import annotations

import contextlib
import re
import subprocess
from pathlib import Path

from packaging.requirements import InvalidRequirement, Requirement

from harness.errors import InvalidInput
from harness.models import BuildSpec, SpecKind

LABEL_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,39}")

# "name=1.0" or "name = 1.0": a single "=" where pip expects "==".
SINGLE_EQUALS_PATTERN = re.compile(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)\s*=\s*([^=<>!~]+)")

PROJECT_FILES = ("pyproject.toml", "setup.py")


def parse_build_option(text: str) -> BuildSpec:
    """Parse one ``--build LABEL=SPEC`` option value."""
    label, separator, spec_text = text.partition("=")
    if not separator or not spec_text:
        raise InvalidInput(
            f"invalid --build value {text!r}: expected LABEL=SPEC "
            "(for example 'baseline=stripe==15.3.0')"
        )
    check_label(label)
    return parse_spec(label, spec_text)


def check_label(label: str) -> None:
    """Raise InvalidInput unless ``label`` is usable in file names and tables."""
    if not LABEL_PATTERN.fullmatch(label):
        raise InvalidInput(
            f"invalid build label {label!r}: use 1-40 letters, digits, '.', '_' "
            "or '-', starting with a letter or digit"
        )


def parse_spec(label: str, text: str, cwd: Path | None = None) -> BuildSpec:
    """Parse the spec ``text`` of build ``label`` into a BuildSpec.

    Raises InvalidInput naming the spec and the fix when it matches none
    of the four kinds, when a wheel file is missing, or when a git ref does not exist.
    A ``.whl`` path with ``://`` in it is a URL requirement (``name @ URL``).
    """
    base = cwd if cwd is not None else Path.cwd()
    text = text.strip()
    if not text:
        raise InvalidInput(
            f"empty build spec for build {label!r}: give a requirement, wheel, "
            "directory or PATH@REF"
        )
    if not text.isprintable():
        # A NUL byte makes every file system call raise ValueError.
        raise spec_error(label, text, "contains control characters")
    if text.endswith(".whl") and "://" not in text:
        return parse_wheel(label, text, base)
    if (git_spec := parse_git_ref(label, text, base)) is not None:
        return git_spec
    directory = resolve_path(text, base)
    if directory.is_dir():
        return parse_directory(label, text, directory)
    return parse_requirement(label, text, base)


def resolve_path(text: str, base: Path) -> Path:
    path = Path(text)
    # "~name" of a user that does not exist stays a relative path.
    with contextlib.suppress(RuntimeError):
        path = path.expanduser()
    if not path.is_absolute():
        path = base / path
    return path.resolve()


def parse_wheel(label: str, text: str, base: Path) -> BuildSpec:
    path = resolve_path(text, base)
    if not path.is_file():
        raise spec_error(label, text, f"wheel file {path} not found")
    return BuildSpec(label=label, kind=SpecKind.WHEEL, raw=text, path=path)


def parse_git_ref(label: str, text: str, base: Path) -> BuildSpec | None:
    """Split ``PATH@REF`` on the last ``@`` whose left part is a directory.

    Returns None when no ``@`` has a directory to its left, so the text is
    tried as a directory or a requirement (``name @ URL`` is a requirement).
    """
    for position in reversed([i for i, char in enumerate(text) if char == "@"]):
        directory = resolve_path(text[:position], base)
        if text[:position] and directory.is_dir():
            ref = text[position + 1 :]
            check_git_ref(label, text, directory, ref)
            return BuildSpec(
                label=label, kind=SpecKind.GIT_REF, raw=text, path=directory, ref=ref
            )
    return None


def check_git_ref(label: str, text: str, directory: Path, ref: str) -> None:
    """Raise InvalidInput unless ``ref`` names a commit in the checkout."""
    if not ref or ref.startswith("-"):
        raise spec_error(
            label, text, f"invalid git ref {ref!r} (write PATH@REF, e.g. '../sdk@v1.0')"
        )
    if not is_git_checkout(directory):
        raise spec_error(
            label,
            text,
            f"{directory} is not a git checkout "
            "(drop '@REF' to build the directory as it is)",
        )
    if resolve_commit(directory, ref) is None:
        raise spec_error(
            label,
            text,
            f"git ref {ref!r} not found in {directory} (list refs with: "
            f"git -C {directory} tag; git -C {directory} branch -a)",
        )


def is_git_checkout(directory: Path) -> bool:
    completed = subprocess.run(
        ["git", "-C", str(directory), "rev-parse", "--is-inside-work-tree"],
        capture_output=True,
        text=True,
        check=False,
    )
    return completed.returncode == 0 and completed.stdout.strip() == "true"


def resolve_commit(directory: Path, ref: str) -> str | None:
    """Return the full SHA of the commit ``ref`` names, or None if there is none."""
    completed = subprocess.run(
        ["git", "-C", str(directory), "rev-parse", "--verify", "--quiet"]
        + [f"{ref}^{{commit}}"],
        capture_output=True,
        text=True,
        check=False,
    )
    if completed.returncode != 0:
        return None
    return completed.stdout.strip()


def parse_directory(label: str, text: str, directory: Path) -> BuildSpec:
    if not any((directory / name).is_file() for name in PROJECT_FILES):
        raise spec_error(
            label,
            text,
            f"directory {directory} has no pyproject.toml or setup.py "
            "(point at the SDK's source checkout)",
        )
    return BuildSpec(label=label, kind=SpecKind.PATH, raw=text, path=directory)


def parse_requirement(label: str, text: str, base: Path) -> BuildSpec:
    try:
        requirement = Requirement(text)
    except InvalidRequirement:
        raise spec_error(label, text, describe_unknown_spec(text, base)) from None
    return BuildSpec(
        label=label, kind=SpecKind.REQUIREMENT, raw=text, requirement=str(requirement)
    )


def describe_unknown_spec(text: str, base: Path) -> str:
    """Explain why ``text`` is no spec kind, with a likely fix where one exists."""
    problem = "not a requirement, wheel, directory or PATH@REF"
    if match := SINGLE_EQUALS_PATTERN.fullmatch(text):
        name, version = match.groups()
        return f"{problem} (did you mean '{name}=={version.strip()}'?)"
    if "/" in text or text.startswith((".", "~")):
        path = resolve_path(text.rpartition("@")[0] or text, base)
        if path.is_file():
            return f"{problem} ({path} is a file, not a directory or .whl wheel)"
        return f"{problem} (directory {path} not found)"
    return problem


def spec_error(label: str, text: str, problem: str) -> InvalidInput:
    return InvalidInput(f"invalid build spec {text!r} for build {label!r}: {problem}")


def distribution_name(spec: BuildSpec) -> str | None:
    """Return the distribution name of a requirement spec, else None."""
    if spec.kind is not SpecKind.REQUIREMENT or spec.requirement is None:
        return None
    return Requirement(spec.requirement).name

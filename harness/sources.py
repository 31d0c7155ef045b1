"""Identify and export the source of a build before pip builds it.

A build's identity (a commit SHA, a content hash, or an exact pin) decides
whether its cached wheelhouse can be reused. Exporting copies the source into
a scratch directory, so pip never writes into the user's checkout.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from packaging.requirements import Requirement

from harness.errors import BuildFailed
from harness.models import BuildSpec, SpecKind
from harness.specs import is_git_checkout, resolve_commit

# Directories skipped when hashing or copying a source tree that is not a git
# checkout: caches, virtual environments and build output.
SKIPPED_DIRECTORIES = {
    ".git",
    ".hg",
    ".mypy_cache",
    ".nox",
    ".pytest_cache",
    ".ruff_cache",
    ".tox",
    ".venv",
    "__pycache__",
    "build",
    "dist",
    "node_modules",
    "venv",
}


@dataclass(frozen=True)
class SourceIdentity:
    """Identity of a build's SDK, known before pip runs.

    ``fingerprint`` goes into the wheelhouse key. ``reusable`` is False for
    requirements that are not exact pins, whose resolution can change.
    """

    fingerprint: dict[str, Any]
    commit: str | None = None
    reusable: bool = True
    files: tuple[str, ...] = field(default=(), repr=False)


def identify_source(spec: BuildSpec) -> SourceIdentity:
    """Return the identity of ``spec``'s source.

    Raises BuildFailed when a git ref no longer names a commit.
    """
    if spec.kind is SpecKind.REQUIREMENT:
        assert spec.requirement is not None
        requirement = Requirement(spec.requirement)
        return SourceIdentity(
            fingerprint={"requirement": str(requirement)},
            reusable=is_exact_pin(requirement),
        )
    assert spec.path is not None
    if spec.kind is SpecKind.WHEEL:
        return SourceIdentity(fingerprint={"wheel_sha256": file_sha256(spec.path)})
    if spec.kind is SpecKind.GIT_REF:
        return identify_git_ref(spec)
    files = list_source_files(spec.path)
    return SourceIdentity(
        fingerprint={"content_sha256": hash_tree(spec.path, files)},
        commit=describe_checkout(spec.path),
        files=files,
    )


def is_exact_pin(requirement: Requirement) -> bool:
    """Return whether ``requirement`` names exactly one version, like ``x==1.2``."""
    specifiers = list(requirement.specifier)
    if requirement.url or len(specifiers) != 1:
        return False
    only = specifiers[0]
    return only.operator in ("==", "===") and "*" not in only.version


def identify_git_ref(spec: BuildSpec) -> SourceIdentity:
    assert spec.path is not None and spec.ref is not None
    commit = resolve_commit(spec.path, spec.ref)
    if commit is None:
        raise BuildFailed(
            spec.label,
            f"git ref {spec.ref!r} not found in {spec.path} (list refs with: "
            f"git -C {spec.path} tag; git -C {spec.path} branch -a)",
        )
    return SourceIdentity(fingerprint={"commit": commit}, commit=commit)


def describe_checkout(directory: Path) -> str | None:
    """Return the HEAD SHA of the checkout, with ``-dirty`` if files changed.

    Returns None when ``directory`` is not in a git checkout or has no commit.
    """
    if not is_git_checkout(directory):
        return None
    head = run_git(directory, "rev-parse", "--verify", "--quiet", "HEAD")
    if not head:
        return None
    status = run_git(directory, "status", "--porcelain", "--", ".")
    return f"{head}-dirty" if status else head


def run_git(directory: Path, *arguments: str) -> str:
    completed = subprocess.run(
        ["git", "-C", str(directory), *arguments],
        capture_output=True,
        text=True,
        check=False,
    )
    return completed.stdout.strip() if completed.returncode == 0 else ""


def list_source_files(directory: Path) -> tuple[str, ...]:
    """Return the relative paths of the files a build of ``directory`` reads.

    In a git checkout that is every tracked or untracked file that git does not
    ignore. Elsewhere it is every file outside SKIPPED_DIRECTORIES.
    """
    if is_git_checkout(directory):
        listing = subprocess.run(
            ["git", "-C", str(directory), "ls-files", "-z"]
            + ["--cached", "--others", "--exclude-standard"],
            capture_output=True,
            check=True,
        ).stdout.decode()
        names = {name for name in listing.split("\0") if name}
        present = [name for name in names if os.path.lexists(directory / name)]
        return tuple(sorted(present))
    return tuple(sorted(walk_files(directory)))


def walk_files(directory: Path) -> Iterator[str]:
    for folder, subfolders, filenames in os.walk(directory):
        subfolders[:] = [
            name
            for name in subfolders
            if name not in SKIPPED_DIRECTORIES and not name.endswith(".egg-info")
        ]
        for filename in filenames:
            yield str(Path(folder, filename).relative_to(directory))


def hash_tree(directory: Path, files: tuple[str, ...]) -> str:
    """Hash the names and contents of ``files``. A symlink hashes as its target path."""
    digest = hashlib.sha256()
    for name in files:
        path = directory / name
        digest.update(name.encode() + b"\0")
        if path.is_symlink():
            digest.update(b"link:" + os.readlink(path).encode())
        else:
            digest.update(file_sha256(path).encode())
        digest.update(b"\0")
    return digest.hexdigest()


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        while chunk := stream.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def export_source(spec: BuildSpec, identity: SourceIdentity, destination: Path) -> str:
    """Return what pip should build for ``spec``, exporting sources if needed.

    A requirement or wheel file is passed to pip as it is. A git commit is
    checked out into ``destination`` through a shared clone, which keeps
    ``.git`` for version plugins and leaves the user's repository unchanged.
    A directory's files, the ones ``identity`` hashed, are copied there
    without ``.git``.
    """
    if spec.kind is SpecKind.REQUIREMENT:
        assert spec.requirement is not None
        return spec.requirement
    assert spec.path is not None
    if spec.kind is SpecKind.WHEEL:
        return str(spec.path)
    if spec.kind is SpecKind.GIT_REF:
        assert identity.commit is not None
        clone_commit(spec, identity.commit, destination)
    else:
        # NOTE: without .git, versions computed from git metadata (for example
        # by setuptools-scm) fall back to the plugin's default or fail.
        copy_files(spec.path, identity.files, destination)
    return str(destination)


def clone_commit(spec: BuildSpec, commit: str, destination: Path) -> None:
    """Check out ``commit`` of the spec's repository into ``destination``.

    NOTE: git submodules are not checked out.
    """
    commands = [
        ["git", "clone", "--quiet", "--shared", "--no-checkout"]
        + [str(spec.path), str(destination)],
        ["git", "-C", str(destination), "checkout", "--quiet", "--detach", commit],
    ]
    for command in commands:
        completed = subprocess.run(command, capture_output=True, text=True, check=False)
        if completed.returncode != 0:
            lines = completed.stderr.strip().splitlines() or ["no output"]
            raise BuildFailed(spec.label, f"checking out {commit} failed: {lines[-1]}")


def copy_files(directory: Path, files: tuple[str, ...], destination: Path) -> None:
    for name in files:
        target = destination / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(directory / name, target, follow_symlinks=False)

"""Tests for build spec parsing: each kind, and each error message exactly."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness.errors import ExitCode, InvalidInput
from harness.models import SpecKind
from harness.specs import distribution_name, parse_build_option, parse_spec


@pytest.fixture
def repository(tmp_path: Path, git) -> Path:
    """A git checkout with a tag ``v1`` and a branch ``feature/lazy-imports``."""
    path = tmp_path / "sdk"
    path.mkdir()
    git(path, "init", "--quiet", "--initial-branch=main")
    (path / "pyproject.toml").write_text('[project]\nname = "sdk"\nversion = "1"\n')
    git(path, "add", ".")
    git(path, "commit", "--quiet", "-m", "first")
    git(path, "tag", "v1")
    git(path, "checkout", "--quiet", "-b", "feature/lazy-imports")
    (path / "README").write_text("second\n")
    git(path, "add", ".")
    git(path, "commit", "--quiet", "-m", "second")
    return path


def test_requirement_pinned(tmp_path: Path) -> None:
    spec = parse_spec("baseline", "stripe==15.3.0", cwd=tmp_path)
    assert spec.kind is SpecKind.REQUIREMENT
    assert spec.requirement == "stripe==15.3.0"
    assert spec.path is None
    assert spec.raw == "stripe==15.3.0"
    assert distribution_name(spec) == "stripe"


def test_requirement_with_extras_and_marker(tmp_path: Path) -> None:
    spec = parse_spec("a", "stripe[async] >= 15 ; python_version >= '3.8'", tmp_path)
    assert spec.kind is SpecKind.REQUIREMENT
    assert spec.requirement == 'stripe[async]>=15; python_version >= "3.8"'
    assert distribution_name(spec) == "stripe"


def test_requirement_with_url(tmp_path: Path) -> None:
    spec = parse_spec("a", "stripe @ https://example.invalid/stripe.whl", tmp_path)
    assert spec.kind is SpecKind.REQUIREMENT
    assert distribution_name(spec) == "stripe"


def test_single_equals_suggests_double(tmp_path: Path) -> None:
    with pytest.raises(InvalidInput) as caught:
        parse_spec("baseline", "stripe=15.3.0", cwd=tmp_path)
    assert str(caught.value) == (
        "invalid build spec 'stripe=15.3.0' for build 'baseline': not a "
        "requirement, wheel, directory or PATH@REF (did you mean 'stripe==15.3.0'?)"
    )
    assert caught.value.exit_code is ExitCode.INVALID_INPUT


def test_unparseable_spec_without_hint(tmp_path: Path) -> None:
    with pytest.raises(InvalidInput) as caught:
        parse_spec("baseline", "stripe!!15", cwd=tmp_path)
    assert str(caught.value) == (
        "invalid build spec 'stripe!!15' for build 'baseline': not a "
        "requirement, wheel, directory or PATH@REF"
    )


def test_missing_directory_named(tmp_path: Path) -> None:
    with pytest.raises(InvalidInput) as caught:
        parse_spec("candidate", "../missing-sdk@v1", cwd=tmp_path)
    missing = tmp_path.parent / "missing-sdk"
    assert str(caught.value) == (
        "invalid build spec '../missing-sdk@v1' for build 'candidate': not a "
        f"requirement, wheel, directory or PATH@REF (directory {missing} not found)"
    )


def test_existing_file_named_as_file(tmp_path: Path) -> None:
    notes = tmp_path / "notes.txt"
    notes.write_text("not a build\n")
    with pytest.raises(InvalidInput) as caught:
        parse_spec("baseline", "./notes.txt", cwd=tmp_path)
    assert str(caught.value) == (
        "invalid build spec './notes.txt' for build 'baseline': not a "
        f"requirement, wheel, directory or PATH@REF ({notes} is a file, not a "
        "directory or .whl wheel)"
    )


def test_empty_spec(tmp_path: Path) -> None:
    with pytest.raises(InvalidInput) as caught:
        parse_spec("baseline", "  ", cwd=tmp_path)
    assert str(caught.value) == (
        "empty build spec for build 'baseline': give a requirement, wheel, "
        "directory or PATH@REF"
    )


def test_wheel_file(tmp_path: Path) -> None:
    wheel = tmp_path / "dist" / "sdk-1.0-py3-none-any.whl"
    wheel.parent.mkdir()
    wheel.write_bytes(b"not checked here")
    spec = parse_spec("wheel", "dist/sdk-1.0-py3-none-any.whl", cwd=tmp_path)
    assert spec.kind is SpecKind.WHEEL
    assert spec.path == wheel
    assert spec.path.is_absolute()
    assert distribution_name(spec) is None


def test_missing_wheel_file(tmp_path: Path) -> None:
    with pytest.raises(InvalidInput) as caught:
        parse_spec("wheel", "dist/sdk-1.0-py3-none-any.whl", cwd=tmp_path)
    missing = tmp_path / "dist" / "sdk-1.0-py3-none-any.whl"
    assert str(caught.value) == (
        "invalid build spec 'dist/sdk-1.0-py3-none-any.whl' for build 'wheel': "
        f"wheel file {missing} not found"
    )


def test_directory_with_pyproject(tmp_path: Path) -> None:
    (tmp_path / "sdk").mkdir()
    (tmp_path / "sdk" / "pyproject.toml").write_text("")
    spec = parse_spec("local", "./sdk", cwd=tmp_path)
    assert spec.kind is SpecKind.PATH
    assert spec.path == tmp_path / "sdk"
    assert spec.ref is None


def test_directory_with_setup_py(tmp_path: Path) -> None:
    (tmp_path / "setup.py").write_text("")
    spec = parse_spec("local", str(tmp_path), cwd=Path("/"))
    assert spec.kind is SpecKind.PATH
    assert spec.path == tmp_path


def test_directory_without_project_file(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(InvalidInput) as caught:
        parse_spec("local", "empty", cwd=tmp_path)
    assert str(caught.value) == (
        f"invalid build spec 'empty' for build 'local': directory {tmp_path}/empty "
        "has no pyproject.toml or setup.py (point at the SDK's source checkout)"
    )


def test_git_tag(repository: Path) -> None:
    spec = parse_spec("baseline", "sdk@v1", cwd=repository.parent)
    assert spec.kind is SpecKind.GIT_REF
    assert spec.path == repository
    assert spec.ref == "v1"


def test_git_branch_with_slash(repository: Path) -> None:
    spec = parse_spec("candidate", "./sdk@feature/lazy-imports", repository.parent)
    assert spec.kind is SpecKind.GIT_REF
    assert spec.path == repository
    assert spec.ref == "feature/lazy-imports"


def test_git_ref_splits_at_directory(repository: Path, git) -> None:
    renamed = repository.with_name("sdk@2")
    repository.rename(renamed)
    spec = parse_spec("candidate", "sdk@2@v1", cwd=renamed.parent)
    assert spec.path == renamed
    assert spec.ref == "v1"


def test_git_commit_sha(repository: Path, git) -> None:
    sha = git(repository, "rev-parse", "v1")
    spec = parse_spec("baseline", f"{repository}@{sha[:10]}")
    assert spec.kind is SpecKind.GIT_REF
    assert spec.ref == sha[:10]


def test_git_ref_not_found(repository: Path) -> None:
    with pytest.raises(InvalidInput) as caught:
        parse_spec("candidate", "sdk@v9", cwd=repository.parent)
    assert str(caught.value) == (
        f"invalid build spec 'sdk@v9' for build 'candidate': git ref 'v9' not "
        f"found in {repository} (list refs with: git -C {repository} tag; "
        f"git -C {repository} branch -a)"
    )


def test_git_ref_empty(repository: Path) -> None:
    with pytest.raises(InvalidInput) as caught:
        parse_spec("candidate", "sdk@", cwd=repository.parent)
    assert str(caught.value) == (
        "invalid build spec 'sdk@' for build 'candidate': invalid git ref '' "
        "(write PATH@REF, e.g. '../sdk@v1.0')"
    )


def test_git_ref_option_rejected(repository: Path) -> None:
    with pytest.raises(InvalidInput) as caught:
        parse_spec("candidate", "sdk@--all", cwd=repository.parent)
    assert "invalid git ref '--all'" in str(caught.value)


def test_git_ref_outside_checkout(tmp_path: Path) -> None:
    (tmp_path / "plain").mkdir()
    with pytest.raises(InvalidInput) as caught:
        parse_spec("candidate", "plain@v1", cwd=tmp_path)
    assert str(caught.value) == (
        f"invalid build spec 'plain@v1' for build 'candidate': {tmp_path}/plain is "
        "not a git checkout (drop '@REF' to build the directory as it is)"
    )


def test_build_option_requirement() -> None:
    spec = parse_build_option("baseline=stripe==15.3.0")
    assert spec.label == "baseline"
    assert spec.kind is SpecKind.REQUIREMENT
    assert spec.requirement == "stripe==15.3.0"


def test_build_option_without_label() -> None:
    with pytest.raises(InvalidInput) as caught:
        parse_build_option("stripe")
    assert str(caught.value) == (
        "invalid --build value 'stripe': expected LABEL=SPEC "
        "(for example 'baseline=stripe==15.3.0')"
    )


@pytest.mark.parametrize(
    "label", ["", "-lead", ".hidden", "has space", "slash/label", "x" * 41]
)
def test_build_option_invalid_label(label: str) -> None:
    with pytest.raises(InvalidInput) as caught:
        parse_build_option(f"{label}=stripe==15.3.0")
    assert str(caught.value) == (
        f"invalid build label {label!r}: use 1-40 letters, digits, '.', '_' or "
        "'-', starting with a letter or digit"
    )


@pytest.mark.parametrize("label", ["a", "v15.3.1", "lazy_imports-2", "x" * 40])
def test_build_option_valid_label(label: str) -> None:
    assert parse_build_option(f"{label}=stripe").label == label


def test_build_option_empty_spec() -> None:
    with pytest.raises(InvalidInput) as caught:
        parse_build_option("baseline=")
    assert str(caught.value).startswith("invalid --build value 'baseline='")

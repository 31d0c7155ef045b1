"""Resume an interrupted run: the missing iterations, with what the run used.

Everything comes from the run's manifest: the prepared builds with their image
ids, the scenario as it was loaded, the limits and the plan (iterations, order
and seed, so the plan is the same). Before anything runs, every input that
could differ today is checked, and the resume is rejected when one does.

A planned iteration that has a record in raw.jsonl, successful or failed, is
not run again. Running a failed iteration again would keep the retry that
succeeded and hide the slow tail (a timeout retried until it passes), and it
would give raw.jsonl two records for one iteration. Engine errors can be
retried within a run with ``--retries``.
"""

from __future__ import annotations

import logging
from typing import Any

import requests
from docker.errors import DockerException, ImageNotFound

from harness.environment import Environment
from harness.errors import EngineUnavailable, InvalidInput
from harness.models import (
    BaseImage,
    IterationRecord,
    Limits,
    PreparedBuild,
    Scenario,
    SpecKind,
)
from harness.results import RunDirectory
from harness.runner import PlannedIteration, plan_iterations

logger = logging.getLogger(__name__)

RESUMABLE_STATUSES = ("interrupted", "running")


def load_resumable(run_dir: RunDirectory) -> dict[str, Any]:
    """Return the manifest of a run that can be resumed.

    A run still marked "running" was killed without a chance to mark itself
    (SIGKILL, power loss). NOTE: a run that really is still running in another
    process is also marked "running", and resuming it runs iterations twice.
    """
    manifest = run_dir.read_manifest()
    status = manifest.get("status")
    if status not in RESUMABLE_STATUSES:
        raise InvalidInput(
            f"run {run_dir.path} has status {status!r}: only an interrupted run "
            "can be resumed (start a new run with `coldstart run`)"
        )
    for key in ("scenario", "builds", "limits", "plan", "base_image"):
        if key not in manifest:
            raise InvalidInput(
                f"invalid manifest {run_dir.manifest_path}: missing {key!r}, so "
                "the run cannot be resumed"
            )
    return manifest


def scenario_from_manifest(manifest: dict[str, Any]) -> Scenario:
    """Return the recorded scenario; reject it if its file changed since.

    The recorded copy is what runs. A scenario file that is gone is no
    obstacle, but one that now reads differently means the user changed the
    experiment, so the run cannot be completed as it was started.
    """
    from harness.scenario import load_scenario

    scenario = Scenario.from_dict(manifest["scenario"])
    source = scenario.source
    try:
        current = load_scenario(source) if source else None
    except InvalidInput as error:
        logger.warning("scenario file %s not checked: %s", source, error)
        return scenario
    if current is not None and current.to_dict() != scenario.to_dict():
        raise InvalidInput(
            f"scenario file {source} changed since the run started: restore it, "
            "or start a new run with `coldstart run`"
        )
    return scenario


def check_base_image(env: Environment, manifest: dict[str, Any]) -> BaseImage:
    """Reject the resume unless the base image's tag names the same image."""
    base = BaseImage.from_dict(manifest["base_image"])
    current = find_image_id(env, base.tag)
    if current != base.image_id:
        state = "was deleted" if current is None else f"now names {current[:19]}"
        raise InvalidInput(
            f"base image {base.tag} {state}, but the run used {base.image_id[:19]}: "
            "the run cannot be resumed with the same image (start a new run)"
        )
    return base


def builds_from_manifest(
    env: Environment, manifest: dict[str, Any]
) -> list[PreparedBuild]:
    """Return the recorded builds after checking that each can run as before."""
    builds = [PreparedBuild.from_dict(data) for data in manifest["builds"]]
    for build in builds:
        check_build_image(env, build)
        check_git_ref(build)
    return builds


def check_build_image(env: Environment, build: PreparedBuild) -> None:
    current = find_image_id(env, build.image_tag)
    if current == build.image_id:
        return
    state = "was deleted" if current is None else f"now names {current[:19]}"
    raise InvalidInput(
        f"image {build.image_tag} of build {build.label!r} {state}, but the run "
        f"used {build.image_id[:19]}: the run cannot be resumed with the same "
        "build (start a new run)"
    )


def check_git_ref(build: PreparedBuild) -> None:
    """Reject a git ref build whose ref now points at another commit.

    The image still contains the old commit, but the report would name a ref
    whose meaning changed halfway through the run.
    """
    from harness.specs import resolve_commit

    spec = build.spec
    if spec.kind is not SpecKind.GIT_REF or spec.path is None or spec.ref is None:
        return
    commit = resolve_commit(spec.path, spec.ref)
    if commit != build.commit:
        now = "no longer exists" if commit is None else f"now points to {commit}"
        raise InvalidInput(
            f"git ref {spec.ref!r} of build {build.label!r} {now}, but the run "
            f"measured {build.commit}: the run cannot be resumed (start a new run)"
        )


def find_image_id(env: Environment, reference: str) -> str | None:
    """Return the id of the image ``reference`` names, or None if there is none."""
    try:
        return str(env.docker.images.get(reference).id)
    except ImageNotFound:
        return None
    except (DockerException, requests.RequestException) as error:
        raise EngineUnavailable(
            f"could not inspect image {reference}: {error}"
        ) from error


def limits_from_manifest(manifest: dict[str, Any]) -> Limits:
    return Limits(**manifest["limits"])


def remaining_plan(
    manifest: dict[str, Any],
    builds: list[PreparedBuild],
    records: list[IterationRecord],
) -> list[PlannedIteration]:
    """Return the planned iterations that have no record yet, in plan order."""
    plan_settings = manifest["plan"]
    plan = plan_iterations(
        [build.label for build in builds],
        int(plan_settings["iterations"]),
        str(plan_settings["order"]),
        int(plan_settings["seed"]),
    )
    done = {(record.build, record.iteration) for record in records}
    return [item for item in plan if (item.build, item.iteration) not in done]

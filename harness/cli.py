"""Command-line interface: a thin click layer over the pipeline.

All error handling lives in ``main``: a ColdstartError becomes one ``error:``
line on stderr and its exit code; ``--traceback`` shows the full trace.
"""

from __future__ import annotations

import logging
import math
import re
import secrets
import sys
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click
from click.core import ParameterSource
from rich.logging import RichHandler

from harness import __version__
from harness.environment import Environment
from harness.errors import (
    EXIT_CODE_HELP,
    REPORT_EXIT_CODE_HELP,
    ColdstartError,
    EngineUnavailable,
    ExitCode,
    GateFailed,
    InvalidInput,
    MeasurementFailed,
)
from harness.models import BuildSpec, FailureKind, Limits
from harness.shaping import PROFILES

if TYPE_CHECKING:
    from harness.analysis import Metric
    from harness.pipeline import RunOutcome
    from harness.results import RunDirectory

F = TypeVar("F", bound=Callable[..., Any])

logger = logging.getLogger("harness")

MEMORY_UNITS = {"b": 1, "k": 1024, "m": 1024**2, "g": 1024**3}
MEMORY_PATTERN = re.compile(r"^(\d+(?:\.\d+)?)([bkmg]?)$", re.IGNORECASE)
# Docker rejects memory limits below 6 MiB.
MIN_MEMORY_BYTES = 6 * 1024**2
FORMATS = ["table", "markdown", "json"]
# "\b" keeps click from rewrapping the table of exit codes.
EXIT_CODE_EPILOG = "\b\n" + EXIT_CODE_HELP

_show_traceback = False


class FiniteFloatRange(click.FloatRange):
    """A FloatRange that rejects nan and inf, which pass its bound checks."""

    def convert(
        self, value: Any, param: click.Parameter | None, ctx: click.Context | None
    ) -> Any:
        number = super().convert(value, param, ctx)
        if not math.isfinite(number):
            self.fail(f"{value!r} is not a finite number", param, ctx)
        return number


def parse_memory(text: str | None) -> int | None:
    """Return a memory limit such as ``128m`` in bytes, or None when not set."""
    if text is None:
        return None
    match = MEMORY_PATTERN.match(text.strip())
    if not match:
        raise InvalidInput(
            f"invalid --memory {text!r}: use a number with a unit b, k, m or g "
            "(for example 128m)"
        )
    number, unit = match.groups()
    value = int(float(number) * MEMORY_UNITS[unit.lower() or "b"])
    if value < MIN_MEMORY_BYTES:
        raise InvalidInput(
            f"invalid --memory {text!r}: Docker needs at least 6m; use 128m "
            "for a 128 MB Lambda function"
        )
    return value


def configure_logging(quiet: bool, verbose: bool, env: Environment) -> None:
    if quiet:
        level = logging.WARNING
    elif verbose:
        level = logging.DEBUG
    else:
        level = logging.INFO
    handler = RichHandler(
        console=env.stderr, show_time=False, show_path=False, markup=False
    )
    handler.setFormatter(logging.Formatter("%(message)s"))
    root = logging.getLogger("harness")
    root.handlers[:] = [handler]
    root.setLevel(level)
    root.propagate = False


@click.group(
    context_settings={"help_option_names": ["-h", "--help"]},
    epilog=EXIT_CODE_EPILOG,
)
@click.version_option(__version__, prog_name="coldstart")
@click.option("--traceback", is_flag=True, help="Show the full traceback on errors.")
@click.pass_context
def cli(ctx: click.Context, traceback: bool) -> None:
    """Measure how long a Python SDK takes to start cold in throttled containers.

    \b
    Each build is prepared once into an image; every iteration then starts a
    fresh container with a CPU quota and no network, times each phase of the
    scenario inside it, and the report compares the builds against budgets.
    """
    global _show_traceback
    _show_traceback = traceback
    ctx.obj = Environment()


def output_options(command: F) -> F:
    """Add ``--quiet`` and ``--verbose`` to a command."""
    command = click.option(
        "-v", "--verbose", is_flag=True, help="Log debug detail on stderr."
    )(command)
    return click.option(
        "-q",
        "--quiet",
        is_flag=True,
        help="Print only the command's output, warnings and errors: no "
        "progress bar, no step log.",
    )(command)


def gate_options(command: F) -> F:
    """Add ``--max-regression`` and ``--max-regression-default`` to a command."""
    command = click.option(
        "--max-regression-default",
        type=FiniteFloatRange(min=0),
        metavar="PERCENT",
        help="Maximum regression in percent for every phase and the total "
        "without a threshold of its own (same as '*=PERCENT').",
    )(command)
    return click.option(
        "--max-regression",
        multiple=True,
        metavar="PHASE=PERCENT",
        help="Maximum regression of a phase in percent of the baseline median; "
        "repeatable. PHASE may be '*' (every phase) or 'total'. A gate fails "
        "when the verdict is slower and the change exceeds it. Overrides the "
        "scenario's [gates] table.",
    )(command)


def github_option(command: F) -> F:
    return click.option(
        "--github",
        is_flag=True,
        help="Append the Markdown report to $GITHUB_STEP_SUMMARY and key figures "
        "to $GITHUB_OUTPUT (GitHub Actions).",
    )(command)


def analysis_options(command: F) -> F:
    """Add ``--metric``, ``--alpha`` and ``--min-effect`` to a command.

    Their defaults are None so that ``report`` can fall back to the values
    the run was made with.
    """
    command = click.option(
        "--min-effect",
        type=FiniteFloatRange(min=0, max=1, max_open=True),
        help="Smallest change of the median, as a fraction (0.05 = 5%), that "
        "counts as faster or slower.  [default: 0.05]",
    )(command)
    command = click.option(
        "--alpha",
        type=FiniteFloatRange(min=0, max=1, min_open=True, max_open=True),
        help="Significance level of the Mann-Whitney U test.  [default: 0.05]",
    )(command)
    return click.option(
        "--metric",
        type=click.Choice(["wall", "cpu"]),
        help="Time the verdicts use; the report shows both.  [default: wall]",
    )(command)


def shaping_options(command: F) -> F:
    """Add the CPU and memory shaping options of ``run``."""
    command = click.option(
        "--init-cpus",
        type=FiniteFloatRange(min=0.01, max=64),
        help="CPU share in cores for the phases counted against the init "
        "budget; the quota changes to --cpus before the first other phase. "
        "Default: --cpus for every phase.",
    )(command)
    command = click.option(
        "--cpu-period",
        type=click.IntRange(min=1000, max=1_000_000),
        help="CFS period in microseconds; the quota is --cpus times this.  "
        "[default: 100000]",
    )(command)
    return click.option(
        "--profile",
        type=click.Choice(list(PROFILES)),
        help="Preset of a Lambda memory size: that memory limit and a CPU share "
        "of size / 1769 cores. --cpus, --memory and --cpu-period override it.",
    )(command)


@cli.command(epilog=EXIT_CODE_EPILOG)
@click.option(
    "--gate",
    is_flag=True,
    help="Also gate regressions against --max-regression and the scenario's "
    "[gates], and print one line per gate.",
)
@click.option(
    "--baseline", metavar="SPEC", help="Build to compare against (label 'baseline')."
)
@click.option(
    "--candidate", metavar="SPEC", help="Build under test (label 'candidate')."
)
@click.option(
    "--build",
    "extra_builds",
    metavar="LABEL=SPEC",
    multiple=True,
    help="A further build; repeat for more. Without --baseline, the first "
    "--build is the baseline.",
)
@click.option(
    "--scenario",
    default="stripe-lambda",
    show_default=True,
    metavar="NAME|PATH",
    help="Scenario name in scenarios/, or the path of a scenario .toml file.",
)
@click.option(
    "-n",
    "--iterations",
    type=click.IntRange(min=1),
    default=10,
    show_default=True,
    help="Containers started per build, each one cold start.",
)
@click.option(
    "--warmup",
    type=click.IntRange(min=0),
    default=1,
    show_default=True,
    help="Unrecorded containers per build before the first round, so that "
    "no measured container is the first to read a fresh image from disk.",
)
@click.option(
    "--cpus",
    type=FiniteFloatRange(min=0.01, max=64),
    help="CPU share of each container in cores (0.1 = a CFS quota of 10 ms "
    "per 100 ms period, like a 128 MB Lambda function).  [default: 0.1, or "
    "the --profile's share]",
)
@click.option(
    "--memory",
    metavar="SIZE",
    help="Memory limit of each container with a unit b, k, m or g "
    "(for example 128m). Default: no limit.",
)
@click.option(
    "--image",
    default="python:3.11-slim",
    show_default=True,
    help="Base image. Pulled if missing; python:3.11-slim and python:3.13-slim "
    "fall back to a stand-in built from Debian packages.",
)
@click.option(
    "--timeout",
    type=FiniteFloatRange(min=1),
    default=120.0,
    show_default=True,
    help="Seconds one container may run before it is killed and the "
    "iteration counts as timed out.",
)
@click.option(
    "--order",
    type=click.Choice(["shuffle", "alternate"]),
    default="shuffle",
    show_default=True,
    help="Order of builds within each round: shuffled, or A B A B.",
)
@click.option(
    "--seed",
    type=int,
    help="Seed of the shuffle, for a reproducible order. Default: random, "
    "recorded in the manifest.",
)
@click.option(
    "-j",
    "--jobs",
    type=click.IntRange(min=1),
    help="Containers run at once. Default: floor((cores - 1) / (--cpus + "
    "0.25)), at most 32 and at least 1, which charges each container its quota "
    "and a quarter core for the engine's work. N whose total quota exceeds "
    "cores - 1 is rejected. With --backend swarm, the sum over the nodes.",
)
@click.option(
    "--backend",
    type=click.Choice(["local", "swarm"]),
    default="local",
    show_default=True,
    help="Run iterations as containers on this engine, or as jobs on the "
    "swarm that this engine manages, one node per round.",
)
@click.option(
    "--registry",
    metavar="HOST:PORT",
    help="With --backend swarm: push the build images to this registry for "
    "the nodes to pull. Default: every node already has the images.",
)
@click.option(
    "--results",
    "results_root",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("results"),
    show_default=True,
    help="Directory that receives one subdirectory per run.",
)
@click.option(
    "--format",
    "output_format",
    type=click.Choice(FORMATS),
    default="table",
    show_default=True,
    help="Format of the report printed on stdout.",
)
@click.option(
    "--retries",
    type=click.IntRange(min=0, max=100),
    default=0,
    show_default=True,
    help="Times an iteration is run again after a Docker engine error before "
    "it counts as failed.",
)
@click.option(
    "--resume",
    "resume_dir",
    metavar="RUN_DIR",
    type=click.Path(file_okay=False, path_type=Path),
    help="Complete the missing iterations of an interrupted run, with the "
    "builds, scenario and settings its manifest records.",
)
@gate_options
@github_option
@shaping_options
@analysis_options
@click.option(
    "--breakdown",
    type=click.IntRange(min=0),
    default=3,
    show_default=True,
    help="Extra iterations per build, after the timed ones, run with "
    "python3 -X importtime for the per-module import breakdown; 0 turns it off.",
)
@click.option(
    "--build-in-container",
    is_flag=True,
    help="Build the wheels of local checkouts and git refs in a container of "
    "the base image with no network, instead of running their build backend "
    "on the host. Use it for checkouts you do not trust.",
)
@output_options
@click.pass_context
def run(
    ctx: click.Context,
    baseline: str | None,
    candidate: str | None,
    extra_builds: tuple[str, ...],
    scenario: str,
    iterations: int,
    warmup: int,
    cpus: float | None,
    memory: str | None,
    image: str,
    timeout: float,
    order: str,
    seed: int | None,
    jobs: int | None,
    backend: str,
    registry: str | None,
    results_root: Path,
    output_format: str,
    retries: int,
    resume_dir: Path | None,
    gate: bool,
    max_regression: tuple[str, ...],
    max_regression_default: float | None,
    github: bool,
    profile: str | None,
    cpu_period: int | None,
    init_cpus: float | None,
    metric: Metric | None,
    alpha: float | None,
    min_effect: float | None,
    breakdown: int,
    build_in_container: bool,
    quiet: bool,
    verbose: bool,
) -> None:
    """Measure the builds' cold starts and write a report.

    \b
    A SPEC is a PyPI requirement (stripe==15.3.0), a local source checkout
    (../stripe-python), a git ref of a local checkout (../stripe-python@v15.3.0)
    or a wheel file.
    """
    from harness.backends import Execution
    from harness.cli_results import (
        check_gates,
        check_github_environment,
        publish_to_github,
        raise_for_gates,
    )
    from harness.gate import check_threshold_phases, parse_threshold
    from harness.pipeline import RunRequest, resume_experiment, run_experiment
    from harness.report import AnalysisOptions
    from harness.scenario import load_scenario
    from harness.shaping import resolve_limits

    env: Environment = ctx.obj
    env.quiet = quiet
    configure_logging(quiet, verbose, env)
    thresholds = [parse_threshold(text) for text in max_regression]
    if github:
        check_github_environment()
    if resume_dir is not None:
        check_resume_options(ctx)
        outcome = resume_experiment(env, resume_dir, retries)
    else:
        specs = collect_specs(baseline, candidate, extra_builds)
        execution = Execution(backend=backend, jobs=jobs, registry=registry)
        execution.check()
        request = RunRequest(
            specs=specs,
            baseline=specs[0].label,
            scenario=load_scenario(scenario),
            limits=resolve_limits(
                profile=profile,
                cpus=cpus,
                memory_bytes=parse_memory(memory),
                cpu_period_us=cpu_period,
                init_cpus=init_cpus,
                timeout_s=timeout,
            ),
            iterations=iterations,
            image=image,
            results_root=results_root,
            order=order,
            seed=seed if seed is not None else secrets.randbelow(2**31),
            command=tuple(sys.argv),
            retries=retries,
            execution=execution,
            warmup=warmup,
            analysis=AnalysisOptions(
                metric=metric or "wall",
                alpha=alpha if alpha is not None else 0.05,
                min_effect=min_effect if min_effect is not None else 0.05,
            ),
            breakdown=breakdown,
            build_in_container=build_in_container,
        )
        phase_names = [phase.name for phase in request.scenario.phases]
        check_threshold_phases([*phase_names, "total"], dict(thresholds))
        if gate:
            warn_if_gate_cannot_fail(iterations, request.analysis.alpha)
        outcome = run_experiment(env, request)
    print_report(env, outcome.run_dir, output_format)
    logger.info("wrote %s", outcome.run_dir.path)
    results = None
    if gate:
        # metric None takes the run's --metric from its manifest.
        results = check_gates(
            outcome.run_dir, thresholds, max_regression_default, metric
        )
    if github:
        publish_to_github(outcome.run_dir, results, metric)
    raise_for_outcome(outcome)
    raise_for_gates(results)


def warn_if_gate_cannot_fail(iterations: int, alpha: float) -> None:
    """Warn when too few iterations make every regression gate pass.

    The smallest two-sided p-value an exact Mann-Whitney U test can reach with
    n values per build is 2 / C(2n, n): 0.1 at n = 3, 0.029 at n = 4.
    """
    smallest_p = 2 / math.comb(2 * iterations, iterations)
    if smallest_p >= alpha:
        logger.warning(
            "with -n %d no regression gate can fail: the smallest possible "
            "Mann-Whitney p-value is %.3g, not below --alpha %g; use more "
            "iterations",
            iterations,
            smallest_p,
            alpha,
        )


# Options that a resumed run takes from its manifest.
RECORDED_OPTIONS = (
    "baseline",
    "candidate",
    "extra_builds",
    "scenario",
    "iterations",
    "warmup",
    "cpus",
    "cpu_period",
    "init_cpus",
    "profile",
    "memory",
    "image",
    "timeout",
    "order",
    "seed",
    "results_root",
)


def check_resume_options(ctx: click.Context) -> None:
    """Reject options that --resume takes from the run's manifest instead."""
    given = [
        max(param.opts, key=len)
        for param in ctx.command.params
        if param.name in RECORDED_OPTIONS
        and ctx.get_parameter_source(param.name) is ParameterSource.COMMANDLINE
    ]
    if given:
        flags = ", ".join(given)
        raise InvalidInput(
            f"{flags} cannot be combined with --resume: a resumed run uses the "
            "builds and settings recorded in its manifest"
        )


def collect_specs(
    baseline: str | None, candidate: str | None, extra_builds: tuple[str, ...]
) -> tuple[BuildSpec, ...]:
    """Parse the build options into specs, baseline first; labels are unique."""
    from harness.specs import parse_build_option, parse_spec

    specs = []
    for option, label, text in (
        ("--baseline", "baseline", baseline),
        ("--candidate", "candidate", candidate),
    ):
        if text is None:
            continue
        if not text.strip():
            raise InvalidInput(
                f"empty build spec for {option}: pass a requirement, wheel, "
                "directory or PATH@REF (an unset shell variable gives an empty "
                "value)"
            )
        specs.append(parse_spec(label, text))
    specs.extend(parse_build_option(text) for text in extra_builds)
    if len(specs) < 1:
        raise InvalidInput(
            "no builds given: pass --baseline SPEC and --candidate SPEC, "
            "or --build LABEL=SPEC"
        )
    labels = [spec.label for spec in specs]
    for label in labels:
        if labels.count(label) > 1:
            raise InvalidInput(
                f"build label {label!r} is used twice: give each --build a "
                "distinct LABEL"
            )
    return tuple(specs)


def print_report(
    env: Environment,
    run_dir: RunDirectory,
    output_format: str,
    *,
    metric: Metric | None = None,
    alpha: float | None = None,
    min_effect: float | None = None,
) -> None:
    from harness.report import build_report, render, render_markdown_report

    manifest, records, summary = build_report(
        run_dir, metric=metric, alpha=alpha, min_effect=min_effect
    )
    if output_format == "markdown":
        # The same text as report.md, with the breakdown and plot links.
        text = render_markdown_report(run_dir, manifest, records, summary)
    else:
        text = render(output_format, manifest, records, summary)
    env.stdout.print(text, markup=False, highlight=False, soft_wrap=True)


def raise_for_outcome(outcome: RunOutcome) -> None:
    """Raise the error that matches the worst thing that happened in a run."""
    failed_builds = outcome.failed_builds
    if len(failed_builds) == 1:
        raise failed_builds[0]
    if failed_builds:
        labels = [repr(error.label) for error in failed_builds]
        causes = "; ".join(f"{error.label!r}: {error.cause}" for error in failed_builds)
        raise InvalidInput(
            f"builds {', '.join(labels[:-1])} and {labels[-1]} failed: {causes}"
        )
    # Warm-up containers are not iterations, so their failures are not counted.
    records = [r for r in outcome.records if not r.warmup]
    failed = [r for r in records if r.failure and r.failure != FailureKind.BUILD]
    if failed:
        raise MeasurementFailed(
            f"{len(failed)} of {len(records)} iterations failed "
            f"(first: build {failed[0].build!r}, {failed[0].error}); "
            f"details in {outcome.run_dir.raw_path}"
        )
    summary = outcome.summary
    over = [check for check in summary.budget_checks if check.result == "failed"]
    if over:
        first = over[0]
        raise GateFailed(
            f"budget exceeded: build {first.build!r}, budget {first.budget!r} "
            f"({first.seconds:g} s): {first.over} of {first.n} iterations over, "
            f"worst {first.worst_s:.3f} s"
        )


@cli.command(epilog=EXIT_CODE_EPILOG)
@click.option("--baseline", metavar="SPEC", help="First build (label 'baseline').")
@click.option("--candidate", metavar="SPEC", help="Second build (label 'candidate').")
@click.option(
    "--build",
    "extra_builds",
    metavar="LABEL=SPEC",
    multiple=True,
    help="A build to run in every cell; repeatable.",
)
@click.option(
    "--scenario", default="stripe-lambda", show_default=True, metavar="NAME|PATH"
)
@click.option(
    "-n",
    "--iterations",
    type=click.IntRange(min=1),
    default=5,
    show_default=True,
    help="Containers per build in each cell.",
)
@click.option(
    "--cpus", metavar="LIST", help="CPU shares in cores, for example 0.1,0.25,0.5,1.0."
)
@click.option(
    "--memory", metavar="LIST", help="Memory limits, for example none,128m,256m."
)
@click.option(
    "--env",
    "env_axes",
    metavar="NAME=V1,V2",
    multiple=True,
    help="Values of an environment variable; an empty value leaves it unset "
    "(STRIPE_PYTHON_EAGER_IMPORT=,1). Repeatable.",
)
@click.option(
    "--packages",
    metavar="LIST",
    help="Packages beside the SDK, one image per value: none,requests,httpx "
    "(a+b installs both). Replaces the scenario's packages.",
)
@click.option(
    "--image",
    "images",
    metavar="LIST",
    help="Base images, for example python:3.11-slim,python:3.13-slim.",
)
@click.option(
    "--bytecode",
    metavar="LIST",
    help="compiled (a normal wheel install) and/or none (no .pyc in "
    "site-packages, none written).",
)
@click.option(
    "--page-cache",
    metavar="LIST",
    help="warm and/or dropped (the host's page cache dropped before each "
    "iteration; needs root on the host).",
)
@click.option(
    "--timeout", type=FiniteFloatRange(min=1), default=120.0, show_default=True
)
@click.option("--seed", type=int, help="Seed of the cell order. Default: random.")
@click.option(
    "--results",
    "results_root",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("results"),
    show_default=True,
)
@output_options
@click.pass_obj
def sweep(env: Environment, **options: Any) -> None:
    """Run a scenario over one or more axes and report a matrix of medians.

    \b
    Every combination of axis values is a cell, and each cell is a small run
    stored under <results>/sweep-<id>/cells/. Axes not given keep the run
    defaults: --cpus 0.1, no memory limit, python:3.11-slim, compiled
    bytecode, warm page cache.
    """
    from harness.sweep import run_sweep

    env.quiet = options["quiet"]
    configure_logging(options["quiet"], options["verbose"], env)
    request = build_sweep_request(options)
    sweep_dir, _ = run_sweep(env, request)
    text = (sweep_dir / "sweep.md").read_text()
    env.stdout.print(text, markup=False, highlight=False, soft_wrap=True)
    logger.info("wrote %s", sweep_dir)


def build_sweep_request(options: dict[str, Any]) -> Any:
    """Turn the sweep command's options into a SweepRequest."""
    from harness import sweep_axes as axes_module
    from harness.scenario import load_scenario
    from harness.sweep import SweepRequest

    specs = collect_specs(
        options["baseline"], options["candidate"], options["extra_builds"]
    )
    axes = parse_sweep_axes(options, axes_module)
    return SweepRequest(
        specs=specs,
        scenario=load_scenario(options["scenario"]),
        axes=tuple(axes),
        limits=Limits(timeout_s=options["timeout"]),
        image="python:3.11-slim",
        iterations=options["iterations"],
        results_root=options["results_root"],
        seed=options["seed"]
        if options["seed"] is not None
        else secrets.randbelow(2**31),
        command=tuple(sys.argv),
    )


def parse_sweep_axes(options: dict[str, Any], axes_module: Any) -> list[Any]:
    axes = []
    if options["cpus"]:
        axes.append(axes_module.parse_cpus_axis(options["cpus"]))
    if options["memory"]:
        axes.append(axes_module.parse_memory_axis(options["memory"]))
    env_axes = [axes_module.parse_env_axis(text) for text in options["env_axes"]]
    variables = [axis.variable for axis in env_axes]
    for variable in variables:
        if variables.count(variable) > 1:
            raise InvalidInput(
                f"--env {variable} is given twice: list all its values in one "
                f"--env {variable}=V1,V2"
            )
    axes += env_axes
    if options["packages"]:
        axes.append(axes_module.parse_packages_axis(options["packages"]))
    if options["images"]:
        from harness.baseimage import check_image_reference

        values = axes_module.split_values("--image", options["images"])
        for value in values:
            check_image_reference(value)
        axes.append(axes_module.SweepAxis("image", values))
    choices = (
        ("bytecode", axes_module.BYTECODE_STATES),
        ("page_cache", axes_module.PAGE_CACHE_STATES),
    )
    for key, states in choices:
        if options[key]:
            kind = key.replace("_", "-")
            axes.append(axes_module.parse_choice_axis(kind, options[key], states))
    if not axes:
        raise InvalidInput(
            "no axis to sweep: pass at least one of --cpus, --memory, --env, "
            "--packages, --image, --bytecode or --page-cache"
        )
    return axes


@cli.command(epilog="\b\n" + REPORT_EXIT_CODE_HELP)
@click.argument(
    "run_dir", type=click.Path(exists=True, file_okay=False, path_type=Path)
)
@click.option(
    "--format",
    "output_format",
    type=click.Choice(FORMATS),
    default="table",
    show_default=True,
    help="Output format.",
)
@github_option
@analysis_options
@click.pass_obj
def report(
    env: Environment,
    run_dir: Path,
    output_format: str,
    github: bool,
    metric: Metric | None,
    alpha: float | None,
    min_effect: float | None,
) -> None:
    """Render the report of a stored run from its raw data alone.

    \b
    --metric, --alpha and --min-effect default to the values the run was made
    with.
    """
    from harness.cli_results import (
        check_gates,
        check_github_environment,
        publish_to_github,
    )
    from harness.results import RunDirectory

    if github:
        check_github_environment()
    directory = RunDirectory.open(run_dir)
    print_report(
        env,
        directory,
        output_format,
        metric=metric,
        alpha=alpha,
        min_effect=min_effect,
    )
    if github:
        results = None
        if directory.read_manifest().get("gate_options"):
            # The maximum regressions of an earlier gate check decide the verdict.
            results = check_gates(directory, [], None, metric)
        publish_to_github(directory, results, metric)


@cli.command(epilog=EXIT_CODE_EPILOG)
@click.option(
    "--image",
    default="python:3.11-slim",
    show_default=True,
    help="Base image to check.",
)
@click.pass_obj
def doctor(env: Environment, image: str) -> None:
    """Check the engine and the base image, and print how to fix any gap."""
    from harness.baseimage import check_image_reference
    from harness.doctor import run_doctor

    configure_logging(False, False, env)
    check_image_reference(image)
    run_doctor(env, image)


@cli.command(epilog=EXIT_CODE_EPILOG)
@click.option(
    "--image",
    default="python:3.11-slim",
    show_default=True,
    help="Base image to pull, or to stand in for by a Debian-built image.",
)
@output_options
@click.pass_obj
def image(env: Environment, image: str, quiet: bool, verbose: bool) -> None:
    """Pull the base image, or build its stand-in where it cannot be pulled."""
    from harness.baseimage import resolve_base_image

    configure_logging(quiet, verbose, env)
    base = resolve_base_image(env.docker, image, cache_dir=env.cache_dir)
    env.stdout.print(
        f"{base.tag} ({base.origin}): Python {base.python_version}, "
        f"image {base.image_id[:19]}",
        markup=False,
        highlight=False,
    )


@cli.command(epilog="\b\n" + EXIT_CODE_HELP)
@click.option(
    "--run",
    "run_id",
    metavar="RUN_ID",
    help="Remove this run's containers, even if its coldstart process is "
    "still running. Default: the containers of every run whose coldstart "
    "process has exited.",
)
@click.option(
    "--images",
    is_flag=True,
    help="Also remove every build image (coldstart/build:*). The base image "
    "and its stand-in stay.",
)
@output_options
@click.pass_obj
def clean(
    env: Environment, run_id: str | None, images: bool, quiet: bool, verbose: bool
) -> None:
    """Remove containers, and on request images, that coldstart left behind."""
    from harness.clean import clean as clean_engine

    configure_logging(quiet, verbose, env)
    result = clean_engine(env.docker, run_id=run_id, images=images)
    env.stdout.print(
        f"removed {len(result.containers)} containers and {len(result.images)} images",
        markup=False,
        highlight=False,
    )
    if result.errors:
        raise EngineUnavailable(
            f"could not remove {len(result.errors)} items (first: "
            f"{result.errors[0]}); run `coldstart clean` again"
        )


# Registers the commands over stored runs (gate, compare, history) on ``cli``.
from harness import cli_results  # noqa: E402, F401


def describe_click_error(error: click.ClickException) -> str:
    """Return click's message in our form: lower case, with where to find help."""
    message = error.format_message().strip().rstrip(".")
    message = message[:1].lower() + message[1:]
    context = getattr(error, "ctx", None)
    if isinstance(error, click.UsageError) and context is not None:
        message += f" (see {context.command_path} --help)"
    return message


def main(argv: list[str] | None = None) -> None:
    """Run the CLI and turn every user-facing failure into an exit code."""
    try:
        cli.main(args=argv, prog_name="coldstart", standalone_mode=False)
    except click.exceptions.Exit as stop:
        sys.exit(stop.exit_code)
    except click.ClickException as error:
        click.echo(f"error: {describe_click_error(error)}", err=True)
        sys.exit(ExitCode.INVALID_INPUT)
    except (click.exceptions.Abort, KeyboardInterrupt):
        # click turns Ctrl-C outside a run's measurement into Abort.
        click.echo("error: interrupted", err=True)
        sys.exit(ExitCode.INTERRUPTED)
    except ColdstartError as error:
        if _show_traceback:
            traceback.print_exc()
        click.echo(f"error: {error}", err=True)
        sys.exit(error.exit_code)

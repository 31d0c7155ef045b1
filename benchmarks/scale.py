"""Parallel and swarm runs against one container at a time.

Two builds of a synthetic SDK whose import burns 50 ms of CPU time run at
``--cpus 0.1``, 2 x 10 and 2 x 100 iterations, three ways: ``-j 1``, the
default ``-j``, and the swarm backend at its default job count on a
single-node swarm (created for the benchmark and left afterwards, unless the
engine was already in one). For each run the section reports the total wall
time, the overhead per iteration, the speed-up against ``-j 1``, the phase
medians, and the ideal time: the sum of the measured phase wall times divided
by the parallel slots, plus image preparation.
"""

from __future__ import annotations

import platform
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import docker
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from images import TEST_LABELS, build_test_image, prepared_build  # noqa: E402

from harness.analysis import summarise  # noqa: E402
from harness.display import SilentDisplay  # noqa: E402
from harness.engine import read_cpu_model  # noqa: E402
from harness.environment import Environment  # noqa: E402
from harness.models import IterationRecord, Limits, Phase, Scenario  # noqa: E402
from harness.parallel import default_jobs, engine_cores, run_plan_parallel  # noqa: E402
from harness.results import RunDirectory, safe_file_name  # noqa: E402
from harness.runner import plan_iterations, run_plan  # noqa: E402
from harness.swarm import default_swarm_jobs, list_nodes, run_plan_swarm  # noqa: E402

BURNER_SOURCE = """\
import time

_end = time.process_time() + 0.05
while time.process_time() < _end:
    pass
"""
SCENARIO = Scenario(
    name="burner",
    description="import a module that burns 50 ms of CPU time",
    phases=(Phase("import burner", "import burner", "init"),),
    budgets={"init": 10.0},
)
LIMITS = Limits(cpus=0.1, timeout_s=120)
ITERATION_COUNTS = (10, 100)
# The 2 x 100 run at the default -j should take at most this times the ideal.
TARGET_FACTOR = 1.5


@dataclass(frozen=True)
class ModeRun:
    """One timed run of one mode, with the figures the section reports."""

    mode: str
    iterations: int
    jobs: int
    total_s: float
    preparation_s: float
    phases_s: float
    failed: int
    wall_median: float
    cpu_median: float
    paired_ratio: float

    @property
    def runs(self) -> int:
        return 2 * self.iterations

    @property
    def overhead_per_iteration(self) -> float:
        return (self.total_s - self.preparation_s) / self.runs - self.phases_s / (
            self.runs * self.jobs
        )

    @property
    def ideal_s(self) -> float:
        return self.phases_s / self.jobs + self.preparation_s


def prepare(client: docker.DockerClient) -> tuple[dict, float]:
    """Build (or reuse) the two images; return the builds and the time taken."""
    started = time.monotonic()
    image = build_test_image(client, "bench-burner", {"burner.py": BURNER_SOURCE})
    builds = {
        label: prepared_build(label, image.image_tag, image.image_id)
        for label in ("baseline", "candidate")
    }
    return builds, time.monotonic() - started


def run_mode(
    client: docker.DockerClient, mode: str, iterations: int, root: Path
) -> ModeRun:
    env = Environment(docker_factory=lambda: client, quiet=True)
    builds, preparation_s = prepare(client)
    plan = plan_iterations(list(builds), iterations, "shuffle", seed=iterations)
    run_dir = RunDirectory.create(root, safe_file_name(f"{mode}-{iterations}"))
    run_dir.write_manifest({"status": "running"})
    started = time.monotonic()
    if mode == "-j 1":
        jobs = 1
        records = run_plan(
            env, run_dir, builds, SCENARIO, LIMITS, plan, SilentDisplay(),
            labels=TEST_LABELS,
        )  # fmt: skip
    elif mode == "default -j":
        jobs = default_jobs(engine_cores(client), LIMITS.cpus)
        records = run_plan_parallel(
            env, run_dir, builds, SCENARIO, LIMITS, plan, SilentDisplay(), jobs,
            labels=TEST_LABELS,
        )  # fmt: skip
    else:
        jobs = default_swarm_jobs(list_nodes(client), LIMITS.cpus)
        images = {label: build.image_id for label, build in builds.items()}
        records = run_plan_swarm(
            env, run_dir, builds, images, SCENARIO, LIMITS, plan, SilentDisplay(),
            jobs, labels=TEST_LABELS,
        )  # fmt: skip
    total_s = time.monotonic() - started + preparation_s
    return describe_run(mode, iterations, jobs, total_s, preparation_s, records)


def describe_run(
    mode: str,
    iterations: int,
    jobs: int,
    total_s: float,
    preparation_s: float,
    records: list[IterationRecord],
) -> ModeRun:
    complete = [record for record in records if record.ok]
    walls = [record.phases[0].wall_s for record in complete]
    manifest = {"run_id": mode, "baseline": "baseline", "scenario": SCENARIO.to_dict()}
    summary = summarise(manifest, records)
    paired = next(p for p in summary.paired if p.phase == "import burner")
    return ModeRun(
        mode=mode,
        iterations=iterations,
        jobs=jobs,
        total_s=total_s,
        preparation_s=preparation_s,
        phases_s=float(sum(walls)),
        failed=len(records) - len(complete),
        wall_median=float(np.median(walls)),
        cpu_median=float(np.median([r.phases[0].cpu_s for r in complete])),
        paired_ratio=paired.result.ratio,
    )


def join_swarm(client: docker.DockerClient) -> bool:
    """Create a single-node swarm unless there is one; return whether we did."""
    if client.info()["Swarm"]["LocalNodeState"] != "inactive":
        return False
    subprocess.run(
        ["docker", "swarm", "init", "--advertise-addr", "127.0.0.1"],
        check=True,
        capture_output=True,
    )
    return True


def leave_swarm(had_gateway_bridge: bool) -> None:
    subprocess.run(["docker", "swarm", "leave", "--force"], capture_output=True)
    if not had_gateway_bridge:
        subprocess.run(
            ["docker", "network", "rm", "docker_gwbridge"], capture_output=True
        )


def run_all(client: docker.DockerClient, root: Path) -> list[ModeRun]:
    runs = []
    for iterations in ITERATION_COUNTS:
        for mode in ("-j 1", "default -j"):
            print(f"scale: {mode}, 2 x {iterations}", file=sys.stderr)
            runs.append(run_mode(client, mode, iterations, root))
    networks = {network.name for network in client.networks.list()}
    created = join_swarm(client)
    try:
        for iterations in ITERATION_COUNTS:
            print(f"scale: swarm, 2 x {iterations}", file=sys.stderr)
            runs.append(run_mode(client, "swarm", iterations, root))
    finally:
        if created:
            leave_swarm("docker_gwbridge" in networks)
    return runs


def render(runs: list[ModeRun], client: docker.DockerClient) -> str:
    serial = {run.iterations: run.total_s for run in runs if run.mode == "-j 1"}
    lines = [
        "## Scale: parallel and swarm runs",
        "",
        "Command: `python -m benchmarks scale` (benchmarks/scale.py). Two builds "
        "of a synthetic SDK whose import burns 50 ms of CPU time, `--cpus 0.1`, "
        "run one container at a time (`-j 1`), at the default `-j`, and as jobs "
        "on a single-node swarm at its default job count. Preparation is the "
        "`docker build` of the (cached) image. Ideal = sum of phase wall times / "
        "slots + preparation. Overhead per iteration = (total - preparation) / "
        "iterations - phase wall time per slot.",
        "",
        f"Machine: {describe_machine(client)}.",
        "",
        "| mode | iterations | slots | total | ideal | total / ideal | "
        "speed-up vs -j 1 | overhead per iteration | wall median | CPU median | "
        "paired ratio | failed |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | "
        "---: | ---: |",
    ]
    for run in runs:
        lines.append(
            f"| {run.mode} | 2 x {run.iterations} | {run.jobs} | {run.total_s:.1f} s "
            f"| {run.ideal_s:.1f} s | {run.total_s / run.ideal_s:.1f}x "
            f"| {serial[run.iterations] / run.total_s:.2f}x "
            f"| {run.overhead_per_iteration:.3f} s | {run.wall_median:.3f} s "
            f"| {run.cpu_median:.4f} s | {run.paired_ratio:.3f}x | {run.failed} |"
        )
    target = next(r for r in runs if r.mode == "default -j" and r.iterations == 100)
    verdict = "met" if target.total_s <= TARGET_FACTOR * target.ideal_s else "missed"
    lines += [
        "",
        f"Target: the 2 x 100 run at the default -j within {TARGET_FACTOR}x of the "
        f"ideal: {verdict} ({target.total_s / target.ideal_s:.1f}x).",
    ]
    return "\n".join(lines) + "\n"


def describe_machine(client: docker.DockerClient) -> str:
    info = client.info()
    return (
        f"{info.get('NCPU')} cores, {read_cpu_model()}, {info.get('OperatingSystem')}, "
        f"Docker {info.get('ServerVersion')}, cgroup v{info.get('CgroupVersion')}, "
        f"kernel {platform.release()}, stand-in base image, shared with other "
        "test runs"
    )


def run() -> str:
    client = docker.from_env()
    with tempfile.TemporaryDirectory(prefix="coldstart-scale-") as root:
        runs = run_all(client, Path(root))
    markdown = render(runs, client)
    client.close()
    return markdown

"""Tests for the runner, the plan and the progress display.

Tests marked ``docker`` start real containers from tiny images built on the
stand-in base image. Pure logic (plan order, record interpretation, display)
is tested without an engine.
"""

from __future__ import annotations

import io
import json
import logging
import os
import signal
import threading
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import docker
import pytest
import requests
from hypothesis import given
from hypothesis import strategies as st
from images import TEST_LABELS, build_test_image, prepared_build
from rich.console import Console
from urllib3.exceptions import ReadTimeoutError

from harness.display import RichDisplay, SilentDisplay, make_display
from harness.environment import Environment
from harness.errors import EngineUnavailable, Interrupted, InvalidInput
from harness.models import (
    FailureKind,
    IterationRecord,
    Limits,
    Phase,
    PreparedBuild,
    Scenario,
)
from harness.results import RunDirectory
from harness.runner import (
    ContainerRun,
    PlannedIteration,
    check_isolation,
    container_options,
    format_bytes,
    interpret_run,
    plan_iterations,
    remove_run_containers,
    run_iteration,
    run_plan,
    run_with_retries,
    wait_or_kill,
)

MiB = 2**20

# Burns a fixed 50 ms of CPU time at import, measured with process_time so
# that throttling stretches only the wall time.
BURNER_SOURCE = """\
import time

_end = time.process_time() + 0.05
while time.process_time() < _end:
    pass
"""

CHATTY_SOURCE = """\
import sys

print("chatty SDK: hello from import")
sys.stdout.write("no newline at the end")
print("chatty SDK: warning", file=sys.stderr)
"""

BROKEN_SOURCE = """\
def load():
    raise RuntimeError("broken at import")

load()
"""


def make_scenario(*phases: tuple[str, str], **fields: Any) -> Scenario:
    return Scenario(
        name="test",
        description="",
        phases=tuple(Phase(name, code, "init") for name, code in phases),
        budgets={"init": 10.0},
        **fields,
    )


PLANNED = PlannedIteration(round=1, build="sdk", iteration=1)


# ---------------------------------------------------------------------------
# plan_iterations


def test_alternate_keeps_label_order() -> None:
    plan = plan_iterations(["a", "b"], 3, "alternate", seed=0)
    assert [item.build for item in plan] == ["a", "b", "a", "b", "a", "b"]
    assert [item.round for item in plan] == [1, 1, 2, 2, 3, 3]
    assert [item.iteration for item in plan] == [1, 1, 2, 2, 3, 3]


def test_shuffle_same_seed_same_plan() -> None:
    labels = ["a", "b", "c", "d"]
    first = plan_iterations(labels, 10, "shuffle", seed=7)
    second = plan_iterations(labels, 10, "shuffle", seed=7)
    assert first == second


def test_shuffle_seed_changes_order() -> None:
    labels = ["a", "b", "c", "d"]
    plans = {
        tuple(item.build for item in plan_iterations(labels, 10, "shuffle", seed))
        for seed in range(5)
    }
    assert len(plans) == 5


def test_shuffle_varies_within_run() -> None:
    plan = plan_iterations(["a", "b", "c"], 20, "shuffle", seed=1)
    rounds = {
        tuple(item.build for item in plan if item.round == r) for r in range(1, 21)
    }
    assert len(rounds) > 1


@given(
    labels=st.lists(
        st.text(min_size=1, max_size=5), min_size=1, max_size=6, unique=True
    ),
    iterations=st.integers(min_value=1, max_value=12),
    order=st.sampled_from(["shuffle", "alternate"]),
    seed=st.integers(min_value=0, max_value=2**32),
)
def test_every_round_runs_each_build_once(
    labels: list[str], iterations: int, order: str, seed: int
) -> None:
    plan = plan_iterations(labels, iterations, order, seed)
    assert len(plan) == len(labels) * iterations
    for round_number in range(1, iterations + 1):
        in_round = [item for item in plan if item.round == round_number]
        assert sorted(item.build for item in in_round) == sorted(labels)
        assert {item.iteration for item in in_round} == {round_number}
    # Rounds are contiguous, so no build runs twice before the others ran once.
    assert [item.round for item in plan] == sorted(item.round for item in plan)
    assert Counter(item.build for item in plan) == {
        label: iterations for label in labels
    }


@pytest.mark.parametrize(
    ("labels", "iterations", "order", "message"),
    [
        ([], 3, "shuffle", "no builds to run: name at least one build"),
        (["a", "a"], 3, "shuffle", "build labels must be unique, got ['a', 'a']"),
        (["a"], 0, "shuffle", "invalid iterations 0: must be at least 1"),
        (["a"], 3, "random", "invalid order 'random': choose shuffle or alternate"),
    ],
)
def test_plan_rejects_invalid_input(
    labels: list[str], iterations: int, order: str, message: str
) -> None:
    with pytest.raises(InvalidInput) as caught:
        plan_iterations(labels, iterations, order, seed=0)
    assert str(caught.value) == message


def test_warmups_come_first_in_round_zero() -> None:
    plan = plan_iterations(["a", "b"], 2, "alternate", seed=0, warmup=2)
    warmups = [item for item in plan if item.warmup]
    assert [(item.build, item.round, item.iteration) for item in warmups] == [
        ("a", 0, 1),
        ("b", 0, 1),
        ("a", 0, 2),
        ("b", 0, 2),
    ]
    assert plan[:4] == warmups
    assert [item.round for item in plan[4:]] == [1, 1, 2, 2]


def test_negative_warmup_rejected() -> None:
    with pytest.raises(InvalidInput) as caught:
        plan_iterations(["a"], 1, "shuffle", seed=0, warmup=-1)
    assert str(caught.value) == "invalid warm-up count -1: must be 0 or more"


# ---------------------------------------------------------------------------
# container options and record interpretation, without an engine


def test_container_options_apply_limits() -> None:
    build = prepared_build("sdk", "coldstart/build:abc")
    scenario = make_scenario(("import", "import sdk"), env={"SDK_MODE": "lazy"})
    limits = Limits(cpus=0.1, memory_bytes=128 * MiB, timeout_s=60)
    options = container_options(build, scenario, limits, {"coldstart.run": "r1"})
    assert options["image"] == "coldstart/build:abc"
    assert options["environment"] == {"HOME": "/tmp", "SDK_MODE": "lazy"}
    assert options["cpu_period"] == 100_000
    assert options["cpu_quota"] == 10_000
    assert options["mem_limit"] == 128 * MiB
    assert options["memswap_limit"] == 128 * MiB
    assert options["network_mode"] == "none"
    assert options["cap_drop"] == ["ALL"]
    assert options["labels"] == {"coldstart.run": "r1"}
    assert "volumes" not in options


def test_container_options_without_memory_limit() -> None:
    build = prepared_build("sdk", "coldstart/build:abc")
    options = container_options(build, make_scenario(), Limits(cpus=1.5), {})
    assert options["cpu_quota"] == 150_000
    assert "mem_limit" not in options
    assert "memswap_limit" not in options


def container_run(**fields: Any) -> ContainerRun:
    defaults: dict[str, Any] = {
        "exit_code": 0,
        "timed_out": False,
        "oom_killed": False,
        "stdout": b"",
        "stderr": b"",
        "container_s": 1.5,
    }
    return ContainerRun(**{**defaults, **fields})


def test_garbled_output_is_probe_output_failure() -> None:
    run = container_run(exit_code=139, stdout=b"partial", stderr=b"Segmentation fault")
    record = interpret_run(run, "sdk", PLANNED, "t0", Limits())
    assert record.failure is FailureKind.PROBE_OUTPUT
    assert record.error == (
        "probe output unusable: no probe record in the output (exit code 139); "
        "stderr ends with: 'Segmentation fault'"
    )
    assert record.telemetry == {"exit_code": 139}
    assert record.container_s == 1.5


def test_timeout_before_first_phase() -> None:
    run = container_run(exit_code=137, timed_out=True)
    record = interpret_run(run, "sdk", PLANNED, "t0", Limits(timeout_s=2.5))
    assert record.failure is FailureKind.TIMEOUT
    assert record.error == "container timed out after 2.5 s before the first phase"


def test_out_of_memory_without_limit() -> None:
    run = container_run(exit_code=137, oom_killed=True)
    record = interpret_run(run, "sdk", PLANNED, "t0", Limits())
    assert record.failure is FailureKind.OUT_OF_MEMORY
    assert record.error == (
        "the container ran out of memory: killed for exceeding "
        "the host's memory (no --memory limit set)"
    )


@pytest.mark.parametrize(
    ("size", "text"),
    [(64 * MiB, "64 MiB"), (2**30, "1 GiB"), (1536 * MiB, "1.5 GiB"), (512, "512 B")],
)
def test_format_bytes(size: int, text: str) -> None:
    assert format_bytes(size) == text


class ExitedBeforeKill:
    """A container whose wait() times out but which exits before kill()."""

    short_id = "abc123"

    def __init__(self) -> None:
        self.waits = 0

    def wait(self, timeout: float) -> dict[str, int]:
        self.waits += 1
        if self.waits == 1:
            cause = ReadTimeoutError(None, "", "timed out")  # type: ignore[arg-type]
            raise requests.ConnectionError(cause)
        return {"StatusCode": 0}

    def kill(self) -> None:
        response = requests.Response()
        response.status_code = 409
        raise docker.errors.APIError("is not running", response=response)


def test_exit_racing_the_kill_is_not_timeout() -> None:
    container = ExitedBeforeKill()
    assert wait_or_kill(container, 3) == (0, False)  # type: ignore[arg-type]
    assert container.waits == 2


def test_engine_error_while_waiting_propagates() -> None:
    class Broken(ExitedBeforeKill):
        def wait(self, timeout: float) -> dict[str, int]:
            raise requests.ConnectionError("connection refused")

    with pytest.raises(requests.ConnectionError):
        wait_or_kill(Broken(), 3)  # type: ignore[arg-type]


class UnreachableClient:
    """A Docker client whose engine has gone away."""

    class Containers:
        def create(self, **options: Any) -> None:
            raise requests.ConnectionError("connection refused")

    containers = Containers()

    def ping(self) -> None:
        raise requests.ConnectionError("connection refused")


class RecordingDisplay:
    def __init__(self) -> None:
        self.events: list[tuple[str, Any]] = []

    def start(self, total: int, description: str) -> None:
        self.events.append(("start", total))

    def advance(self, record: IterationRecord) -> None:
        self.events.append(("advance", (record.build, record.iteration)))

    def log(self, message: str) -> None:
        self.events.append(("log", message))

    def stop(self) -> None:
        self.events.append(("stop", None))


def test_unreachable_engine_recorded_then_raised(tmp_path: Path) -> None:
    env = Environment(docker_factory=UnreachableClient)  # type: ignore[arg-type]
    run_dir = RunDirectory.create(tmp_path, "run")
    run_dir.write_manifest({"status": "running"})
    build = prepared_build("sdk", "coldstart/build:abc")
    plan = plan_iterations(["sdk"], 3, "alternate", seed=0)
    display = RecordingDisplay()
    with pytest.raises(EngineUnavailable) as caught:
        run_plan(env, run_dir, {"sdk": build}, make_scenario(), Limits(), plan, display)
    assert str(caught.value) == (
        "the Docker engine stopped responding during iteration 1 of build 'sdk': "
        "connection refused (check that dockerd is running with `docker info`)"
    )
    records = run_dir.read_records()
    assert len(records) == 1
    assert records[0].failure is FailureKind.ENGINE
    assert records[0].error == "Docker engine error: connection refused"
    assert display.events == [("start", 3), ("advance", ("sdk", 1)), ("stop", None)]


# ---------------------------------------------------------------------------
# display


def failed_record() -> IterationRecord:
    return IterationRecord(
        build="candidate",
        iteration=2,
        round=2,
        started_at="t0",
        container_s=3.0,
        failure=FailureKind.TIMEOUT,
        error="phase 'import sdk' timed out after 3 s",
    )


def ok_record() -> IterationRecord:
    return IterationRecord(
        build="baseline", iteration=1, round=1, started_at="t0", container_s=1.0
    )


def test_rich_display_names_failed_build() -> None:
    output = io.StringIO()
    display = RichDisplay(Console(file=output, width=200, force_terminal=False))
    display.start(4, "stripe-lambda: 2 builds")
    display.advance(ok_record())
    display.advance(failed_record())
    display.stop()
    text = output.getvalue()
    assert (
        "build 'candidate' iteration 2 failed (timeout): "
        "phase 'import sdk' timed out after 3 s"
    ) in text
    assert "stripe-lambda: 2 builds" in text
    assert "2/4" in text
    assert "1 failed" in text
    assert display.failures == 1


def test_make_display_rich_unless_quiet() -> None:
    terminal = Console(file=io.StringIO(), force_terminal=True)
    assert isinstance(
        make_display(Environment(stderr=terminal, quiet=True)), SilentDisplay
    )
    assert isinstance(make_display(Environment(stderr=terminal)), RichDisplay)


def test_make_display_silent_on_pipe() -> None:
    pipe = Console(file=io.StringIO(), force_terminal=False)
    assert isinstance(make_display(Environment(stderr=pipe)), SilentDisplay)


# ---------------------------------------------------------------------------
# real containers


@pytest.fixture(scope="module")
def client() -> Iterator[docker.DockerClient]:
    engine = docker.from_env()
    yield engine
    engine.close()


@pytest.fixture(scope="module")
def sdk_build(client: docker.DockerClient) -> PreparedBuild:
    return build_test_image(
        client,
        "sdk",
        {
            "burner.py": BURNER_SOURCE,
            "chatty.py": CHATTY_SOURCE,
            "broken_sdk/__init__.py": "from broken_sdk.core import load\n",
            "broken_sdk/core.py": BROKEN_SOURCE,
            "sleepy.py": "",
        },
    )


@pytest.fixture(scope="module")
def slow_build(client: docker.DockerClient) -> PreparedBuild:
    """An SDK whose import hangs, for interrupting a run mid-container."""
    return build_test_image(
        client, "slow", {"sleepy.py": "import time\ntime.sleep(60)\n"}
    )


@pytest.fixture
def run_id() -> str:
    return f"test-{uuid.uuid4().hex[:8]}"


def containers_of_run(client: docker.DockerClient, run_id: str) -> list[Any]:
    return client.containers.list(
        all=True, filters={"label": f"coldstart.run={run_id}"}
    )


def run_once(
    client: docker.DockerClient,
    build: PreparedBuild,
    scenario: Scenario,
    limits: Limits,
    run_id: str,
) -> IterationRecord:
    record = run_iteration(
        client, build, scenario, limits, PLANNED, run_id, labels=TEST_LABELS
    )
    assert containers_of_run(client, run_id) == []
    return record


@pytest.mark.docker
def test_throttled_phase_wall_exceeds_cpu(
    client: docker.DockerClient, sdk_build: PreparedBuild, run_id: str
) -> None:
    scenario = make_scenario(("import burner", "import burner"))
    record = run_once(client, sdk_build, scenario, Limits(cpus=0.1), run_id)
    assert record.ok, record.error
    (phase,) = record.phases
    assert 0.05 <= phase.cpu_s < 0.08
    assert phase.wall_s >= 3 * phase.cpu_s
    assert phase.modules == ("burner",)
    assert phase.cgroup is not None
    assert phase.cgroup["nr_throttled"] > 0
    assert phase.cgroup["throttled_s"] > 0.1
    cgroup = record.telemetry["cgroup"]
    assert cgroup["version"] == 1
    assert cgroup["cpu_quota_us"] == 10_000
    assert cgroup["cpu_period_us"] == 100_000
    assert cgroup["totals"]["nr_throttled"] >= phase.cgroup["nr_throttled"]
    assert record.telemetry["exit_code"] == 0
    assert record.python_version.startswith("3.11.")
    assert record.container_s > phase.wall_s


@pytest.mark.docker
def test_full_cpu_wall_close_to_cpu(
    client: docker.DockerClient, sdk_build: PreparedBuild, run_id: str
) -> None:
    scenario = make_scenario(("import burner", "import burner"))
    record = run_once(client, sdk_build, scenario, Limits(cpus=1.0), run_id)
    assert record.ok, record.error
    (phase,) = record.phases
    assert 0.05 <= phase.cpu_s < 0.08
    # At cpus=0.1 the same phase waits about 0.45 s in four throttled periods.
    # Unthrottled, it waits only for other load on the host, which on a busy
    # 2-core machine was seen to reach 0.15 s.
    assert phase.wall_s - phase.cpu_s < 0.3
    assert phase.cgroup is not None
    assert phase.cgroup["nr_throttled"] == 0
    assert record.telemetry["cgroup"]["cpu_quota_us"] == 100_000


@pytest.mark.docker
def test_probe_imports_nothing_before_phases(
    client: docker.DockerClient, sdk_build: PreparedBuild, run_id: str
) -> None:
    """json needs re, so re must be new in the phase, not preloaded by the probe."""
    scenario = make_scenario(("import json", "import json"))
    record = run_once(client, sdk_build, scenario, Limits(cpus=1.0), run_id)
    assert record.ok, record.error
    modules = record.phases[0].modules
    for name in ("json", "json.decoder", "re", "enum"):
        assert name in modules


@pytest.mark.docker
def test_raising_import_is_phase_raised(
    client: docker.DockerClient, sdk_build: PreparedBuild, run_id: str
) -> None:
    scenario = make_scenario(
        ("import burner", "import burner"),
        ("import broken_sdk", "import broken_sdk"),
        ("never", "pass"),
    )
    record = run_once(client, sdk_build, scenario, Limits(cpus=1.0), run_id)
    assert record.failure is FailureKind.PHASE_RAISED
    assert record.error == (
        "phase 'import broken_sdk' raised RuntimeError: broken at import"
    )
    assert [phase.name for phase in record.phases] == ["import burner"]


@pytest.mark.docker
def test_missing_module_is_phase_raised(
    client: docker.DockerClient, sdk_build: PreparedBuild, run_id: str
) -> None:
    scenario = make_scenario(("import stripe", "import stripe"))
    record = run_once(client, sdk_build, scenario, Limits(cpus=1.0), run_id)
    assert record.failure is FailureKind.PHASE_RAISED
    assert record.error == (
        "phase 'import stripe' raised ModuleNotFoundError: No module named 'stripe'"
    )


@pytest.mark.docker
def test_sleeping_phase_times_out(
    client: docker.DockerClient, sdk_build: PreparedBuild, run_id: str
) -> None:
    scenario = make_scenario(("quick", "pass"), ("hang", "import time\ntime.sleep(60)"))
    limits = Limits(cpus=1.0, timeout_s=3)
    record = run_once(client, sdk_build, scenario, limits, run_id)
    assert record.failure is FailureKind.TIMEOUT
    assert record.error == "phase 'hang' timed out after 3 s"
    assert 3 <= record.container_s < 10
    assert record.telemetry["exit_code"] == 137
    assert [phase.name for phase in record.phases] == ["quick"]
    assert 0 < record.phases[0].wall_s < 1


@pytest.mark.docker
def test_allocation_past_limit_is_out_of_memory(
    client: docker.DockerClient, sdk_build: PreparedBuild, run_id: str
) -> None:
    scenario = make_scenario(
        ("import burner", "import burner"),
        ("allocate", "data = b'x' * (200 * 2**20)"),
    )
    limits = Limits(cpus=1.0, memory_bytes=64 * MiB)
    record = run_once(client, sdk_build, scenario, limits, run_id)
    assert record.failure is FailureKind.OUT_OF_MEMORY
    (finished,) = record.phases
    assert finished.name == "import burner"
    assert 0.05 <= finished.cpu_s < 0.08
    assert finished.modules == ("burner",)
    assert record.error == (
        "phase 'allocate' ran out of memory: killed for exceeding the 64 MiB "
        "memory limit"
    )
    assert record.telemetry["exit_code"] == 137


@pytest.mark.docker
def test_memory_limit_applied(
    client: docker.DockerClient, sdk_build: PreparedBuild, run_id: str
) -> None:
    scenario = make_scenario(("allocate", "data = b'x' * (20 * 2**20)"))
    limits = Limits(cpus=1.0, memory_bytes=64 * MiB)
    record = run_once(client, sdk_build, scenario, limits, run_id)
    assert record.ok, record.error
    peak = record.telemetry["cgroup"]["memory_peak_bytes"]
    assert 20 * MiB < peak <= 64 * MiB
    assert record.peak_rss_kb is not None
    assert record.peak_rss_kb > 20 * 1024


@pytest.mark.docker
def test_printing_sdk_still_parses(
    client: docker.DockerClient, sdk_build: PreparedBuild, run_id: str
) -> None:
    scenario = make_scenario(("import chatty", "import chatty"), ("after", "pass"))
    record = run_once(client, sdk_build, scenario, Limits(cpus=1.0), run_id)
    assert record.ok, record.error
    assert [phase.name for phase in record.phases] == ["import chatty", "after"]


@pytest.mark.docker
def test_record_longer_than_log_line(
    client: docker.DockerClient, sdk_build: PreparedBuild, run_id: str
) -> None:
    """dockerd splits log lines at 16 KiB, so the logs API must rejoin them."""
    code = (
        "import sys, types\n"
        "for i in range(3000):\n"
        "    sys.modules[f'fake_module_{i:04d}'] = types.ModuleType('fake')\n"
    )
    scenario = make_scenario(("many modules", code))
    record = run_once(client, sdk_build, scenario, Limits(cpus=1.0), run_id)
    assert record.ok, record.error
    fakes = [name for name in record.phases[0].modules if name.startswith("fake_")]
    assert len(fakes) == 3000


@pytest.mark.docker
def test_container_has_no_network(
    client: docker.DockerClient, sdk_build: PreparedBuild, run_id: str
) -> None:
    """Only loopback exists and there is no route, checked without sending."""
    code = (
        "import os\n"
        "routes = open('/proc/net/route').read().splitlines()[1:]\n"
        "raise Exception(f'{sorted(os.listdir(\"/sys/class/net\"))} {len(routes)}')\n"
    )
    scenario = make_scenario(("network", code))
    record = run_once(client, sdk_build, scenario, Limits(cpus=1.0), run_id)
    assert record.error == "phase 'network' raised Exception: ['lo'] 0"


@pytest.mark.docker
def test_container_sees_only_scenario_env(
    client: docker.DockerClient,
    sdk_build: PreparedBuild,
    run_id: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("HOME_SECRET_FOR_TEST", "must-not-leak")
    code = "import os\nraise Exception(' '.join(sorted(os.environ)))"
    scenario = make_scenario(("env", code), env={"SDK_EAGER_IMPORT": "1"})
    record = run_once(client, sdk_build, scenario, Limits(cpus=1.0), run_id)
    # Docker sets PATH, HOSTNAME and HOME in every container. Python sets
    # LC_CTYPE itself when it coerces the C locale to UTF-8 (PEP 538).
    assert record.error == (
        "phase 'env' raised Exception: HOME HOSTNAME LC_CTYPE PATH SDK_EAGER_IMPORT"
    )


@pytest.mark.docker
def test_missing_image_is_engine_failure(
    client: docker.DockerClient, run_id: str
) -> None:
    build = prepared_build("gone", "coldstart-test/missing:none")
    record = run_once(client, build, make_scenario(("noop", "pass")), Limits(), run_id)
    assert record.failure is FailureKind.ENGINE
    assert record.error == (
        "image coldstart-test/missing:none not found (prepare the build again)"
    )


def make_env(client: docker.DockerClient) -> Environment:
    return Environment(docker_factory=lambda: client)


def labelled_builds(sdk_build: PreparedBuild) -> dict[str, PreparedBuild]:
    """Two labels for the same image, like an A/A comparison."""
    return {
        label: prepared_build(label, sdk_build.image_tag, sdk_build.image_id)
        for label in ("baseline", "candidate")
    }


@pytest.mark.docker
def test_run_plan_appends_in_plan_order(
    client: docker.DockerClient, sdk_build: PreparedBuild, tmp_path: Path
) -> None:
    run_dir = RunDirectory.create(tmp_path, "test-plan")
    run_dir.write_manifest({"status": "running"})
    plan = plan_iterations(["baseline", "candidate"], 2, "shuffle", seed=3)
    display = RecordingDisplay()
    scenario = make_scenario(("import burner", "import burner"))
    records = run_plan(
        make_env(client),
        run_dir,
        labelled_builds(sdk_build),
        scenario,
        Limits(cpus=1.0),
        plan,
        display,
    )
    order = [(item.build, item.iteration) for item in plan]
    assert [(r.build, r.iteration) for r in records] == order
    assert run_dir.read_records() == records
    assert all(record.ok for record in records)
    assert display.events[0] == ("start", 4)
    assert [event[1] for event in display.events[1:-1]] == order
    assert display.events[-1] == ("stop", None)
    assert containers_of_run(client, "test-plan") == []


@pytest.mark.docker
@pytest.mark.parametrize(
    ("signal_number", "exit_code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)]
)
def test_signal_stops_run_and_removes_container(
    client: docker.DockerClient,
    sdk_build: PreparedBuild,
    slow_build: PreparedBuild,
    tmp_path: Path,
    signal_number: int,
    exit_code: int,
) -> None:
    """The baseline's import finishes and the candidate's hangs until the signal."""
    run_dir = RunDirectory.create(tmp_path, f"test-signal-{signal_number}")
    run_dir.write_manifest({"status": "running"})
    plan = plan_iterations(["baseline", "candidate"], 3, "alternate", seed=0)
    builds = {
        "baseline": prepared_build("baseline", sdk_build.image_tag),
        "candidate": prepared_build("candidate", slow_build.image_tag),
    }
    scenario = make_scenario(("import sleepy", "import sleepy"))

    previous_handler = signal.getsignal(signal_number)
    timer = threading.Timer(4.0, os.kill, (os.getpid(), signal_number))
    timer.start()
    try:
        with pytest.raises(Interrupted) as caught:
            run_plan(
                make_env(client),
                run_dir,
                builds,
                scenario,
                Limits(cpus=1.0, timeout_s=30),
                plan,
                SilentDisplay(),
            )
    finally:
        timer.cancel()

    assert caught.value.signal_number == signal_number
    assert caught.value.exit_code == exit_code
    assert containers_of_run(client, run_dir.run_id) == []
    records = run_dir.read_records()
    assert [(r.build, r.iteration, r.ok) for r in records] == [("baseline", 1, True)]
    assert signal.getsignal(signal_number) == previous_handler


@pytest.mark.docker
def test_leftover_run_containers_removed(
    client: docker.DockerClient, sdk_build: PreparedBuild, run_id: str
) -> None:
    labels = {"coldstart.run": run_id, **TEST_LABELS}
    for _ in range(2):
        client.containers.create(sdk_build.image_tag, ["true"], labels=labels)
    assert len(containers_of_run(client, run_id)) == 2
    remove_run_containers(client, run_id)
    assert containers_of_run(client, run_id) == []


# ---------------------------------------------------------------------------
# isolation of the code under test

HARDENING_PROBE = """\
import errno, json, os, socket, threading, time
found = {"uid": os.getuid(), "gid": os.getgid()}
try:
    open("/probe-write", "w")
except OSError as error:
    found["root_write"] = errno.errorcode[error.errno]
with open("/tmp/probe-write", "w") as handle:
    found["tmp_write"] = handle.write("ok")
found["home"] = os.environ["HOME"]
try:
    socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
except OSError as error:
    found["raw_socket"] = errno.errorcode[error.errno]
try:
    socket.create_connection(("127.0.0.1", 9), timeout=2)
except OSError as error:
    found["loopback"] = errno.errorcode[error.errno]
found["docker_socket"] = os.path.exists("/var/run/docker.sock")
lines = open("/proc/self/status").read().splitlines()
status = dict(line.split(":\\t") for line in lines)
found["cap_eff"] = status["CapEff"].strip()
found["no_new_privs"] = status["NoNewPrivs"].strip()
found["pids_max"] = open("/sys/fs/cgroup/pids/pids.max").read().strip()
threads = []
try:
    for _ in range(400):
        thread = threading.Thread(target=time.sleep, args=(5,), daemon=True)
        thread.start()
        threads.append(thread)
except RuntimeError:
    pass
found["threads_started"] = len(threads)
raise Exception(json.dumps(found, sort_keys=True))
"""


def test_container_options_isolate() -> None:
    build = prepared_build("sdk", "coldstart/build:abc")
    options = container_options(build, make_scenario(), Limits(), {})
    assert options["user"] == "65534:65534"
    assert options["pids_limit"] == 256
    assert options["read_only"] is True
    assert options["tmpfs"] == {"/tmp": "rw,nosuid,nodev,size=64m,mode=1777"}
    assert options["security_opt"] == ["no-new-privileges"]
    for key in ("volumes", "mounts", "privileged", "devices", "volumes_from"):
        assert key not in options


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ({"volumes": {"/var/run/docker.sock": {}}}, "'volumes' is not allowed"),
        ({"mounts": ["/var/run/docker.sock"]}, "'mounts' is not allowed"),
        ({"privileged": True}, "'privileged' is not allowed"),
        ({"user": "0"}, "'user' must be '65534:65534'"),
        ({"network_mode": "host"}, "'network_mode' must be 'none'"),
    ],
)
def test_check_isolation_rejects_escapes(extra: dict[str, Any], message: str) -> None:
    build = prepared_build("sdk", "coldstart/build:abc")
    options = {**container_options(build, make_scenario(), Limits(), {}), **extra}
    with pytest.raises(ValueError, match=message):
        check_isolation(options)


@pytest.mark.docker
def test_hardening_seen_from_inside(
    client: docker.DockerClient, sdk_build: PreparedBuild, run_id: str
) -> None:
    scenario = make_scenario(
        ("probe", HARDENING_PROBE), ("import burner", "import burner")
    )
    record = run_once(client, sdk_build, scenario, Limits(cpus=1.0), run_id)
    assert record.failure is FailureKind.PHASE_RAISED
    assert record.error is not None
    found = json.loads(record.error.removeprefix("phase 'probe' raised Exception: "))
    assert found["uid"] == 65534
    assert found["gid"] == 65534
    assert found["root_write"] == "EROFS"
    assert found["tmp_write"] == 2
    assert found["home"] == "/tmp"
    assert found["raw_socket"] == "EPERM"
    assert found["loopback"] == "ECONNREFUSED"
    assert found["docker_socket"] is False
    assert found["cap_eff"] == "0000000000000000"
    assert found["no_new_privs"] == "1"
    assert found["pids_max"] == "256"
    assert 200 < found["threads_started"] < 256


@pytest.mark.docker
def test_sdk_imports_as_nobody(
    client: docker.DockerClient, sdk_build: PreparedBuild, run_id: str
) -> None:
    """site-packages is world-readable, and the missing .pyc writes do no harm."""
    scenario = make_scenario(
        ("import burner", "import burner"), ("json", "import json")
    )
    record = run_once(client, sdk_build, scenario, Limits(cpus=1.0), run_id)
    assert record.ok, record.error
    assert [phase.name for phase in record.phases] == ["import burner", "json"]


def test_engine_error_retried_then_recorded(monkeypatch: pytest.MonkeyPatch) -> None:
    outcomes = iter([FailureKind.ENGINE, FailureKind.ENGINE, None, FailureKind.ENGINE])

    def fake_iteration(*args: Any, **kwargs: Any) -> IterationRecord:
        failure = next(outcomes)
        return IterationRecord("sdk", 1, 1, "t", 0.0, failure=failure, error="gone")

    monkeypatch.setattr("harness.runner.run_iteration", fake_iteration)
    delays: list[float] = []
    build = prepared_build("sdk", "img")
    record = run_with_retries(
        None, build, make_scenario(), Limits(), PLANNED, "r", retries=3,
        sleep=delays.append,
    )  # fmt: skip
    assert record.ok
    assert record.telemetry["engine_retries"] == 2
    assert delays == [1.0, 2.0]
    failed = run_with_retries(
        None, build, make_scenario(), Limits(), PLANNED, "r", retries=0,
        sleep=delays.append,
    )  # fmt: skip
    assert failed.failure is FailureKind.ENGINE
    assert "engine_retries" not in failed.telemetry


class VanishingContainer:
    """A container that another thread removed before this one could."""

    short_id = "0123456789ab"

    def __init__(self, gone: bool) -> None:
        self.gone = gone
        self.removed = False

    def remove(self, force: bool = False) -> None:
        if self.gone:
            raise docker.errors.NotFound("No such container: 0123456789ab")
        self.removed = True


class RacingContainers:
    """Lists like the engine when a container disappears during the list."""

    def __init__(self, items: list[VanishingContainer]) -> None:
        self.items = items

    def list(self, all: bool, filters: dict, sparse: bool = False) -> list:
        if not sparse:
            # A full list inspects each container, and one is already gone.
            raise docker.errors.NotFound("No such container: 0123456789ab")
        return self.items


def test_cleanup_ignores_container_already_gone(
    caplog: pytest.LogCaptureFixture,
) -> None:
    gone, present = VanishingContainer(gone=True), VanishingContainer(gone=False)
    client = SimpleNamespace(containers=RacingContainers([gone, present]))
    with caplog.at_level(logging.WARNING, logger="harness.runner"):
        remove_run_containers(client, "run-1")
    assert present.removed
    assert caplog.messages == []

"""Tests for CPU shaping: presets, quotas, the init-phase quota switch.

Tests marked ``docker`` run real containers and check the kernel's CFS
counters; the rest test pure logic and the probe against fake cgroup files.
"""

from __future__ import annotations

import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import docker
import pytest
from images import TEST_LABELS, build_test_image

from harness import probe_main
from harness.errors import InvalidInput
from harness.models import IterationRecord, Limits, Phase, PreparedBuild, Scenario
from harness.probe import probe_command
from harness.runner import PlannedIteration, container_options, run_iteration
from harness.shaping import (
    get_profile,
    initial_quota_us,
    plan_quota_switch,
    quota_us,
    resolve_limits,
)

MiB = 2**20
# Burns 100 ms of CPU time, measured with process_time, at import.
BURN_SOURCE = """\
import time

_end = time.process_time() + 0.1
while time.process_time() < _end:
    pass
"""


def make_scenario(*budgets: str) -> Scenario:
    phases = tuple(
        Phase(f"phase {index}", "pass", budget) for index, budget in enumerate(budgets)
    )
    return Scenario("shaping", "", phases, {"init": 10.0, "invoke": 3.0})


# --- presets and limits ------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "memory_mib", "cpus"),
    [
        ("lambda-128", 128, 0.0724),
        ("lambda-512", 512, 0.2894),
        ("lambda-1769", 1769, 1.0),
        ("lambda-3008", 3008, 1.7004),
    ],
)
def test_profile_memory_and_share(name: str, memory_mib: int, cpus: float) -> None:
    profile = get_profile(name)
    assert profile.memory_bytes == memory_mib * MiB
    assert profile.cpus == cpus


def test_unknown_profile_rejected() -> None:
    with pytest.raises(InvalidInput, match="unknown --profile 'lambda-100': choose"):
        get_profile("lambda-100")


def test_defaults_without_profile() -> None:
    limits = resolve_limits()
    assert limits == Limits(cpus=0.1, memory_bytes=None, cpu_period_us=100_000)


def test_profile_sets_memory_and_cpus() -> None:
    limits = resolve_limits(profile="lambda-256")
    assert limits.cpus == 0.1447
    assert limits.memory_bytes == 256 * MiB
    assert limits.profile == "lambda-256"


def test_explicit_values_override_profile() -> None:
    limits = resolve_limits(
        profile="lambda-256", cpus=0.5, memory_bytes=64 * MiB, cpu_period_us=50_000
    )
    assert limits.cpus == 0.5
    assert limits.memory_bytes == 64 * MiB
    assert limits.cpu_period_us == 50_000
    assert quota_us(limits.cpus, limits.cpu_period_us) == 25_000


def test_quota_below_kernel_minimum_rejected() -> None:
    with pytest.raises(InvalidInput) as caught:
        resolve_limits(cpus=0.05, cpu_period_us=10_000)
    assert str(caught.value) == (
        "invalid --cpus 0.05 with --cpu-period 10000: the quota 500 us is below "
        "the kernel's minimum of 1000 us; raise --cpus or --cpu-period"
    )


def test_period_out_of_range_rejected() -> None:
    with pytest.raises(InvalidInput, match="invalid --cpu-period 500: the kernel"):
        resolve_limits(cpu_period_us=500)


def test_container_starts_with_init_share() -> None:
    limits = resolve_limits(cpus=0.1, init_cpus=1.0, cpu_period_us=50_000)
    assert initial_quota_us(limits) == 50_000
    assert initial_quota_us(resolve_limits(cpus=0.1)) == 10_000


# --- where the quota switches ------------------------------------------------


def test_switch_before_first_invoke_phase() -> None:
    limits = resolve_limits(cpus=0.1, init_cpus=1.0)
    switch = plan_quota_switch(make_scenario("init", "init", "invoke"), limits)
    assert switch is not None
    assert switch.phase_index == 2
    assert switch.quota_us == 10_000


def test_no_switch_without_init_cpus() -> None:
    scenario = make_scenario("init", "invoke")
    assert plan_quota_switch(scenario, resolve_limits(cpus=0.1)) is None


def test_no_switch_when_all_phases_init() -> None:
    limits = resolve_limits(cpus=0.1, init_cpus=1.0)
    assert plan_quota_switch(make_scenario("init", "init"), limits) is None


def test_init_after_invoke_rejected() -> None:
    limits = resolve_limits(cpus=0.1, init_cpus=1.0)
    with pytest.raises(InvalidInput) as caught:
        plan_quota_switch(make_scenario("init", "invoke", "init"), limits)
    assert str(caught.value) == (
        "--init-cpus needs the init phases first, but init phase 'phase 2' of "
        "scenario 'shaping' follows a phase of another budget; reorder the phases "
        "or drop --init-cpus"
    )


def test_container_options_carry_switch() -> None:
    limits = resolve_limits(cpus=0.2, init_cpus=1.0, cpu_period_us=200_000)
    scenario = make_scenario("init", "invoke")
    build = build_stub()
    options = container_options(build, scenario, limits, TEST_LABELS)
    assert options["cpu_period"] == 200_000
    assert options["cpu_quota"] == 200_000
    assert options["command"] == probe_command(scenario, (1, 40_000))
    assert options["command"][3] == "--quota-switch=1:40000"


def build_stub() -> PreparedBuild:
    from images import prepared_build

    return prepared_build("stub", "coldstart-test/stub:0")


# --- the probe's side of the switch ------------------------------------------


@pytest.fixture
def cpu_max(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fake cgroup v2 directory whose cpu.max starts at 1 CPU."""
    (tmp_path / "cgroup.controllers").write_text("cpu\n")
    (tmp_path / "cpu.max").write_text("100000 100000\n")
    monkeypatch.setattr(probe_main, "V2_DIR", str(tmp_path))
    return tmp_path / "cpu.max"


def test_probe_waits_for_new_quota(
    cpu_max: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    timer = threading.Timer(0.2, cpu_max.write_text, ["10000 100000\n"])
    timer.start()
    switch = {"phase_index": 1, "quota_us": 10_000}
    probe_main.wait_for_quota(switch, 2)
    timer.join()
    assert 0.15 <= switch["wait_s"] < 2.0
    assert probe_main.QUOTA_MARKER + "10000\n" in capsys.readouterr().err


def test_probe_quota_wait_times_out(
    cpu_max: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(probe_main, "QUOTA_WAIT_TIMEOUT_S", 0.05)
    with pytest.raises(RuntimeError) as caught:
        probe_main.wait_for_quota({"phase_index": 1, "quota_us": 10_000}, 2)
    assert str(caught.value) == (
        "CPU quota still 100000 us, expected 10000 us after 0.05 s (the host did "
        "not update it)"
    )


def test_probe_wait_not_counted_in_phases(
    cpu_max: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A wait that times out is the iteration's error, not phase time."""
    monkeypatch.setattr(probe_main, "QUOTA_WAIT_TIMEOUT_S", 0.05)
    switch = {"phase_index": 1, "quota_us": 10_000}
    phases, error = probe_main.run_phases(
        "", [{"name": "a", "code": "x = 1"}, {"name": "b", "code": "y = 2"}], 2, switch
    )
    assert [phase["name"] for phase in phases] == ["a"]
    assert error is not None
    assert error["phase"] == "CPU quota switch"
    assert error["message"].startswith("RuntimeError: CPU quota still 100000 us")


def test_probe_rejects_malformed_switch() -> None:
    completed = subprocess.run(
        [sys.executable, "-c", probe_main_source(), "--quota-switch=x:1", ""],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert completed.returncode == 1
    assert "usage: probe [--quota-switch=INDEX:QUOTA_US] SETUP" in completed.stderr


def probe_main_source() -> str:
    from harness.probe import probe_source

    return probe_source()


# --- real containers ---------------------------------------------------------


@pytest.fixture(scope="module")
def client() -> docker.DockerClient:
    return docker.from_env()


@pytest.fixture(scope="module")
def burn_build(client: docker.DockerClient) -> PreparedBuild:
    return build_test_image(
        client, "burn", {"burn_init.py": BURN_SOURCE, "burn_invoke.py": BURN_SOURCE}
    )


def run_burns(
    client: docker.DockerClient, build: PreparedBuild, limits: Limits
) -> IterationRecord:
    scenario = Scenario(
        "burn",
        "",
        (
            Phase("init burn", "import burn_init", "init"),
            Phase("invoke burn", "import burn_invoke", "invoke"),
        ),
        {"init": 10.0, "invoke": 3.0},
    )
    run_id = f"test-{uuid.uuid4().hex[:8]}"
    planned = PlannedIteration(round=1, build=build.label, iteration=1)
    record = run_iteration(
        client, build, scenario, limits, planned, run_id, labels=TEST_LABELS
    )
    assert record.ok, record.error
    return record


@pytest.mark.docker
def test_throttling_consistent_with_quota(
    client: docker.DockerClient, burn_build: PreparedBuild
) -> None:
    """At --cpus 0.1 a 100 ms burn is throttled and wall time obeys the quota.

    The quota grants cpus * period of CPU per period. So a phase that uses
    cpu_s needs at least cpu_s / cpus of wall time, less up to one period,
    because it may start while the current period's quota is still unused. For 0.1 s
    of CPU at 0.1 cores that is 0.9 of cpu_s / cpus; the bound of 0.8 leaves
    room for the per-CPU runtime slices (5 ms by default) the kernel hands out
    ahead of use.
    """
    record = run_burns(client, burn_build, resolve_limits(cpus=0.1))
    for phase in record.phases:
        assert 0.1 <= phase.cpu_s < 0.15
        assert phase.wall_s >= 0.8 * phase.cpu_s / 0.1
        assert phase.cgroup is not None
        assert phase.cgroup["nr_throttled"] > 0
        assert phase.cgroup["throttled_s"] > 0
        # The cgroup's usage counts the same CPU time as process_time.
        assert phase.cgroup["usage_s"] == pytest.approx(phase.cpu_s, abs=0.02)
    cgroup = record.telemetry["cgroup"]
    assert cgroup["cpu_quota_us"] == 10_000
    assert cgroup["cpu_period_us"] == 100_000
    assert cgroup["memory_peak_bytes"] > 1 * MiB


@pytest.mark.docker
def test_init_cpus_switch_quota_between_phases(
    client: docker.DockerClient, burn_build: PreparedBuild
) -> None:
    """The same 100 ms burn runs unthrottled at init, throttled at invoke."""
    started = time.monotonic()
    record = run_burns(client, burn_build, resolve_limits(cpus=0.1, init_cpus=1.0))
    init, invoke = record.phases
    assert init.cgroup is not None
    assert invoke.cgroup is not None
    assert init.cgroup["nr_throttled"] == 0
    assert invoke.cgroup["nr_throttled"] > 0
    assert invoke.cgroup["throttled_s"] > 0
    # At 1 CPU the burn waits only for the busy host; at 0.1 it needs >= 0.8 s.
    assert invoke.wall_s >= 0.8
    assert invoke.wall_s > 1.5 * init.wall_s
    switch = record.telemetry["quota_switch"]
    assert switch["phase_index"] == 1
    assert switch["quota_us"] == 10_000
    assert 0 <= switch["wait_s"] < 5
    # The container ends with the invoke quota, as the probe read it last.
    assert record.telemetry["cgroup"]["cpu_quota_us"] == 10_000
    assert time.monotonic() - started < 30

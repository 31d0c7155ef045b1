"""Shape a container's CPU like the target: presets, CFS quotas, phase switches.

A CPU share of ``cpus`` cores is a CFS quota of ``cpus * period`` microseconds
of CPU time in every period. With ``--init-cpus`` the container starts with the
init share. The quota changes to ``--cpus`` between the last "init" phase and
the first other phase of the same container. To do that, the probe writes a
marker line to stderr and waits until its own cgroup shows the new quota. The
host follows the container's stderr and updates the quota on the marker.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

import requests
from docker.errors import DockerException

from harness.errors import InvalidInput
from harness.models import Limits, Scenario
from harness.probe_main import QUOTA_MARKER

if TYPE_CHECKING:
    from docker.models.containers import Container

logger = logging.getLogger(__name__)

# Source: AWS Lambda Developer Guide, "Configuring function memory": "At 1,769
# MB, a function has the equivalent of one vCPU", and CPU is allocated in
# proportion to the configured memory.
LAMBDA_MB_PER_VCPU = 1769
LAMBDA_MEMORY_SIZES_MB = (128, 256, 512, 1024, 1769, 2048, 3008, 10240)
PROFILES: Mapping[str, int] = {
    f"lambda-{size}": size for size in LAMBDA_MEMORY_SIZES_MB
}

DEFAULT_CPUS = 0.1
DEFAULT_CPU_PERIOD_US = 100_000
# The kernel accepts CFS periods from 1 ms to 1 s and quotas of at least 1 ms.
MIN_CPU_PERIOD_US = 1_000
MAX_CPU_PERIOD_US = 1_000_000
MIN_CPU_QUOTA_US = 1_000
INIT_BUDGET = "init"


@dataclass(frozen=True)
class Profile:
    """A preset: a memory limit and the CPU share that goes with it."""

    name: str
    memory_bytes: int
    cpus: float


def get_profile(name: str) -> Profile:
    """Return the preset ``name``; raise InvalidInput for an unknown name.

    Lambda sizes are in MB, applied here as MiB, the unit that ``docker
    --memory 128m`` uses.
    """
    size_mb = PROFILES.get(name)
    if size_mb is None:
        choices = ", ".join(PROFILES)
        raise InvalidInput(f"unknown --profile {name!r}: choose one of {choices}")
    return Profile(name, size_mb * 2**20, round(size_mb / LAMBDA_MB_PER_VCPU, 4))


def resolve_limits(
    *,
    profile: str | None = None,
    cpus: float | None = None,
    memory_bytes: int | None = None,
    cpu_period_us: int | None = None,
    init_cpus: float | None = None,
    timeout_s: float = 120.0,
) -> Limits:
    """Combine a preset with explicit values, which override the preset's."""
    preset = get_profile(profile) if profile else None
    if cpus is None:
        cpus = preset.cpus if preset else DEFAULT_CPUS
    if memory_bytes is None and preset:
        memory_bytes = preset.memory_bytes
    limits = Limits(
        cpus=cpus,
        memory_bytes=memory_bytes,
        timeout_s=timeout_s,
        cpu_period_us=cpu_period_us or DEFAULT_CPU_PERIOD_US,
        init_cpus=init_cpus,
        profile=profile,
    )
    validate_limits(limits)
    return limits


def validate_limits(limits: Limits) -> None:
    period = limits.cpu_period_us
    if not MIN_CPU_PERIOD_US <= period <= MAX_CPU_PERIOD_US:
        raise InvalidInput(
            f"invalid --cpu-period {period}: the kernel accepts 1000 to 1000000 "
            "microseconds (the default is 100000)"
        )
    for option, share in (("--cpus", limits.cpus), ("--init-cpus", limits.init_cpus)):
        if share is not None and quota_us(share, period) < MIN_CPU_QUOTA_US:
            raise InvalidInput(
                f"invalid {option} {share:g} with --cpu-period {period}: the quota "
                f"{quota_us(share, period)} us is below the kernel's minimum of "
                f"1000 us; raise {option} or --cpu-period"
            )


def quota_us(cpus: float, period_us: int) -> int:
    """Return the CFS quota in microseconds for a share of ``cpus`` cores."""
    return round(cpus * period_us)


def initial_quota_us(limits: Limits) -> int:
    """Return the quota a container starts with: the init share when set."""
    share = limits.init_cpus if limits.init_cpus is not None else limits.cpus
    return quota_us(share, limits.cpu_period_us)


@dataclass(frozen=True)
class QuotaSwitch:
    """Change the quota to ``quota_us`` before phase ``phase_index`` (from 0)."""

    phase_index: int
    quota_us: int


def plan_quota_switch(scenario: Scenario, limits: Limits) -> QuotaSwitch | None:
    """Return where the quota changes, or None when it never does.

    The init phases must come first, because the quota changes only once.
    Raises InvalidInput when an init phase follows another phase.
    """
    if limits.init_cpus is None:
        return None
    budgets = [phase.budget for phase in scenario.phases]
    first_other = next(
        (index for index, budget in enumerate(budgets) if budget != INIT_BUDGET), None
    )
    if first_other is None:
        return None
    if INIT_BUDGET in budgets[first_other:]:
        late = scenario.phases[budgets.index(INIT_BUDGET, first_other)].name
        raise InvalidInput(
            f"--init-cpus needs the init phases first, but init phase {late!r} of "
            f"scenario {scenario.name!r} follows a phase of another budget; reorder "
            "the phases or drop --init-cpus"
        )
    return QuotaSwitch(first_other, quota_us(limits.cpus, limits.cpu_period_us))


class QuotaFollower:
    """Follow a running container's stderr and apply the quota on the marker.

    Runs in a daemon thread, because the main thread is blocked in
    ``container.wait``. ``applied`` is set once the quota has been updated.
    ``error`` is the engine error if the update failed. The probe then times
    out waiting for the quota and reports that as the iteration's error.
    """

    def __init__(self, container: Container, switch: QuotaSwitch) -> None:
        self.container = container
        self.switch = switch
        self.applied = threading.Event()
        self.error: Exception | None = None
        self.thread = threading.Thread(target=self.follow, daemon=True)

    def start(self) -> None:
        self.thread.start()

    def join(self, timeout_s: float = 5.0) -> None:
        self.thread.join(timeout_s)

    def follow(self) -> None:
        marker = QUOTA_MARKER.encode()
        seen = b""
        try:
            stream = self.container.logs(
                stdout=False, stderr=True, stream=True, follow=True
            )
            for chunk in stream:
                # Keep only a tail that can hold a marker split across chunks.
                seen = seen[-len(marker) :] + chunk
                if marker in seen:
                    self.apply()
                    stream.close()
                    return
        except (DockerException, requests.RequestException) as error:
            self.error = error
            logger.error(
                "failed to change the CPU quota of container %s: %s",
                self.container.short_id,
                error,
            )

    def apply(self) -> None:
        self.container.update(cpu_quota=self.switch.quota_us)
        self.applied.set()
        logger.debug(
            "container %s: CPU quota set to %d us",
            self.container.short_id,
            self.switch.quota_us,
        )

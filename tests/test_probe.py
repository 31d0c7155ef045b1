"""Tests for the probe: run on the host in a subprocess, and its parser."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from harness import probe_main
from harness.models import Phase, Scenario
from harness.probe import (
    ProbeOutputError,
    find_finished_phases,
    find_last_phase,
    parse_probe_output,
    probe_command,
    probe_source,
)


def run_probe(*phases: tuple[str, str], setup: str = "") -> dict[str, Any]:
    """Run the probe under the host's Python and return its parsed record."""
    arguments = [setup]
    for name, code in phases:
        arguments += [name, code]
    completed = subprocess.run(
        [sys.executable, "-c", probe_source(), *arguments],
        capture_output=True,
        timeout=60,
        check=True,
    )
    return parse_probe_output(completed.stdout)


def phase_named(record: dict[str, Any], name: str) -> dict[str, Any]:
    matches = [phase for phase in record["phases"] if phase["name"] == name]
    assert len(matches) == 1, record["phases"]
    return matches[0]


def burn_cpu_ratio(seconds: float) -> float:
    """Burn ``seconds`` of CPU in this process; return its wall/CPU ratio.

    The ratio is 1.0 on an idle core and grows with other load on the host.
    """
    wall_start = time.perf_counter()
    cpu_start = time.process_time()
    while time.process_time() < cpu_start + seconds:
        pass
    return (time.perf_counter() - wall_start) / (time.process_time() - cpu_start)


def phase_and_host_ratio(code: str, attempts: int = 5) -> tuple[dict[str, Any], float]:
    """Run a one-phase probe beside a reference burn, up to ``attempts`` times.

    Return the phase and the reference wall/CPU ratio of the attempt where the
    phase's own ratio was closest to the reference. Load that changes between
    the two measurements is why one attempt is not enough.
    """
    attempts_seen = []
    for _ in range(attempts):
        phase = phase_named(run_probe(("phase", code)), "phase")
        reference = burn_cpu_ratio(0.2)
        attempts_seen.append((phase, reference))
        if phase["wall_s"] / phase["cpu_s"] < 1.2 * reference:
            break
    return min(
        attempts_seen, key=lambda pair: pair[0]["wall_s"] / pair[0]["cpu_s"] / pair[1]
    )


def test_sleep_phase_wall_exceeds_cpu() -> None:
    record = run_probe(("sleep", "import time\ntime.sleep(0.3)"))
    phase = phase_named(record, "sleep")
    # Load can delay the wake-up, but not by seconds.
    assert 0.29 <= phase["wall_s"] < 3.0
    assert phase["cpu_s"] < 0.05
    assert record["error"] is None


def test_burn_phase_cpu_close_to_wall() -> None:
    code = (
        "import time\n"
        "end = time.process_time() + 0.2\n"
        "while time.process_time() < end: pass"
    )
    phase, host_ratio = phase_and_host_ratio(code)
    assert phase["cpu_s"] >= 0.2
    assert phase["wall_s"] >= phase["cpu_s"] * 0.95
    # On an idle host the limit is 1.5 x CPU time; other load on the host
    # stretches the probe and the reference burn alike.
    assert phase["wall_s"] < phase["cpu_s"] * 1.5 * max(host_ratio, 1.0)


def test_phases_run_in_order_with_shared_namespace() -> None:
    record = run_probe(
        ("first", "value = base + 1"),
        ("second", "assert value == 42, value"),
        setup="base = 41",
    )
    assert [phase["name"] for phase in record["phases"]] == ["first", "second"]
    assert record["error"] is None


def test_setup_time_not_counted() -> None:
    record = run_probe(("noop", "pass"), setup="import time\ntime.sleep(1.0)")
    # Counting the setup would add a whole second; load adds far less.
    assert phase_named(record, "noop")["wall_s"] < 0.5


def test_phase_modules_lists_new_imports() -> None:
    record = run_probe(("colorsys", "import colorsys"), ("again", "import colorsys"))
    assert phase_named(record, "colorsys")["modules"] == ["colorsys"]
    assert phase_named(record, "again")["modules"] == []


def test_probe_preloads_no_extra_modules() -> None:
    """json and platform are what the probe itself needs after the phases."""
    record = run_probe(("import", "import json, platform, traceback, resource"))
    modules = phase_named(record, "import")["modules"]
    for name in ("json", "platform", "traceback", "resource"):
        assert name in modules


def test_raising_phase_stops_the_run() -> None:
    record = run_probe(
        ("ok", "pass"),
        ("import x", "import coldstart_no_such_module"),
        ("never", "pass"),
    )
    assert [phase["name"] for phase in record["phases"]] == ["ok"]
    error = record["error"]
    assert error["phase"] == "import x"
    assert error["message"] == (
        "ModuleNotFoundError: No module named 'coldstart_no_such_module'"
    )
    assert error["frame"] == 'File "<phase import x>", line 1, in <module>'


def test_error_message_one_line_and_truncated() -> None:
    code = "raise ValueError('first line\\nsecond ' + 'x' * 1000)"
    record = run_probe(("raise", code))
    message = record["error"]["message"]
    assert message.startswith("ValueError: first line second xxx")
    assert "\n" not in message
    assert len(message) == probe_main.MAX_MESSAGE_CHARS


def test_error_names_module_of_custom_exception() -> None:
    code = "import json\njson.loads('{')"
    record = run_probe(("parse", code))
    assert record["error"]["message"].startswith("json.decoder.JSONDecodeError: ")
    assert "decoder.py" in record["error"]["frame"]


def test_setup_error_recorded() -> None:
    record = run_probe(("never", "pass"), setup="1 / 0")
    assert record["phases"] == []
    assert record["error"]["phase"] == "setup"
    assert record["error"]["message"] == "ZeroDivisionError: division by zero"


def test_sys_exit_in_phase_still_yields_record() -> None:
    record = run_probe(("exit", "import sys\nsys.exit(3)"))
    assert record["error"]["message"] == "SystemExit: 3"


def test_phase_printing_to_stdout_still_parses() -> None:
    code = "print('hello', end='')\nimport sys\nsys.stdout.write('\\x1ecoldstart')"
    record = run_probe(("print", code), ("after", "pass"))
    assert [phase["name"] for phase in record["phases"]] == ["print", "after"]


def test_phase_replacing_stdout_still_parses() -> None:
    code = "import io, sys\nsys.stdout.close()\nsys.stdout = io.StringIO()"
    record = run_probe(("close stdout", code))
    assert record["error"] is None


def test_record_fields() -> None:
    record = run_probe(("noop", "pass"))
    assert record["probe"] == 1
    assert record["python_version"] == ".".join(map(str, sys.version_info[:3]))
    assert record["implementation"] == "CPython"
    assert record["executable"] == sys.executable
    assert record["peak_rss_kb"] > 1000
    assert set(record["cgroup"]) == {
        "version",
        "cpu_quota_us",
        "cpu_period_us",
        "memory_peak_bytes",
        "totals",
    }
    assert 0 <= record["interpreter_start_s"] < 5


def test_phase_announced_on_stderr() -> None:
    completed = subprocess.run(
        [sys.executable, "-c", probe_source(), "", "one", "pass", "two", "pass"],
        capture_output=True,
        timeout=60,
        check=True,
    )
    assert find_last_phase(completed.stderr) == "two"
    assert find_last_phase(b"some SDK warning\n") is None


def test_finished_phases_reported_on_stderr() -> None:
    completed = subprocess.run(
        [
            sys.executable,
            "-c",
            probe_source(),
            "",
            "one",
            "import json",
            "two  x",
            "pass",
        ],
        capture_output=True,
        timeout=60,
        check=True,
    )
    record = parse_probe_output(completed.stdout)
    assert find_finished_phases(completed.stderr) == record["phases"]
    assert [phase["name"] for phase in record["phases"]] == ["one", "two  x"]
    assert "json" in record["phases"][0]["modules"]


def test_finished_phases_stop_at_cut_line() -> None:
    marker = b"\n\x1ecoldstart-phase-done "
    stderr = (
        marker + b"wall_s=0.5 cpu_s=0.25 cgroup.nr_periods=3 "
        b"cgroup.usage_s=none modules=a,b name=first phase\n"
        + b"SDK warning\n"
        + marker
        + b"wall_s=0.1 cpu_s=0.1 modules= name=second"
    )
    assert find_finished_phases(stderr) == [
        {
            "name": "first phase",
            "wall_s": 0.5,
            "cpu_s": 0.25,
            "modules": ["a", "b"],
            "cgroup": {"nr_periods": 3, "usage_s": None},
        }
    ]


def test_wrong_argument_count_exits_with_usage() -> None:
    completed = subprocess.run(
        [sys.executable, "-c", probe_source(), "", "name-without-code"],
        capture_output=True,
        timeout=60,
    )
    assert completed.returncode == 1
    assert b"usage: probe SETUP NAME CODE" in completed.stderr


def test_probe_command_passes_phases_as_arguments() -> None:
    scenario = Scenario(
        name="s",
        description="",
        phases=(Phase("import x", "import x", "init"), Phase("call", "x()", "invoke")),
        budgets={"init": 10.0, "invoke": 3.0},
        setup="import os",
    )
    command = probe_command(scenario)
    assert command[:2] == ["python3", "-c"]
    assert command[2] == probe_source()
    assert command[3:] == ["import os", "import x", "import x", "call", "x()"]


class TestCgroupV2:
    """cgroup v2 parsing against fake files, since this engine runs v1."""

    @pytest.fixture
    def cgroup_dir(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
        (tmp_path / "cgroup.controllers").write_text("cpu memory\n")
        (tmp_path / "cpu.stat").write_text(
            "usage_usec 250000\nuser_usec 200000\nsystem_usec 50000\n"
            "nr_periods 30\nnr_throttled 12\nthrottled_usec 900000\n"
        )
        (tmp_path / "cpu.max").write_text("10000 100000\n")
        (tmp_path / "memory.peak").write_text("73400320\n")
        monkeypatch.setattr(probe_main, "V2_DIR", str(tmp_path))
        return tmp_path

    def test_counters_normalised_to_seconds(self, cgroup_dir: Path) -> None:
        assert probe_main.cgroup_version() == 2
        assert probe_main.read_cpu_counters(2) == {
            "nr_periods": 30,
            "nr_throttled": 12,
            "throttled_s": 0.9,
            "usage_s": 0.25,
        }

    def test_quota_period_and_memory_peak(self, cgroup_dir: Path) -> None:
        assert probe_main.read_container_cgroup(2)["cpu_quota_us"] == 10000
        assert probe_main.read_container_cgroup(2)["cpu_period_us"] == 100000
        assert probe_main.read_container_cgroup(2)["memory_peak_bytes"] == 73400320

    def test_unlimited_quota_is_null(self, cgroup_dir: Path) -> None:
        (cgroup_dir / "cpu.max").write_text("max 100000\n")
        assert probe_main.read_cpu_limit(2) == (None, 100000)

    def test_missing_files_are_null(self, cgroup_dir: Path) -> None:
        for name in ("cpu.stat", "cpu.max", "memory.peak"):
            (cgroup_dir / name).unlink()
        assert probe_main.read_container_cgroup(2) == {
            "version": 2,
            "cpu_quota_us": None,
            "cpu_period_us": None,
            "memory_peak_bytes": None,
            "totals": None,
        }


class TestCgroupV1:
    @pytest.fixture
    def cgroup_root(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
        cpu = tmp_path / "cpu"
        cpuacct = tmp_path / "cpuacct"
        memory = tmp_path / "memory"
        for directory in (cpu, cpuacct, memory):
            directory.mkdir()
        (cpu / "cpu.stat").write_text(
            "nr_periods 3\nnr_throttled 2\nthrottled_time 125117560\n"
        )
        (cpu / "cpu.cfs_quota_us").write_text("-1\n")
        (cpu / "cpu.cfs_period_us").write_text("100000\n")
        (cpuacct / "cpuacct.usage").write_text("36931431\n")
        (memory / "memory.max_usage_in_bytes").write_text("11321344\n")
        monkeypatch.setattr(probe_main, "V2_DIR", str(tmp_path / "absent"))
        monkeypatch.setattr(probe_main, "V1_CPU_DIRS", (str(cpu),))
        monkeypatch.setattr(probe_main, "V1_CPUACCT_DIRS", (str(cpuacct),))
        monkeypatch.setattr(probe_main, "V1_MEMORY_DIR", str(memory))
        return tmp_path

    def test_split_controllers_read(self, cgroup_root: Path) -> None:
        assert probe_main.cgroup_version() == 1
        assert probe_main.read_cpu_counters(1) == {
            "nr_periods": 3,
            "nr_throttled": 2,
            "throttled_s": 0.12511756,
            "usage_s": 0.036931431,
        }
        cgroup = probe_main.read_container_cgroup(1)
        assert cgroup["cpu_quota_us"] is None
        assert cgroup["cpu_period_us"] == 100000
        assert cgroup["memory_peak_bytes"] == 11321344

    def test_missing_usage_is_null(self, cgroup_root: Path) -> None:
        (cgroup_root / "cpuacct" / "cpuacct.usage").unlink()
        counters = probe_main.read_cpu_counters(1)
        assert counters is not None
        assert counters["usage_s"] is None
        assert counters["nr_throttled"] == 2

    def test_delta_with_null_key(self) -> None:
        before = {"nr_periods": 3, "usage_s": None}
        after = {"nr_periods": 10, "usage_s": 0.5}
        assert probe_main.subtract_counters(before, after) == {
            "nr_periods": 7,
            "usage_s": None,
        }
        assert probe_main.subtract_counters(None, after) is None


def test_no_cgroup_found(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(probe_main, "V2_DIR", str(tmp_path))
    monkeypatch.setattr(probe_main, "V1_CPU_DIRS", (str(tmp_path),))
    assert probe_main.cgroup_version() is None
    assert probe_main.read_cpu_counters(None) is None
    assert probe_main.read_container_cgroup(None)["totals"] is None


MARKER = probe_main.RECORD_MARKER.encode()


def encode_record(**fields: Any) -> bytes:
    return MARKER + json.dumps({"probe": 1, **fields}).encode() + b"\n"


class TestParseProbeOutput:
    def test_record_after_sdk_output(self) -> None:
        stdout = b"banner from the SDK\nmore\n" + encode_record(phases=[])
        assert parse_probe_output(stdout) == {"probe": 1, "phases": []}

    def test_record_at_start_of_output(self) -> None:
        assert parse_probe_output(encode_record(phases=[]))["phases"] == []

    def test_last_record_wins(self) -> None:
        stdout = encode_record(fake=True) + encode_record(fake=False)
        assert parse_probe_output(stdout)["fake"] is False

    def test_missing_marker(self) -> None:
        with pytest.raises(ProbeOutputError) as caught:
            parse_probe_output(b"Segmentation fault\n")
        assert str(caught.value) == (
            "no probe record in the output; output ends with: 'Segmentation fault'"
        )

    def test_empty_output(self) -> None:
        with pytest.raises(ProbeOutputError) as caught:
            parse_probe_output(b"")
        assert caught.value.problem == "no probe record in the output"
        assert caught.value.excerpt == ""

    def test_truncated_json(self) -> None:
        stdout = encode_record(phases=[{"name": "import x"}])[:-20]
        with pytest.raises(ProbeOutputError) as caught:
            parse_probe_output(stdout)
        assert caught.value.problem.startswith("probe record is not valid JSON (")

    def test_garbage_after_marker(self) -> None:
        with pytest.raises(ProbeOutputError) as caught:
            parse_probe_output(MARKER + b"\xff\xfe not json\n")
        assert caught.value.problem.startswith("probe record is not valid JSON")

    def test_json_that_is_not_a_record(self) -> None:
        with pytest.raises(ProbeOutputError) as caught:
            parse_probe_output(MARKER + b'{"probe": 2}\n')
        assert caught.value.problem == "probe record is not a version 1 record"

    def test_excerpt_is_tail_of_long_output(self) -> None:
        with pytest.raises(ProbeOutputError) as caught:
            parse_probe_output(b"a" * 1000 + b"END")
        assert caught.value.excerpt == "..." + "a" * 297 + "END"

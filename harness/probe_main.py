"""Probe that runs a scenario's phases inside a measurement container.

The host runs it as ``python3 -c SOURCE SETUP NAME CODE [NAME CODE ...]``, so
nothing of it is baked into images. It uses only the standard library and stays
compatible with Python 3.8, because it runs under whatever Python the base image
has.

Until the last phase ends, the probe uses only modules that the interpreter has
loaded at start-up (os, sys, time). Any other import, json included (it imports
re), would be missing from the phases' module lists and make them look cheaper.
That is why the configuration comes as plain arguments and not as JSON.

Output is one line on stdout, ``RECORD_MARKER`` followed by the JSON record,
written last so that anything the code under test prints comes before it. Before
each phase starts, a ``PHASE_MARKER`` line naming it goes to stderr, so the host
can tell which phase was running when a container had to be killed. After each
phase ends, a ``PHASE_DONE_MARKER`` line on stderr carries its timings (see
report_finished_phase), so the host keeps the finished phases of a container
that is killed later.

With ``--quota-switch=INDEX:QUOTA`` before SETUP, the probe writes a
``QUOTA_MARKER`` line to stderr before phase INDEX (counted from 0) and waits,
untimed, until its cgroup's CPU quota reads QUOTA microseconds. The host sets
the quota when it reads the marker.
"""

import os
import sys
import time

RECORD_MARKER = "\x1ecoldstart-probe-v1 "
PHASE_MARKER = "\x1ecoldstart-phase "
PHASE_DONE_MARKER = "\x1ecoldstart-phase-done "
QUOTA_MARKER = "\x1ecoldstart-quota "
# Optional first argument: change the CPU quota before a phase.
QUOTA_OPTION = "--quota-switch="
QUOTA_WAIT_TIMEOUT_S = 30.0
QUOTA_POLL_S = 0.002
MAX_MESSAGE_CHARS = 500

# cgroup v1 mounts each controller separately. Docker mounts the cpu and cpuacct
# controllers either combined or split inside the container, as the host has them.
V1_CPU_DIRS = ("/sys/fs/cgroup/cpu,cpuacct", "/sys/fs/cgroup/cpu")
V1_CPUACCT_DIRS = ("/sys/fs/cgroup/cpu,cpuacct", "/sys/fs/cgroup/cpuacct")
V1_MEMORY_DIR = "/sys/fs/cgroup/memory"
V2_DIR = "/sys/fs/cgroup"


def read_text(path):
    """Return the stripped contents of a file, or None if it cannot be read."""
    try:
        with open(path) as handle:
            return handle.read().strip()
    except (OSError, ValueError):
        return None


def read_int(path):
    text = read_text(path)
    try:
        return int(text) if text is not None else None
    except ValueError:
        return None


def read_key_values(path):
    """Parse a file of ``key value`` lines, such as cpu.stat, into a dict of ints."""
    text = read_text(path)
    if text is None:
        return None
    values = {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[1].lstrip("-").isdigit():
            values[parts[0]] = int(parts[1])
    return values


def first_existing(directories, name):
    for directory in directories:
        path = os.path.join(directory, name)
        if os.path.exists(path):
            return path
    return None


def cgroup_version():
    """Return 2 for the unified hierarchy, 1 for v1, None when neither is seen."""
    if os.path.exists(os.path.join(V2_DIR, "cgroup.controllers")):
        return 2
    if first_existing(V1_CPU_DIRS, "cpu.stat"):
        return 1
    return None


def read_cpu_counters(version):
    """Return the cgroup's CFS counters in seconds, or None when unreadable.

    Keys: nr_periods, nr_throttled, throttled_s, usage_s. A key whose file is
    missing is None.
    """
    if version == 2:
        stat = read_key_values(os.path.join(V2_DIR, "cpu.stat"))
        if stat is None:
            return None
        return {
            "nr_periods": stat.get("nr_periods"),
            "nr_throttled": stat.get("nr_throttled"),
            "throttled_s": microseconds_to_s(stat.get("throttled_usec")),
            "usage_s": microseconds_to_s(stat.get("usage_usec")),
        }
    if version == 1:
        stat_path = first_existing(V1_CPU_DIRS, "cpu.stat")
        stat = read_key_values(stat_path) if stat_path else None
        if stat is None:
            return None
        usage_path = first_existing(V1_CPUACCT_DIRS, "cpuacct.usage")
        usage_ns = read_int(usage_path) if usage_path else None
        return {
            "nr_periods": stat.get("nr_periods"),
            "nr_throttled": stat.get("nr_throttled"),
            "throttled_s": nanoseconds_to_s(stat.get("throttled_time")),
            "usage_s": nanoseconds_to_s(usage_ns),
        }
    return None


def microseconds_to_s(value):
    return value / 1e6 if value is not None else None


def nanoseconds_to_s(value):
    return value / 1e9 if value is not None else None


def subtract_counters(before, after):
    if before is None or after is None:
        return None
    delta = {}
    for key, value in after.items():
        start = before.get(key)
        delta[key] = value - start if value is not None and start is not None else None
    return delta


def read_cpu_limit(version):
    """Return (quota_us, period_us); quota is None when the CPU is unlimited."""
    if version == 2:
        text = read_text(os.path.join(V2_DIR, "cpu.max"))
        parts = text.split() if text else []
        if len(parts) != 2:
            return None, None
        quota = None if parts[0] == "max" else int(parts[0])
        return quota, int(parts[1])
    if version == 1:
        quota_path = first_existing(V1_CPU_DIRS, "cpu.cfs_quota_us")
        period_path = first_existing(V1_CPU_DIRS, "cpu.cfs_period_us")
        quota = read_int(quota_path) if quota_path else None
        period = read_int(period_path) if period_path else None
        # cgroup v1 writes -1 for an unlimited quota.
        return (quota if quota is not None and quota >= 0 else None), period
    return None, None


def read_memory_peak(version):
    if version == 2:
        return read_int(os.path.join(V2_DIR, "memory.peak"))
    if version == 1:
        return read_int(os.path.join(V1_MEMORY_DIR, "memory.max_usage_in_bytes"))
    return None


def read_container_cgroup(version):
    """Return the container-wide CPU limit, CPU counters and memory peak."""
    quota, period = read_cpu_limit(version)
    return {
        "version": version,
        "cpu_quota_us": quota,
        "cpu_period_us": period,
        "memory_peak_bytes": read_memory_peak(version),
        "totals": read_cpu_counters(version),
    }


def measure_interpreter_start():
    """Return seconds from process start to now, or None off Linux.

    /proc/self/stat field 22 is the start time in clock ticks since boot, so
    the resolution is one tick (10 ms at the usual 100 Hz).
    NOTE: as a container's first process, the process was created by the
    container runtime before it executed python3, so this includes runtime
    set-up: 0.15-0.35 s at --cpus 1 on a loaded two-CPU test host.
    """
    stat = read_text("/proc/self/stat")
    uptime = read_text("/proc/uptime")
    if stat is None or uptime is None:
        return None
    try:
        # The command name in field 2 may contain spaces, so split after it.
        fields = stat.rsplit(")", 1)[1].split()
        start_ticks = int(fields[19])
        ticks_per_s = os.sysconf("SC_CLK_TCK")
        return max(0.0, float(uptime.split()[0]) - start_ticks / ticks_per_s)
    except (IndexError, ValueError, OSError):
        return None


def describe_exception(error):
    """Return ("Type: message" on one line, the last traceback frame)."""
    import traceback

    kind = type(error)
    name = kind.__qualname__
    if kind.__module__ not in ("builtins", "__main__"):
        name = kind.__module__ + "." + name
    text = str(error)
    message = name + ": " + text if text else name
    message = " ".join(message.split())[:MAX_MESSAGE_CHARS]
    frames = traceback.extract_tb(error.__traceback__)
    frame = None
    if frames:
        last = frames[-1]
        frame = f'File "{last.filename}", line {last.lineno}, in {last.name}'
    return message, frame


def announce_phase(name):
    sys.stderr.write("\n" + PHASE_MARKER + " ".join(name.split()) + "\n")
    sys.stderr.flush()


def format_number(value):
    return "none" if value is None else repr(value)


def report_finished_phase(result):
    """Write a finished phase's timings to stderr as one marked line.

    The line is ``wall_s=W cpu_s=C [cgroup.KEY=V ...] modules=A,B name=NAME``
    with floats as repr() (exact round trip) and None as ``none``. The name
    comes last because it may contain spaces. Formatted by hand because json
    would import re, which would then be missing from later phases' modules.
    """
    fields = ["wall_s=" + repr(result["wall_s"]), "cpu_s=" + repr(result["cpu_s"])]
    cgroup = result["cgroup"]
    if cgroup is not None:
        for key in sorted(cgroup):
            fields.append("cgroup." + key + "=" + format_number(cgroup[key]))
    fields.append("modules=" + ",".join(result["modules"]))
    fields.append("name=" + " ".join(result["name"].splitlines()))
    try:
        sys.stderr.write("\n" + PHASE_DONE_MARKER + " ".join(fields) + "\n")
        sys.stderr.flush()
    except (OSError, ValueError, AttributeError):
        # The code under test closed or replaced stderr: the record on stdout
        # still carries the phase.
        pass


def run_phase(phase, namespace, version):
    """Execute one phase and return its timings; exceptions propagate."""
    code = compile(phase["code"], "<phase " + phase["name"] + ">", "exec")
    announce_phase(phase["name"])
    counters_before = read_cpu_counters(version)
    modules_before = set(sys.modules)
    wall_start = time.perf_counter()
    cpu_start = time.process_time()
    exec(code, namespace)
    cpu_s = time.process_time() - cpu_start
    wall_s = time.perf_counter() - wall_start
    counters_after = read_cpu_counters(version)
    return {
        "name": phase["name"],
        "wall_s": wall_s,
        "cpu_s": cpu_s,
        "modules": sorted(set(sys.modules) - modules_before),
        "cgroup": subtract_counters(counters_before, counters_after),
    }


def parse_arguments(arguments):
    """Return (setup, [{"name", "code"}]) from SETUP NAME CODE [NAME CODE ...]."""
    if not arguments or len(arguments) % 2 != 1:
        raise SystemExit("usage: probe SETUP NAME CODE [NAME CODE ...]")
    pairs = arguments[1:]
    phases = [{"name": pairs[i], "code": pairs[i + 1]} for i in range(0, len(pairs), 2)]
    return arguments[0], phases


def split_quota_option(arguments):
    """Return ({"phase_index", "quota_us"} or None, the remaining arguments)."""
    if not arguments or not arguments[0].startswith(QUOTA_OPTION):
        return None, arguments
    index, _, quota = arguments[0][len(QUOTA_OPTION) :].partition(":")
    if not (index.isdigit() and quota.isdigit()):
        raise SystemExit("usage: probe [--quota-switch=INDEX:QUOTA_US] SETUP ...")
    return {"phase_index": int(index), "quota_us": int(quota)}, arguments[1:]


def wait_for_quota(switch, version):
    """Ask the host for the new quota and wait until the cgroup shows it.

    Stores the wait in ``switch["wait_s"]``. Raises RuntimeError on timeout.
    """
    sys.stderr.write("\n" + QUOTA_MARKER + str(switch["quota_us"]) + "\n")
    sys.stderr.flush()
    start = time.monotonic()
    quota = read_cpu_limit(version)[0]
    while quota != switch["quota_us"]:
        if time.monotonic() - start > QUOTA_WAIT_TIMEOUT_S:
            raise RuntimeError(
                f"CPU quota still {quota} us, expected {switch['quota_us']} us "
                f"after {QUOTA_WAIT_TIMEOUT_S:g} s (the host did not update it)"
            )
        time.sleep(QUOTA_POLL_S)
        quota = read_cpu_limit(version)[0]
    switch["wait_s"] = time.monotonic() - start


def run_phases(setup, phase_configs, version, switch=None):
    """Run setup, then each phase in order; stop at the first that raises.

    Returns the completed phases and the error, or None. BaseException is
    caught so that code calling sys.exit() still yields a record. ``switch``
    from split_quota_option changes the quota between two phases.
    """
    namespace = {"__name__": "__coldstart__"}
    phases = []
    current = "setup"
    try:
        if setup:
            announce_phase(current)
            exec(compile(setup, "<setup>", "exec"), namespace)
        for index, phase in enumerate(phase_configs):
            if switch is not None and index == switch["phase_index"]:
                current = "CPU quota switch"
                wait_for_quota(switch, version)
            current = phase["name"]
            phases.append(run_phase(phase, namespace, version))
            report_finished_phase(phases[-1])
    except BaseException as error:
        message, frame = describe_exception(error)
        return phases, {"phase": current, "message": message, "frame": frame}
    return phases, None


def emit_record(record):
    """Write the record as the last line on stdout, after the code's output."""
    import contextlib
    import json

    line = "\n" + RECORD_MARKER + json.dumps(record, sort_keys=True) + "\n"
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError, AttributeError):
            stream.flush()
    # Write to fd 1 directly because the code under test may have replaced or
    # closed sys.stdout.
    data = line.encode("utf-8")
    while data:
        written = os.write(1, data)
        data = data[written:]


def main(argv):
    interpreter_start_s = measure_interpreter_start()
    switch, arguments = split_quota_option(argv[1:])
    setup, phase_configs = parse_arguments(arguments)
    version = cgroup_version()
    phases, error = run_phases(setup, phase_configs, version, switch)
    # Imported only now: see the module docstring.
    import platform
    import resource

    record = {
        "probe": 1,
        "python_version": platform.python_version(),
        "implementation": platform.python_implementation(),
        "executable": sys.executable,
        "phases": phases,
        "error": error,
        "peak_rss_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
        "cgroup": read_container_cgroup(version),
        "interpreter_start_s": interpreter_start_s,
        "quota_switch": switch,
    }
    emit_record(record)


if __name__ == "__main__":
    main(sys.argv)

"""Faults on the real engine: interruption and resume, an engine that goes
away, a results directory that fills up, and resume's reproducibility checks.

The end-to-end tests run ``coldstart run`` as a subprocess on a tiny wheel
built here, so preparing a build needs neither PyPI nor a compiler.
"""

from __future__ import annotations

import hashlib
import json
import os
import resource
import selectors
import signal
import socket
import socketserver
import subprocess
import sys
import threading
import time
import zipfile
from base64 import urlsafe_b64encode
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import docker
import pytest
from images import prepared_build

from harness.environment import Environment
from harness.errors import InvalidInput
from harness.models import BuildSpec, PreparedBuild, SpecKind
from harness.resume import (
    check_base_image,
    check_build_image,
    check_git_ref,
    remaining_plan,
)
from harness.runner import plan_iterations

ENGINE_SOCKET = "/var/run/docker.sock"
WHEEL_NAME = "tinysdk-1.0-py3-none-any.whl"
# Sleeps so that each container lasts long enough to be interrupted.
TINY_SDK = "import time\ntime.sleep(0.5)\nVERSION = '1.0'\n"
SCENARIO = """\
name = "tiny"
[budgets]
init = 10.0
[[phases]]
name = "import tinysdk"
budget = "init"
code = "import tinysdk"
"""


def build_wheel(directory: Path) -> Path:
    """Write a pure-Python wheel of ``tinysdk`` with fixed timestamps."""
    files = {
        "tinysdk.py": TINY_SDK,
        "tinysdk-1.0.dist-info/METADATA": (
            "Metadata-Version: 2.1\nName: tinysdk\nVersion: 1.0\n"
        ),
        "tinysdk-1.0.dist-info/WHEEL": (
            "Wheel-Version: 1.0\nGenerator: tests\nRoot-Is-Purelib: true\n"
            "Tag: py3-none-any\n"
        ),
    }
    record_lines = []
    for name, text in files.items():
        digest = urlsafe_b64encode(hashlib.sha256(text.encode()).digest())
        record_lines.append(f"{name},sha256={digest.rstrip(b'=').decode()},{len(text)}")
    record_lines.append("tinysdk-1.0.dist-info/RECORD,,")
    files["tinysdk-1.0.dist-info/RECORD"] = "\n".join(record_lines) + "\n"
    path = directory / WHEEL_NAME
    with zipfile.ZipFile(path, "w") as archive:
        for name, text in files.items():
            archive.writestr(zipfile.ZipInfo(name, (2024, 1, 1, 0, 0, 0)), text)
    return path


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory, cache_dir: Path) -> Path:
    directory = tmp_path_factory.mktemp("resume")
    build_wheel(directory)
    (directory / "tiny.toml").write_text(SCENARIO)
    return directory


def coldstart_env(cache_dir: Path, **extra: str) -> dict[str, str]:
    return {**os.environ, "COLDSTART_CACHE": str(cache_dir), **extra}


def start_run(
    workspace: Path, cache_dir: Path, iterations: int, **extra: Any
) -> subprocess.Popen[str]:
    wheel = str(workspace / WHEEL_NAME)
    command = [sys.executable, "-m", "harness", "run", "--build", f"a={wheel}"]
    command += ["--build", f"b={wheel}", "--scenario", str(workspace / "tiny.toml")]
    command += ["-n", str(iterations), "--cpus", "1", "--seed", "5", "--quiet"]
    command += ["--results", str(workspace / "results")]
    return subprocess.Popen(
        command,
        cwd=workspace,
        env=coldstart_env(cache_dir, **extra.pop("env", {})),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        **extra,
    )


def coldstart(
    cache_dir: Path, *arguments: str, **extra: str
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "harness", *arguments],
        env=coldstart_env(cache_dir, **extra),
        capture_output=True,
        text=True,
        timeout=120,
    )


def newest_run(workspace: Path) -> Path:
    runs = [path for path in (workspace / "results").iterdir() if path.is_dir()]
    return sorted(runs, key=lambda p: p.stat().st_mtime)[-1]


def wait_for_records(workspace: Path, before: set[Path], count: int) -> Path:
    """Wait until a new run directory has ``count`` records; return it."""
    deadline = time.monotonic() + 150
    while time.monotonic() < deadline:
        runs = set((workspace / "results").glob("*")) - before
        for run in runs:
            raw = run / "raw.jsonl"
            if raw.exists() and raw.read_text().count("\n") >= count:
                return run
        time.sleep(0.2)
    raise AssertionError(f"no run reached {count} records in 150 s")


def read_lines(run: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (run / "raw.jsonl").read_text().splitlines()]


def read_manifest(run: Path) -> dict[str, Any]:
    return json.loads((run / "manifest.json").read_text())


def run_containers(client: docker.DockerClient, run: Path) -> list[Any]:
    label = f"coldstart.run={run.name}"
    return client.containers.list(all=True, filters={"label": label})


def existing_runs(workspace: Path) -> set[Path]:
    (workspace / "results").mkdir(exist_ok=True)
    return {path for path in (workspace / "results").iterdir() if path.is_dir()}


@pytest.mark.docker
def test_sigint_then_resume_completes_run(
    workspace: Path, cache_dir: Path, docker_client: docker.DockerClient
) -> None:
    before = existing_runs(workspace)
    process = start_run(workspace, cache_dir, iterations=3)
    run = wait_for_records(workspace, before, 2)
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 130, stderr
    assert f"error: interrupted by signal 2; the run so far is in {run}" in stderr
    assert run_containers(docker_client, run) == []
    manifest = read_manifest(run)
    assert manifest["status"] == "interrupted"
    measured = len(read_lines(run))
    assert 2 <= measured < 6

    scenario = workspace / "tiny.toml"
    scenario.write_text(SCENARIO.replace("10.0", "11.0"))
    changed = coldstart(cache_dir, "run", "--resume", str(run))
    scenario.write_text(SCENARIO)
    assert changed.returncode == 2
    assert changed.stderr.strip() == (
        f"error: scenario file {scenario} changed since the run started: restore "
        "it, or start a new run with `coldstart run`"
    )

    mixed = coldstart(cache_dir, "run", "--resume", str(run), "--cpus", "2", "-n", "9")
    assert mixed.returncode == 2
    assert mixed.stderr.strip() == (
        "error: --iterations, --cpus cannot be combined with --resume: a resumed "
        "run uses the builds and settings recorded in its manifest"
    )

    resumed = coldstart(cache_dir, "run", "--resume", str(run), "--quiet")
    assert resumed.returncode == 0, resumed.stderr
    records = read_lines(run)
    pairs = [(record["build"], record["iteration"]) for record in records]
    planned = plan_iterations(["a", "b"], 3, "shuffle", seed=5)
    assert len(records) == 6
    assert sorted(pairs) == sorted((item.build, item.iteration) for item in planned)
    assert all(record["status"] == "ok" for record in records)
    manifest = read_manifest(run)
    assert manifest["status"] == "complete"
    assert len(manifest["resumed_at"]) == 1
    # The interrupted run never reached its import breakdown; the resume runs it.
    assert manifest["plan"]["breakdown"] == 3
    breakdown = json.loads((run / "breakdown.json").read_text())
    assert breakdown["iterations"] == 3
    assert "## Import breakdown" in (run / "report.md").read_text()
    assert run_containers(docker_client, run) == []

    again = coldstart(cache_dir, "run", "--resume", str(run))
    assert again.returncode == 2
    assert "has status 'complete': only an interrupted run" in again.stderr


class ForwardingHandler(socketserver.BaseRequestHandler):
    """Forward one client connection to the engine's socket, both ways."""

    server: EngineProxy

    def handle(self) -> None:
        upstream = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        upstream.connect(ENGINE_SOCKET)
        self.server.connections += [self.request, upstream]
        selector = selectors.DefaultSelector()
        selector.register(self.request, selectors.EVENT_READ, upstream)
        selector.register(upstream, selectors.EVENT_READ, self.request)
        try:
            while not self.server.stopped:
                for key, _ in selector.select(timeout=0.2):
                    data = key.fileobj.recv(65536)  # type: ignore[union-attr]
                    if not data:
                        return
                    key.data.sendall(data)
        except OSError:
            return
        finally:
            upstream.close()


class EngineProxy(socketserver.ThreadingUnixStreamServer):
    """A unix-socket proxy to the engine that a test can take away."""

    daemon_threads = True

    def __init__(self, path: Path) -> None:
        super().__init__(str(path), ForwardingHandler)
        self.connections: list[socket.socket] = []
        self.stopped = False

    def stop(self) -> None:
        self.stopped = True
        self.shutdown()
        self.server_close()
        for connection in self.connections:
            connection.close()
        Path(self.server_address).unlink(missing_ok=True)  # type: ignore[arg-type]


@pytest.fixture
def engine_proxy(tmp_path: Path) -> Iterator[EngineProxy]:
    proxy = EngineProxy(tmp_path / "engine.sock")
    thread = threading.Thread(target=proxy.serve_forever, daemon=True)
    thread.start()
    yield proxy
    if not proxy.stopped:
        proxy.stop()


@pytest.mark.docker
def test_engine_gone_stops_run_exit_3(
    workspace: Path,
    cache_dir: Path,
    docker_client: docker.DockerClient,
    engine_proxy: EngineProxy,
) -> None:
    before = existing_runs(workspace)
    docker_host = f"unix://{engine_proxy.server_address}"
    process = start_run(
        workspace, cache_dir, iterations=4, env={"DOCKER_HOST": docker_host}
    )
    run = wait_for_records(workspace, before, 2)
    engine_proxy.stop()
    _, stderr = process.communicate(timeout=90)
    for container in run_containers(docker_client, run):
        container.remove(force=True)

    assert process.returncode == 3, stderr
    assert "error: the Docker engine stopped responding during iteration" in stderr
    records = read_lines(run)
    assert sum(record["status"] == "ok" for record in records) >= 2
    assert records[-1]["failure"] == "engine"
    assert read_manifest(run)["status"] == "interrupted"
    report = coldstart(cache_dir, "report", str(run), "--format", "json")
    assert report.returncode == 0, report.stderr
    summary = json.loads(report.stdout)
    assert summary is not None


def limit_file_size() -> None:
    """Let files grow to 12 KiB, like a disk that fills up during the run.

    Every file the run writes is smaller than that except raw.jsonl, which
    reaches it after about ten records.
    """
    resource.setrlimit(resource.RLIMIT_FSIZE, (12 * 1024, 12 * 1024))


@pytest.mark.docker
def test_full_disk_stops_run_keeps_records(
    workspace: Path, cache_dir: Path, docker_client: docker.DockerClient
) -> None:
    before = existing_runs(workspace)
    process = start_run(workspace, cache_dir, iterations=12, preexec_fn=limit_file_size)
    _, stderr = process.communicate(timeout=150)
    run = newest_run(workspace)
    assert run not in before
    raw = run / "raw.jsonl"

    assert process.returncode == 2, stderr
    assert stderr.strip().splitlines()[-1] == (
        f"error: cannot write results to {raw}: File too large (free space or "
        "pass a writable directory with --results)"
    )
    assert run_containers(docker_client, run) == []
    report = coldstart(cache_dir, "report", str(run))
    assert report.returncode == 0, report.stderr
    measured = len(read_lines_tolerant(raw))
    assert 0 < measured < 24
    assert read_manifest(run)["status"] == "interrupted"


def read_lines_tolerant(raw: Path) -> list[dict[str, Any]]:
    """Return the complete records, skipping a last line the limit cut short."""
    lines = raw.read_text().split("\n")
    return [json.loads(line) for line in lines[:-1] if line]


# ---------------------------------------------------------------------------
# reproducibility checks before a resume


def test_remaining_plan_skips_recorded_iterations() -> None:
    builds = [prepared_build(label, "img") for label in ("a", "b")]
    manifest = {"plan": {"iterations": 3, "order": "shuffle", "seed": 4}}
    plan = plan_iterations(["a", "b"], 3, "shuffle", seed=4)
    done = [record_for(item.build, item.iteration) for item in plan[:2]]
    failed = record_for(plan[2].build, plan[2].iteration, ok=False)
    remaining = remaining_plan(manifest, builds, [*done, failed])
    assert remaining == plan[3:]


def record_for(build: str, iteration: int, ok: bool = True) -> Any:
    from harness.models import FailureKind, IterationRecord

    failure = None if ok else FailureKind.TIMEOUT
    return IterationRecord(build, iteration, iteration, "t", 1.0, failure=failure)


@pytest.mark.docker
def test_resume_rejects_deleted_image(env: Environment) -> None:
    build = prepared_build("a", "coldstart-test/deleted:none", "sha256:" + "1" * 64)
    with pytest.raises(InvalidInput) as caught:
        check_build_image(env, build)
    assert str(caught.value) == (
        "image coldstart-test/deleted:none of build 'a' was deleted, but the run "
        "used sha256:111111111111: the run cannot be resumed with the same build "
        "(start a new run)"
    )


@pytest.mark.docker
def test_resume_rejects_changed_image_id(env: Environment, base_image: Any) -> None:
    build = prepared_build("a", base_image.tag, "sha256:" + "2" * 64)
    with pytest.raises(InvalidInput, match=r"now names sha256:"):
        check_build_image(env, build)
    same = prepared_build("a", base_image.tag, base_image.image_id)
    check_build_image(env, same)


@pytest.mark.docker
def test_resume_rejects_changed_base_image(env: Environment, base_image: Any) -> None:
    manifest = {
        "base_image": {**base_image.to_dict(), "image_id": "sha256:" + "3" * 64}
    }
    with pytest.raises(InvalidInput) as caught:
        check_base_image(env, manifest)
    assert str(caught.value).startswith(f"base image {base_image.tag} now names ")
    assert check_base_image(env, {"base_image": base_image.to_dict()}) == base_image


def test_resume_rejects_moved_git_ref(tmp_path: Path, git: Any) -> None:
    git(tmp_path, "init", "-q", "-b", "main")
    (tmp_path / "setup.py").write_text("")
    git(tmp_path, "add", "setup.py")
    git(tmp_path, "commit", "-qm", "first")
    first = git(tmp_path, "rev-parse", "HEAD")
    git(tmp_path, "checkout", "-qb", "jar/lazy-imports")
    spec = BuildSpec(
        "a", SpecKind.GIT_REF, f"{tmp_path}@jar/lazy-imports", None, tmp_path,
        "jar/lazy-imports",
    )  # fmt: skip
    build = PreparedBuild(spec, "sdk", "1", first, (), "img", "id", "key")
    check_git_ref(build)
    git(tmp_path, "commit", "-q", "--allow-empty", "-m", "second")
    second = git(tmp_path, "rev-parse", "HEAD")
    with pytest.raises(InvalidInput) as caught:
        check_git_ref(build)
    assert str(caught.value) == (
        f"git ref 'jar/lazy-imports' of build 'a' now points to {second}, but the "
        f"run measured {first}: the run cannot be resumed (start a new run)"
    )

"""The environment object passed through the pipeline.

It holds the consoles, the Docker client, the clock and the cache directory,
so tests can substitute any of them.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from rich.console import Console

if TYPE_CHECKING:
    import docker


def default_cache_dir() -> Path:
    """Return ``$COLDSTART_CACHE``, else ``$XDG_CACHE_HOME/coldstart``."""
    if explicit := os.environ.get("COLDSTART_CACHE"):
        return Path(explicit)
    xdg = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(xdg) / "coldstart"


def utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass
class Environment:
    """Consoles, Docker client, clocks and paths used by every stage."""

    stdout: Console = field(default_factory=lambda: Console(file=sys.stdout))
    stderr: Console = field(default_factory=lambda: Console(file=sys.stderr))
    quiet: bool = False
    cache_dir: Path = field(default_factory=default_cache_dir)
    docker_factory: Callable[[], docker.DockerClient] | None = None
    monotonic: Callable[[], float] = time.monotonic
    now: Callable[[], datetime] = utc_now
    _client: docker.DockerClient | None = field(default=None, repr=False)

    @property
    def docker(self) -> docker.DockerClient:
        """Return the Docker client, connecting on first use.

        Raises EngineUnavailable when no engine responds to a ping.
        """
        if self._client is None:
            if self.docker_factory is not None:
                self._client = self.docker_factory()
            else:
                from harness.engine import connect

                self._client = connect()
        return self._client

    @property
    def interactive(self) -> bool:
        return not self.quiet and self.stderr.is_terminal

"""Load and validate scenario files.

A scenario is a TOML file. Its keys are ``name``, ``description``,
``packages`` (installed beside the SDK), ``setup`` (untimed code run before the
first phase), ``[env]`` (variables set in the container beside HOME and the
image's own) and ``[budgets]`` in seconds (default init 10, invoke 3). An
array of ``[[phases]]`` gives each phase's ``name``, ``code`` and ``budget``,
and the name ``total`` is reserved. ``[gates]`` maps a phase name, ``"*"``
(every phase without its own) or ``"total"`` to its maximum regression in
percent.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from harness.errors import InvalidInput
from harness.models import Phase, Scenario, Sidecar

DEFAULT_SCENARIO = "stripe-lambda"

# Lambda's init phase may last up to 10 s; 3 s is the default function timeout.
DEFAULT_BUDGETS = {"init": 10.0, "invoke": 3.0}

TOP_LEVEL_KEYS = {
    "name",
    "description",
    "packages",
    "setup",
    "env",
    "budgets",
    "phases",
    "gates",
    "sidecar",
}
SIDECAR_KEYS = {"code", "port", "ready"}
PHASE_KEYS = {"name", "code", "budget"}
# The analysis adds a row of this name with the sum of all phases
# (analysis.TOTAL_PHASE), so no phase may use it.
RESERVED_PHASE_NAME = "total"
ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
MAX_PHASE_NAME = 40


def scenario_dirs() -> list[Path]:
    """Return the directories searched for a scenario given by name."""
    repository = Path(__file__).resolve().parent.parent / "scenarios"
    return [Path.cwd() / "scenarios", repository]


def find_scenario(name_or_path: str) -> Path:
    """Return the file for a scenario name or path; raise InvalidInput if none."""
    candidate = Path(name_or_path)
    if candidate.suffix == ".toml" or "/" in name_or_path:
        if candidate.is_file():
            return candidate
        raise InvalidInput(f"scenario file not found: {name_or_path}")
    for directory in scenario_dirs():
        path = directory / f"{name_or_path}.toml"
        if path.is_file():
            return path
    known = ", ".join(list_scenarios()) or "none"
    raise InvalidInput(
        f"unknown scenario {name_or_path!r}: pass a name ({known}) "
        "or the path of a .toml file"
    )


def list_scenarios() -> list[str]:
    """Return the names of the scenarios found in the search directories."""
    names = {
        path.stem for directory in scenario_dirs() for path in directory.glob("*.toml")
    }
    return sorted(names)


def load_scenario(name_or_path: str) -> Scenario:
    """Read, validate and return a scenario by name or path."""
    path = find_scenario(name_or_path)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as error:
        raise InvalidInput(
            f"invalid scenario {path}: not valid TOML: {error}"
        ) from None
    except (OSError, UnicodeDecodeError) as error:
        raise InvalidInput(f"cannot read scenario {path}: {error}") from None
    return parse_scenario(data, source=str(path))


def parse_scenario(data: Mapping[str, Any], source: str) -> Scenario:
    """Validate a decoded scenario document and return it as a Scenario."""
    check = _Checker(source)
    check.no_unknown_keys(data, TOP_LEVEL_KEYS, "")
    budgets = _parse_budgets(check, data.get("budgets", DEFAULT_BUDGETS))
    phases = _parse_phases(check, data.get("phases"), budgets)
    gates = _parse_gates(check, data.get("gates", {}), phases)
    return Scenario(
        name=check.text(data, "name", required=True),
        description=check.text(data, "description"),
        phases=phases,
        budgets=budgets,
        packages=_parse_packages(check, data.get("packages", [])),
        env=_parse_env(check, data.get("env", {})),
        setup=check.text(data, "setup"),
        source=source,
        gates=gates,
        sidecar=_parse_sidecar(check, data.get("sidecar")),
    )


class _Checker:
    """Raise InvalidInput messages that name the file, the key and the problem."""

    def __init__(self, source: str) -> None:
        self.source = source

    def fail(self, key: str, problem: str) -> InvalidInput:
        return InvalidInput(f"invalid scenario {self.source}: {key}: {problem}")

    def text(
        self, data: Mapping[str, Any], key: str, required: bool = False, at: str = ""
    ) -> str:
        """Return the string at ``key``; ``at`` prefixes the key in messages."""
        value = data.get(key)
        if value is None:
            if required:
                raise self.fail(f"{at}{key}", "missing (add a string value)")
            return ""
        if not isinstance(value, str):
            kind = type(value).__name__
            raise self.fail(f"{at}{key}", f"must be a string, not {kind}")
        return value

    def no_unknown_keys(
        self, data: Mapping[str, Any], known: set[str], at: str
    ) -> None:
        if not isinstance(data, Mapping):
            raise self.fail(at or "document", "must be a table")
        for key in data:
            if key not in known:
                allowed = ", ".join(sorted(known))
                raise self.fail(f"{at}{key}", f"unknown key (allowed: {allowed})")


def _parse_budgets(check: _Checker, raw: Any) -> dict[str, float]:
    if not isinstance(raw, Mapping) or not raw:
        raise check.fail("budgets", "must be a table of budget names to seconds")
    budgets = {}
    for name, seconds in raw.items():
        if isinstance(seconds, bool) or not isinstance(seconds, int | float):
            raise check.fail(f"budgets.{name}", "must be a number of seconds")
        if not seconds > 0:
            raise check.fail(f"budgets.{name}", f"must be positive, not {seconds}")
        budgets[name] = float(seconds)
    return budgets


def _parse_phases(
    check: _Checker, raw: Any, budgets: Mapping[str, float]
) -> tuple[Phase, ...]:
    if raw is not None and not isinstance(raw, list):
        raise check.fail("phases", "must be an array of [[phases]] tables")
    if not raw:
        raise check.fail("phases", "missing (add at least one [[phases]] table)")
    phases = []
    for index, entry in enumerate(raw):
        phases.append(_parse_phase(check, entry, f"phases[{index}]", budgets))
    names = [phase.name for phase in phases]
    for name in names:
        if names.count(name) > 1:
            raise check.fail("phases", f"duplicate phase name {name!r}")
    return tuple(phases)


def _parse_phase(
    check: _Checker, entry: Any, at: str, budgets: Mapping[str, float]
) -> Phase:
    check.no_unknown_keys(entry, PHASE_KEYS, f"{at}.")
    name = check.text(entry, "name", required=True, at=f"{at}.")
    if not name.strip() or len(name) > MAX_PHASE_NAME or not name.isprintable():
        raise check.fail(
            f"{at}.name", f"must be 1-{MAX_PHASE_NAME} printable characters"
        )
    if name.strip() == RESERVED_PHASE_NAME:
        raise check.fail(
            f"{at}.name",
            f"{name!r} is reserved for the sum of all phases (rename the phase)",
        )
    code = check.text(entry, "code", required=True, at=f"{at}.")
    try:
        compile(code, f"<phase {name}>", "exec")
    except SyntaxError as error:
        raise check.fail(f"{at}.code", f"invalid Python: {error.msg}") from None
    budget = check.text(entry, "budget", required=True, at=f"{at}.")
    if budget not in budgets:
        known = ", ".join(budgets)
        raise check.fail(f"{at}.budget", f"{budget!r} is not a budget ({known})")
    return Phase(name=name, code=code, budget=budget)


def _parse_packages(check: _Checker, raw: Any) -> tuple[str, ...]:
    from packaging.requirements import InvalidRequirement, Requirement

    if not isinstance(raw, list) or not all(isinstance(item, str) for item in raw):
        raise check.fail("packages", "must be a list of requirement strings")
    for item in raw:
        try:
            Requirement(item)
        except InvalidRequirement:
            raise check.fail("packages", f"invalid requirement {item!r}") from None
    return tuple(raw)


def _parse_env(check: _Checker, raw: Any) -> dict[str, str]:
    if not isinstance(raw, Mapping):
        raise check.fail("env", "must be a table of variable names to strings")
    for name, value in raw.items():
        if not ENV_NAME.match(name):
            raise check.fail(f"env.{name}", "invalid environment variable name")
        if not isinstance(value, str):
            raise check.fail(f"env.{name}", "must be a string")
    return dict(raw)


def _parse_gates(
    check: _Checker, raw: Any, phases: tuple[Phase, ...]
) -> dict[str, float]:
    if not isinstance(raw, Mapping):
        raise check.fail("gates", "must be a table of phase names to percentages")
    known = [phase.name for phase in phases] + ["total", "*"]
    gates = {}
    for name, percent in raw.items():
        if name not in known:
            names = ", ".join(repr(item) for item in known)
            raise check.fail(f"gates.{name}", f"not a phase (use one of {names})")
        if isinstance(percent, bool) or not isinstance(percent, int | float):
            raise check.fail(f"gates.{name}", "must be a number of percent")
        if not percent >= 0:
            raise check.fail(f"gates.{name}", f"must be 0 or more, not {percent}")
        gates[name] = float(percent)
    return gates


def _parse_sidecar(check: _Checker, raw: Any) -> Sidecar | None:
    if raw is None:
        return None
    check.no_unknown_keys(raw, SIDECAR_KEYS, "sidecar.")
    code = raw.get("code")
    if not isinstance(code, str) or not code.strip():
        raise check.fail("sidecar.code", "missing (add the stub server's source)")
    try:
        compile(code, "<sidecar>", "exec")
    except SyntaxError as error:
        raise check.fail("sidecar.code", f"invalid Python: {error.msg}") from None
    port = raw.get("port")
    if isinstance(port, bool) or not isinstance(port, int) or not 0 < port < 65536:
        raise check.fail("sidecar.port", "must be a port number from 1 to 65535")
    ready = raw.get("ready", "ready")
    if not isinstance(ready, str) or not ready:
        raise check.fail("sidecar.ready", "must be a non-empty string")
    return Sidecar(code=code, port=port, ready=ready)

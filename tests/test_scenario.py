import re
from pathlib import Path

import pytest

from harness.errors import InvalidInput
from harness.models import Scenario, Sidecar
from harness.scenario import list_scenarios, load_scenario, parse_scenario

VALID = """
name = "tiny"
packages = ["requests>=2"]
setup = "import os"

[env]
FLAG = "1"

[budgets]
init = 10
invoke = 3

[[phases]]
name = "import json"
code = "import json"
budget = "init"
"""


def write(tmp_path: Path, text: str) -> str:
    path = tmp_path / "tiny.toml"
    path.write_text(text)
    return str(path)


def test_default_scenario_phases_and_budgets():
    scenario = load_scenario("stripe-lambda")
    assert [phase.name for phase in scenario.phases] == [
        "import stripe",
        "StripeClient()",
    ]
    assert [phase.budget for phase in scenario.phases] == ["init", "invoke"]
    assert scenario.budgets == {"init": 10.0, "invoke": 3.0}
    assert scenario.packages == ("requests",)


def test_shipped_scenarios_all_load():
    names = list_scenarios()
    assert "stripe-lambda" in names
    for name in names:
        assert load_scenario(name).name == name


def test_valid_file_round_trips(tmp_path):
    scenario = load_scenario(write(tmp_path, VALID))
    assert scenario.env == {"FLAG": "1"}
    assert scenario.setup == "import os"
    assert scenario.budgets == {"init": 10.0, "invoke": 3.0}
    assert type(scenario).from_dict(scenario.to_dict()) == scenario


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (
            ('budget = "init"', 'budget = "warm"'),
            "phases[0].budget: 'warm' is not a budget (init, invoke)",
        ),
        (('name = "tiny"', 'nme = "tiny"'), "nme: unknown key"),
        (('code = "import json"', 'code = "import ("'), "phases[0].code: invalid"),
        (("init = 10", "init = -1"), "budgets.init: must be positive, not -1"),
        (('FLAG = "1"', "FLAG = 1"), "env.FLAG: must be a string"),
        (('["requests>=2"]', '["requests>=>2"]'), "packages: invalid requirement"),
        (('name = "tiny"\n', ""), "name: missing (add a string value)"),
        (
            ('name = "import json"', 'name = "total"'),
            "phases[0].name: 'total' is reserved for the sum of all phases "
            "(rename the phase)",
        ),
        (
            ('budget = "init"\n', ""),
            "phases[0].budget: missing (add a string value)",
        ),
    ],
)
def test_invalid_file_names_file_key_and_problem(tmp_path, edit, message):
    old, new = edit
    path = write(tmp_path, VALID.replace(old, new, 1))
    with pytest.raises(InvalidInput) as caught:
        load_scenario(path)
    assert str(caught.value).startswith(f"invalid scenario {path}: ")
    assert message in str(caught.value)


def test_phases_as_string_rejected(tmp_path):
    path = write(tmp_path, 'name = "tiny"\nphases = "import json"\n')
    with pytest.raises(InvalidInput) as caught:
        load_scenario(path)
    assert str(caught.value) == (
        f"invalid scenario {path}: phases: must be an array of [[phases]] tables"
    )


def test_duplicate_phase_names_rejected(tmp_path):
    doubled = VALID + VALID[VALID.index("[[phases]]") :]
    with pytest.raises(InvalidInput, match="duplicate phase name 'import json'"):
        load_scenario(write(tmp_path, doubled))


def test_broken_toml_names_file(tmp_path):
    path = write(tmp_path, "name = ")
    with pytest.raises(InvalidInput, match=f"invalid scenario {path}: not valid TOML"):
        load_scenario(path)


def test_unknown_name_lists_known_scenarios():
    with pytest.raises(InvalidInput) as caught:
        load_scenario("no-such-scenario")
    assert "unknown scenario 'no-such-scenario'" in str(caught.value)
    assert "stripe-lambda" in str(caught.value)


GATES = '\n[gates]\n"import json" = 10\ntotal = 5.5\n"*" = 20\n'


def test_gates_table_loads_and_round_trips(tmp_path):
    scenario = load_scenario(write(tmp_path, VALID + GATES))
    assert scenario.gates == {"import json": 10.0, "total": 5.5, "*": 20.0}
    assert type(scenario).from_dict(scenario.to_dict()) == scenario


def test_scenario_without_gates_has_none(tmp_path):
    assert load_scenario(write(tmp_path, VALID)).gates == {}


@pytest.mark.parametrize(
    ("table", "message"),
    [
        (
            '\n[gates]\n"import os" = 10\n',
            "gates.import os: not a phase (use one of 'import json', 'total', '*')",
        ),
        ('\n[gates]\ntotal = "10%"\n', "gates.total: must be a number of percent"),
        ("\n[gates]\ntotal = -1\n", "gates.total: must be 0 or more, not -1"),
        ("\n[gates]\ntotal = nan\n", "gates.total: must be 0 or more, not nan"),
        ("gates = 10\n", "gates: must be a table of phase names to percentages"),
    ],
)
def test_invalid_gates_name_key_and_problem(tmp_path, table, message):
    # A top-level key must come before the first table, so a bare key goes first.
    text = table + VALID if table.startswith("gates") else VALID + table
    path = write(tmp_path, text)
    with pytest.raises(InvalidInput) as caught:
        load_scenario(path)
    assert str(caught.value) == f"invalid scenario {path}: {message}"


SIDECAR_PHASES = [{"name": "p", "code": "pass", "budget": "init"}]


def test_sidecar_parsed():
    scenario = parse_scenario(
        {
            "name": "s",
            "phases": SIDECAR_PHASES,
            "sidecar": {"code": "print('ready')", "port": 12111},
        },
        source="s.toml",
    )
    assert scenario.sidecar == Sidecar(code="print('ready')", port=12111, ready="ready")
    assert scenario.to_dict()["sidecar"]["port"] == 12111
    assert Scenario.from_dict(scenario.to_dict()) == scenario


def test_scenario_without_sidecar_round_trips():
    scenario = parse_scenario({"name": "s", "phases": SIDECAR_PHASES}, source="s.toml")
    assert scenario.sidecar is None
    assert "sidecar" not in scenario.to_dict()
    assert Scenario.from_dict(scenario.to_dict()) == scenario


@pytest.mark.parametrize(
    ("sidecar", "message"),
    [
        ({"port": 1}, "sidecar.code: missing"),
        ({"code": "x(", "port": 1}, "sidecar.code: invalid Python"),
        ({"code": "pass", "port": 0}, "sidecar.port: must be a port number"),
        ({"code": "pass", "port": "80"}, "sidecar.port: must be a port number"),
        ({"code": "pass", "port": 80, "host": "x"}, "sidecar.host: unknown key"),
    ],
)
def test_sidecar_rejected(sidecar, message):
    data = {"name": "s", "phases": SIDECAR_PHASES, "sidecar": sidecar}
    with pytest.raises(InvalidInput, match=re.escape(message)):
        parse_scenario(data, source="s.toml")


def test_shipped_first_request_scenario_has_sidecar():
    scenario = load_scenario("stripe-first-request")
    assert scenario.sidecar is not None
    assert scenario.sidecar.port == 12111
    assert [phase.name for phase in scenario.phases][-1] == "first request"

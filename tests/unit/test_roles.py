"""Every role keeps its contract: specs mirror defaults, inputs role-prefixed, README complete."""

from pathlib import Path

import pytest
import yaml

ROLES = sorted(p for p in (Path(__file__).resolve().parents[2] / "roles").iterdir() if p.is_dir())


def _spec(role: Path) -> dict:
    """Every entry point's options (main, and those of tasks_from files) as one spec."""
    specs = yaml.safe_load((role / "meta/argument_specs.yml").read_text())["argument_specs"]
    options: dict = {}
    for entry in specs.values():
        for name, option in entry.get("options", {}).items():
            # Required in an entry point that needs another's result (e.g. restore after snapshot).
            if name not in options or not option.get("required"):
                options[name] = option
    return {"options": options}


def _defaults(role: Path) -> dict:
    path = role / "defaults/main.yml"
    return (yaml.safe_load(path.read_text()) or {}) if path.exists() else {}


@pytest.mark.parametrize("role", ROLES, ids=lambda p: p.name)
def test_every_default_is_specified_and_every_optional_spec_has_a_default(role):
    options = _spec(role)["options"]
    defaults = _defaults(role)
    assert set(defaults) - set(options) == set(), "defaults missing from argument_specs"
    optional = {n for n, o in options.items() if not o.get("required")}
    assert optional - set(defaults) == set(), "optional inputs without a default"
    required = {n for n, o in options.items() if o.get("required")}
    assert required & set(defaults) == set(), "required inputs must not have a default"


@pytest.mark.parametrize("role", ROLES, ids=lambda p: p.name)
def test_inputs_are_role_prefixed(role):
    bad = [n for n in _spec(role)["options"] if not n.startswith(role.name + "_")]
    assert not bad


@pytest.mark.parametrize("role", ROLES, ids=lambda p: p.name)
def test_readme_documents_every_input(role):
    readme = (role / "README.md").read_text()
    missing = [n for n in _spec(role)["options"] if f"`{n}`" not in readme]
    assert not missing, f"{role.name}/README.md does not mention {missing}"

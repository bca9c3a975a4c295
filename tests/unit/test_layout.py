"""The site layout is defined once (role ems_layout) and derived everywhere else.

The patterns are generated from ems_layout's defaults, so a layout value added there is watched
here too: no role, playbook, host suite or lab helper may name one of them literally.
"""

from __future__ import annotations

import re

import pytest

from api.layout import REPO_ROOT, layout_defaults, site_vars

# Code that must take the layout from ems_layout (roles, playbooks) or from api.layout (the host
# suites, the lab's Python and its tests). The reference EMS itself (lab/ems) is the product and
# ships its own defaults; documentation may show them.
WATCHED = [
    *[p for p in (REPO_ROOT / "roles").rglob("*")
      if p.is_file() and "ems_layout" not in p.parts and p.name != "README.md"],
    *(REPO_ROOT / "playbooks").glob("*.yml"),
    *(REPO_ROOT / "tests" / "hosts").glob("*.py"),
    *(REPO_ROOT / "lab").glob("*.py"),
    *(REPO_ROOT / "lab").glob("*.sh"),
    *(REPO_ROOT / "tests" / "lab").glob("*.py"),
]
# Full-line comments may explain a value; code may not use it. An INI section header (`[ems]` in
# ems.conf) is the product's file format, not a layout value.
COMMENT = re.compile(r"^\s*(#|\[\w+\]\s*$)")


def rendered_layout() -> dict[str, str]:
    """ems_layout's defaults with their references to each other resolved."""
    raw = {k: str(v) for k, v in layout_defaults().items()}
    ref = re.compile(r"\{\{\s*(\w+)\s*\}\}")
    for _ in range(len(raw)):
        raw = {k: ref.sub(lambda m, known=raw: known[m.group(1)], v) for k, v in raw.items()}
    assert not any("{{" in v for v in raw.values()), raw
    return raw


def literal_pattern(value: str) -> re.Pattern[str]:
    """A value as a whole token: `/etc/kangpai-ems` in `/etc/kangpai-ems/ems.conf` counts, `ems`
    in `ems_db` or `kangpai-ems` in `kangpai-ems-3.2.1.tar.gz` does not."""
    after = r"(?![\w.-])" if value.startswith("/") else r"(?![\w/.-])"
    if value.isdigit():
        return re.compile(rf"(?<![\w.]){value}(?![\w.])")
    return re.compile(rf"(?<![\w/.-]){re.escape(value)}{after}")


def literal_uses(text: str, pattern: re.Pattern[str]) -> list[str]:
    return [f"{n}: {line.strip()}" for n, line in enumerate(text.splitlines(), 1)
            if not COMMENT.match(line) and pattern.search(line)]


@pytest.mark.parametrize("name,value", sorted(rendered_layout().items()))
def test_no_code_names_a_layout_default_literally(name, value):
    pattern = literal_pattern(value)
    found = {}
    for path in WATCHED:
        uses = literal_uses(path.read_text(errors="replace"), pattern)
        if uses:
            found[str(path.relative_to(REPO_ROOT))] = uses[:3]
    assert not found, f"{name} ({value}) is named literally; use the variable instead: {found}"


@pytest.mark.parametrize("text,value,hit", [
    ("path: /etc/kangpai-ems/ems.conf", "/etc/kangpai-ems", True),
    ("path: /etc/kangpai-ems-old", "/etc/kangpai-ems", False),
    ("runuser -u kangpai-ems -- true", "kangpai-ems", True),
    ("kangpai-ems-3.2.1.tar.gz", "kangpai-ems", False),
    ("/opt/kangpai-ems", "kangpai-ems", False),
    ("psql -d ems -c 'select 1'", "ems", True),
    ("groups['ems_db']", "ems", False),
    ("port: 8080", "8080", True),
    ("port: 18080", "8080", False),
    ("# the platform listens on 8080", "8080", False),
    ("[ems]", "ems", False),
])
def test_the_literal_search_finds_uses_and_nothing_else(text, value, hit):
    assert bool(literal_uses(text, literal_pattern(value))) is hit


def test_host_values_come_from_the_inventory_over_the_layout():
    """What the example site overrides is what api.layout gives its hosts; the rest is the
    layout's default, with references between values resolved by Ansible."""
    inventory = REPO_ROOT / "inventories" / "example" / "hosts.yml"
    gateway = site_vars(inventory, "kp-cmm01")
    assert gateway["ems_layout_config_file"] == "/etc/kangpai/ems.conf"
    assert gateway["ems_layout_gateway_unit"] == "kangpai-collector.service"
    assert gateway["ems_gateway_platform_url"] == "http://192.168.50.10:8090"
    assert gateway["ems_layout_backup_script"] == rendered_layout()["ems_layout_backup_script"]

"""Plumbing for the host suites: group selection, inventory variables, the verdict report.

Each suite module declares the inventory groups it describes with ``pytestmark =
pytest.mark.groups(...)``; a host only runs the suites of its groups. When
EMSOPS_VERIFY_REPORT is set, every result is written there for `emsops verify`, with what the
host reported about itself (`record_property`, e.g. its running version) as `observed`.
"""

from __future__ import annotations

import json
import os
from collections import ChainMap
from collections.abc import Mapping
from pathlib import Path

import pytest


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--expect", action="append", default=[], metavar="NAME=VALUE",
                     help="a variable a run changed on purpose, expected over the inventory's")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "groups(*names): inventory groups the suite applies to")
    config._emsops_results = []  # type: ignore[attr-defined]


def _host_of(item: pytest.Item):
    callspec = getattr(item, "callspec", None)
    return callspec.params.get("_testinfra_host") if callspec else None


def _groups_of(host) -> set[str]:
    cache = host.__dict__.setdefault("_emsops_groups", None)
    if cache is None:
        cache = set(host.ansible.get_variables().get("group_names", []))
        host.__dict__["_emsops_groups"] = cache
    return cache


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    keep, drop = [], []
    for item in items:
        marker = item.get_closest_marker("groups")
        host = _host_of(item)
        if marker is None or host is None or _groups_of(host) & set(marker.args):
            keep.append(item)
        else:
            drop.append(item)
    if drop:
        config.hook.pytest_deselected(items=drop)
        items[:] = keep


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call):
    outcome = yield
    report = outcome.get_result()
    host = _host_of(item)
    if host is None or (report.when != "call" and report.passed):
        return
    message = ""
    if report.failed:
        crash = getattr(report.longrepr, "reprcrash", None)
        message = crash.message if crash else str(report.longrepr)[-500:]
    name = item.name.split("[", 1)[0]
    params = {k: v for k, v in item.callspec.params.items() if k != "_testinfra_host"}
    if params:
        name += "[" + ",".join(str(v) for v in params.values()) + "]"
    item.config._emsops_results.append({  # type: ignore[attr-defined]
        "host": host.backend.get_hostname(), "test": name,
        "outcome": report.outcome, "message": message.splitlines()[0][:300] if message else "",
        "observed": dict(report.user_properties)})


def pytest_sessionfinish(session: pytest.Session) -> None:
    path = os.environ.get("EMSOPS_VERIFY_REPORT")
    if path:
        with open(path, "w") as f:
            json.dump(session.config._emsops_results, f)  # type: ignore[attr-defined]


@pytest.fixture
def site_vars(host, request: pytest.FixtureRequest) -> Mapping:
    """What the host is expected to have: its inventory variables over every role's defaults,
    templated by Ansible on the controller (api.layout), as the roles that deployed it saw them.
    What the host reports about itself is the evidence, never the expectation."""
    from api.layout import site_vars as expected

    changed = dict(pair.split("=", 1) for pair in request.config.option.expect)
    return ChainMap(changed, expected(Path(request.config.option.ansible_inventory),
                                      host.backend.get_hostname()))


@pytest.fixture
def site_meters(site_vars, request: pytest.FixtureRequest) -> list[Mapping]:
    """Every meter the site's gateways poll (each gateway's own `ems_gateway_meters`)."""
    from api.layout import site_vars as expected

    inventory = Path(request.config.option.ansible_inventory)
    return [meter for gateway in site_vars["groups"].get("ems_gateways", [])
            for meter in expected(inventory, gateway)["ems_gateway_meters"]]

"""The table of lab fault kinds: every kind issue 10 lists (and ip-conflict), each with a
symptom check and a clear, applying to groups that exist."""

from __future__ import annotations

import pytest

from lab import config
from lab.faults import KINDS, applies

ISSUE_10_KINDS = {"unit-stopped", "unit-masked", "unit-crashloop", "config-corrupt",
                  "config-missing", "license-missing", "release-link-broken",
                  "release-file-corrupt", "db-down", "db-config-broken", "disk-full",
                  "timer-disabled"}


def test_the_table_has_every_kind_of_issue_10_and_ip_conflict():
    # disk-full-logs: the full mount holds what the EMS may free (disk-full: what it may not).
    assert set(KINDS) == ISSUE_10_KINDS | {"ip-conflict", "disk-full-logs"}


@pytest.mark.parametrize("name", sorted(KINDS))
def test_every_kind_can_be_injected_shown_and_cleared(name):
    k = KINDS[name]
    assert k.name == name and k.does
    assert callable(k.inject) and callable(k.symptom)
    assert callable(k.clear), f"{name} has no clear: say why in its description"
    assert set(k.groups) <= set(config.GROUPS)


@pytest.mark.parametrize("name", sorted(KINDS))
def test_every_kind_applies_to_a_host_of_the_lab(name):
    assert [h.name for h in config.HOSTS if applies(KINDS[name], h.name)]


def test_a_kind_applies_only_where_its_target_is():
    assert applies(KINDS["db-down"], "ems-db") and not applies(KINDS["db-down"], "ems-app")
    assert applies(KINDS["timer-disabled"], "ems-app")
    assert not applies(KINDS["timer-disabled"], "ems-gw1")
    assert applies(KINDS["ip-conflict"], "backup")

"""One naming rule for service inputs (issue 9 item 6): every parameter of every service model has
exactly one role-prefixed input in api.models.ROLE_INPUTS, declared by the service's role."""

from __future__ import annotations

import typing

import pytest
import yaml

from api import models
from api.models import ROLE_INPUTS, JobRequest, role_inputs
from api.settings import REPO_ROOT


def _service_parameters() -> dict[str, set[str]]:
    jobs = typing.get_args(typing.get_args(JobRequest)[0])
    found = {}
    for job in jobs:
        params = job.model_fields["parameters"].annotation
        for service in typing.get_args(job.model_fields["service"].annotation):
            found[service] = set(params.model_fields)
    return found


def test_every_parameter_of_every_service_has_exactly_one_entry():
    services = _service_parameters()
    assert services["restore"] == {"reason"}  # the walk over the models found them
    for service, params in services.items():
        assert set(ROLE_INPUTS.get(service, {})) == params, service
    assert set(ROLE_INPUTS) <= set(services)


ROLES = sorted(p.name for p in (REPO_ROOT / "roles").iterdir() if p.is_dir())


def _role_of(name: str) -> str | None:
    """The existing role whose prefix the input carries (the longest such role name)."""
    owners = [role for role in ROLES if name.startswith(role + "_")]
    return max(owners, key=len) if owners else None


@pytest.mark.parametrize("service", sorted(ROLE_INPUTS))
def test_each_input_is_declared_by_its_role_once_the_role_exists(service):
    names = list(ROLE_INPUTS[service].values())
    assert len(set(names)) == len(names)
    for name in names:
        role = _role_of(name)
        if role is None:
            continue  # the service's role is not written yet (a later issue adds it)
        spec = yaml.safe_load((REPO_ROOT / "roles" / role / "meta" / "argument_specs.yml")
                              .read_text())
        assert name in spec["argument_specs"]["main"]["options"], (name, role)


def test_the_reinstall_input_is_checked_against_its_role():
    assert _role_of("reinstall_snapshot") == "reinstall"  # the check above is not vacuous


def test_role_inputs_skip_unset_parameters_and_refuse_unmapped_ones():
    assert role_inputs("reinstall", {"snapshot": None}) == {}
    assert role_inputs("reinstall", {"snapshot": "abcd1234"}) == {"reinstall_snapshot": "abcd1234"}
    assert role_inputs("inspect", {}) == {}
    with pytest.raises(KeyError):
        role_inputs("restore", {"unmapped": 1})
    assert models.ROLE_INPUTS is ROLE_INPUTS


def test_inspection_thresholds_spread_as_the_role_inputs_they_name():
    thresholds = {"inspection_backup_warn_age_s": 3600, "inspection_read_error_warn_pct": 0.5}
    assert role_inputs("inspect", {"thresholds": thresholds}) == thresholds
    spec = yaml.safe_load((REPO_ROOT / "roles/inspection/meta/argument_specs.yml").read_text())
    assert set(thresholds) <= set(spec["argument_specs"]["main"]["options"])


@pytest.mark.parametrize("thresholds", [
    {"inspection_no_such_threshold": 1},  # not an input of the role
    {"inspection_packages": 1},  # an input, but not a number
    {"inspection_meter_offline_s": 1.5},  # an int input
    {"reinstall_snapshot": 1},  # another role's
])
def test_an_inspection_threshold_the_role_does_not_take_is_refused(thresholds):
    from pydantic import TypeAdapter, ValidationError

    with pytest.raises(ValidationError, match="threshold|whole number"):
        TypeAdapter(JobRequest).validate_python({
            "service": "inspect", "ticket_id": "T-1", "customer_id": "acme",
            "parameters": {"thresholds": thresholds}})


def test_the_restore_reason_reaches_its_role_with_the_same_choices():
    spec = yaml.safe_load((REPO_ROOT / "roles/system_restore/meta/argument_specs.yml").read_text())
    option = spec["argument_specs"]["main"]["options"]["system_restore_reason"]
    reason = models.RestoreParameters.model_fields["reason"].annotation
    assert set(typing.get_args(reason)) == set(option["choices"])
    assert role_inputs("restore", {"reason": "fails_to_start"}) == {
        "system_restore_reason": "fails_to_start"}

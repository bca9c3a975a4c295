"""A healthy (lab) meters host: the Modbus TCP simulator answers."""

import pytest

pytestmark = pytest.mark.groups("ems_meters")


def test_simulator_is_active_and_enabled(host, site_vars):
    unit = host.service(site_vars["ems_layout_meter_sim_unit"])
    assert unit.is_running and unit.is_enabled


def test_modbus_port_listens(host, site_vars):
    assert host.socket(f"tcp://0.0.0.0:{site_vars['ems_layout_modbus_port']}").is_listening

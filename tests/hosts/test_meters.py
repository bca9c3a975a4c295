"""A healthy (lab) meters host: the Modbus TCP simulator answers."""

import pytest
from hostcheck import setting

pytestmark = pytest.mark.groups("ems_meters")


def test_simulator_is_active_and_enabled(host, hostvars):
    unit = host.service(setting(hostvars, "ems_meter_sim_unit"))
    assert unit.is_running and unit.is_enabled


def test_modbus_port_listens(host, hostvars):
    assert host.socket(f"tcp://0.0.0.0:{setting(hostvars, 'ems_meter_sim_port')}").is_listening

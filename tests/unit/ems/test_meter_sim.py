"""The meter simulator as a real process on a real port: counters, run-time modes, persistence."""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from kangpai_ems import meter_registers, modbus

from .helpers import PYTHON, SRC, EmsProcess, free_port, wait_until, write_config


class Sim:
    def __init__(self, process: EmsProcess, port: int, state: Path) -> None:
        self.process = process
        self.port = port
        self.state = state

    def client(self, timeout: float = 2.0) -> modbus.Client:
        return modbus.Client("127.0.0.1", self.port, timeout)

    def read(self, unit: int) -> meter_registers.Measurement:
        with self.client() as client:
            return meter_registers.read(client, unit)

    def ctl(self, unit: int, mode: str | None = None) -> subprocess.CompletedProcess[str]:
        args = [PYTHON, "-m", "kangpai_ems.meter_ctl", "--host", "127.0.0.1",
                "--port", str(self.port), "--unit", str(unit), "--timeout", "0.5"]
        if mode is not None:
            args += ["--mode", mode]
        return subprocess.run(args, capture_output=True, text=True, timeout=20,
                              env={"PYTHONPATH": str(SRC), "PATH": "/usr/bin:/bin"})


@pytest.fixture
def start_sim(tmp_path: Path, ems: Callable[..., EmsProcess]) -> Callable[[], Sim]:
    port = free_port()
    state = tmp_path / "state" / "meter-sim.json"
    config = write_config(tmp_path / "ems.conf", {
        "ems": {"state_dir": tmp_path / "state", "log_level": "DEBUG"},
        "meter_sim": {"listen": "127.0.0.1", "port": port, "meters": 3, "state_path": state},
    })

    def start() -> Sim:
        sim = Sim(ems("meter_sim", config), port, state)
        wait_until(lambda: sim.read(1), 15, "meter simulator to answer")
        return sim

    return start


def test_every_unit_answers_and_counts_up(start_sim: Callable[[], Sim]) -> None:
    sim = start_sim()
    first = {unit: sim.read(unit) for unit in (1, 2, 3)}
    for reading in first.values():
        assert reading.kwh > 0
        assert 220 < reading.voltage < 240
        assert reading.power > 0
        # three-phase: P = 3 * U * I (within the register resolution)
        assert reading.power == pytest.approx(3 * reading.voltage * reading.current / 1000,
                                              rel=0.01)
    wait_until(lambda: sim.read(3).kwh > first[3].kwh, 10, "unit 3 counter to advance")


def test_unknown_unit_gets_gateway_exception(start_sim: Callable[[], Sim]) -> None:
    sim = start_sim()
    with sim.client() as client, pytest.raises(modbus.ModbusError) as caught:
        meter_registers.read(client, 4)
    assert caught.value.code == modbus.GATEWAY_TARGET_FAILED


def test_mode_register_validates_writes(start_sim: Callable[[], Sim]) -> None:
    sim = start_sim()
    with sim.client() as client:
        with pytest.raises(modbus.ModbusError) as bad_value:
            client.write_register(1, meter_registers.MODE_REGISTER, 9)
        with pytest.raises(modbus.ModbusError) as bad_address:
            client.write_register(1, 0, 1)
        with pytest.raises(modbus.ModbusError) as bad_read:
            client.read_input_registers(1, 0, 7)
        assert client.read_holding_registers(1, meter_registers.MODE_REGISTER, 1) == [0]
    assert bad_value.value.code == modbus.ILLEGAL_DATA_VALUE
    assert bad_address.value.code == modbus.ILLEGAL_DATA_ADDRESS
    assert bad_read.value.code == modbus.ILLEGAL_DATA_ADDRESS


def test_offline_unit_times_out_until_set_normal(start_sim: Callable[[], Sim]) -> None:
    sim = start_sim()
    assert sim.ctl(2, "offline").returncode == 0
    with sim.client(timeout=0.5) as client:
        with pytest.raises(TimeoutError):
            meter_registers.read(client, 2)
        assert meter_registers.read(client, 1).kwh > 0  # the other units still answer
    read = sim.ctl(2)
    assert read.returncode == 1
    assert "did not answer" in read.stderr
    assert sim.ctl(2, "normal").returncode == 0
    assert json.loads(sim.ctl(2).stdout)["kwh"] > 0


def test_stuck_unit_freezes_all_values(start_sim: Callable[[], Sim]) -> None:
    sim = start_sim()
    assert sim.ctl(3, "stuck").returncode == 0
    frozen = sim.read(3)
    time.sleep(1.5)  # unit 3 draws ~60 kW: about 2.5 counter steps of 0.01 kWh per second
    assert sim.read(3) == frozen
    assert sim.ctl(3, "normal").returncode == 0
    wait_until(lambda: sim.read(3).kwh > frozen.kwh, 10, "counter to move again")


def test_reset_drops_counter_to_zero_then_counts(start_sim: Callable[[], Sim]) -> None:
    sim = start_sim()
    before = sim.read(3)
    assert before.kwh > 100
    assert sim.ctl(3, "reset").returncode == 0
    after = sim.read(3)
    assert after.kwh < 0.5
    wait_until(lambda: sim.read(3).kwh > after.kwh, 10, "counter to count after the reset")
    with sim.client() as client:  # reset acts once: the unit is back in normal mode
        assert client.read_holding_registers(3, meter_registers.MODE_REGISTER, 1) == [0]


def test_spike_is_one_absurd_jump(start_sim: Callable[[], Sim]) -> None:
    sim = start_sim()
    before = sim.read(1)
    assert sim.ctl(1, "spike").returncode == 0
    jumped = sim.read(1)
    assert jumped.kwh - before.kwh > 50_000
    time.sleep(1.0)
    later = sim.read(1)
    assert 0 <= later.kwh - jumped.kwh < 1  # then ordinary counting, no second jump


def test_restart_continues_counting_and_keeps_modes(start_sim: Callable[[], Sim]) -> None:
    sim = start_sim()
    assert sim.ctl(2, "offline").returncode == 0
    last = sim.read(3)
    assert sim.process.stop() == 0
    saved = json.loads(sim.state.read_text())
    assert saved["meters"]["3"]["kwh"] >= last.kwh

    sim = start_sim()
    assert sim.read(3).kwh >= last.kwh
    with sim.client(timeout=0.5) as client, pytest.raises(TimeoutError):
        meter_registers.read(client, 2)


def test_port_in_use_is_one_error_line(start_sim: Callable[[], Sim],
                                       ems: Callable[..., EmsProcess]) -> None:
    sim = start_sim()
    config = sim.process.proc.args[-1]
    second = ems("meter_sim", Path(config))
    assert second.proc.wait(15) == 1
    assert "cannot start" in second.log()
    assert "Traceback" not in second.log()

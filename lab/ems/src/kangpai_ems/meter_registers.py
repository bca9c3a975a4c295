"""The simulated meter's register map, shared by the simulator, the collector and meter_ctl.

Measurement block, readable with function 3 or 4 at addresses 0..5 (big-endian words, high first):
  0-1  cumulative energy, uint32, 0.01 kWh
  2    voltage (phase), uint16, 0.1 V
  3    current (phase), uint16, 0.01 A
  4-5  active power (total), int32, 1 W
Control, function 3 to read and 6 to write:
  100  mode: 0 normal, 1 offline, 2 stuck, 3 counter reset, 4 spike
"""

from __future__ import annotations

from dataclasses import dataclass

from . import modbus

MEASUREMENT_ADDRESS = 0
MEASUREMENT_COUNT = 6
MODE_REGISTER = 100

MODES = {"normal": 0, "offline": 1, "stuck": 2, "reset": 3, "spike": 4}
MODE_NAMES = {value: name for name, value in MODES.items()}


@dataclass(frozen=True)
class Measurement:
    kwh: float
    voltage: float
    current: float
    power: float  # kW

    def as_dict(self) -> dict[str, float]:
        return {"kwh": self.kwh, "voltage": self.voltage, "current": self.current,
                "power": self.power}


def encode(kwh: float, voltage: float, current: float, power_kw: float) -> list[int]:
    return [
        *modbus.from_u32(int(kwh * 100) & 0xFFFFFFFF),
        min(int(round(voltage * 10)), 0xFFFF),
        min(int(round(current * 100)), 0xFFFF),
        *modbus.from_i32(int(round(power_kw * 1000))),
    ]


def decode(registers: list[int]) -> Measurement:
    if len(registers) != MEASUREMENT_COUNT:
        raise ValueError(f"need {MEASUREMENT_COUNT} registers, got {len(registers)}")
    return Measurement(
        kwh=modbus.to_u32(registers[0], registers[1]) / 100,
        voltage=registers[2] / 10,
        current=registers[3] / 100,
        power=modbus.to_i32(registers[4], registers[5]) / 1000,
    )


def read(client: modbus.Client, unit: int) -> Measurement:
    return decode(client.read_input_registers(unit, MEASUREMENT_ADDRESS, MEASUREMENT_COUNT))

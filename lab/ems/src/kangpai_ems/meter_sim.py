"""Modbus TCP server simulating N three-phase energy meters (unit ids 1..N) on one port.

Counters advance with wall-clock time from a simulated load and persist in a state file, so a
restart (or downtime) continues counting. Each unit's behaviour is switched at run time by writing
its mode register (see meter_registers): the write is answered even while the unit is offline.
"""

from __future__ import annotations

import json
import logging
import math
import os
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from . import meter_registers as regs
from . import modbus, service

log = logging.getLogger("kangpai_ems.meter_sim")

SAVE_INTERVAL_S = 2.0
SPIKE_KWH = 100_000.0  # one absurd jump, far beyond any physical load in one interval


def load_kw(unit: int, now: float) -> float:
    """A deterministic, slowly varying load: 30 kW for unit 1, +15 kW per further unit."""
    base = 30.0 + 15.0 * (unit - 1)
    return base * (1.0 + 0.2 * math.sin(2 * math.pi * now / 600.0 + unit))


def phase_voltage(unit: int, now: float) -> float:
    return 230.0 + 3.0 * math.sin(2 * math.pi * now / 97.0 + unit)


@dataclass
class SimMeter:
    unit: int
    kwh: float
    mode: int = regs.MODES["normal"]
    frozen: list[int] | None = None  # the registers shown while stuck

    def registers(self, now: float) -> list[int]:
        if self.frozen is not None:
            return list(self.frozen)
        power = load_kw(self.unit, now)
        voltage = phase_voltage(self.unit, now)
        return regs.encode(self.kwh, voltage, power * 1000 / (3 * voltage), power)


class MeterBank:
    """The simulated meters, as a modbus.Device. Thread-safe."""

    def __init__(self, meters: dict[int, SimMeter], advanced_at: float) -> None:
        self.meters = meters
        self._advanced_at = advanced_at
        self._lock = threading.Lock()

    @classmethod
    def load(cls, path: Path, count: int) -> MeterBank:
        saved: dict = {}
        saved_at = time.time()
        try:
            data = json.loads(path.read_text())
            saved, saved_at = data["meters"], float(data["saved_at"])
            log.info("continuing from %s (saved %.0f s ago)", path, time.time() - saved_at)
        except FileNotFoundError:
            log.info("no state file %s: starting new meters", path)
        except (ValueError, KeyError, TypeError) as exc:
            log.error("state file %s is unreadable (%s): starting new meters", path, exc)
        meters = {}
        for unit in range(1, count + 1):
            state = saved.get(str(unit))
            if state is None:
                meters[unit] = SimMeter(unit, kwh=1000.0 * unit)
            else:
                meters[unit] = SimMeter(unit, float(state["kwh"]), int(state["mode"]),
                                        state.get("frozen"))
        # Downtime counts: real meters keep measuring while their gateway is away.
        return cls(meters, min(saved_at, time.time()))

    def save(self, path: Path) -> None:
        with self._lock:
            self._advance(time.time())
            data = {"saved_at": self._advanced_at,
                    "meters": {str(m.unit): {"kwh": m.kwh, "mode": m.mode, "frozen": m.frozen}
                               for m in self.meters.values()}}
        tmp = path.with_name(path.name + ".tmp")
        with open(tmp, "w", encoding="utf-8") as handle:
            json.dump(data, handle, sort_keys=True)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)

    def _advance(self, now: float) -> None:
        elapsed = now - self._advanced_at
        if elapsed <= 0:
            return
        for meter in self.meters.values():
            meter.kwh += load_kw(meter.unit, now) * elapsed / 3600.0
        self._advanced_at = now

    def _meter(self, unit: int, function: int) -> SimMeter:
        meter = self.meters.get(unit)
        if meter is None:
            raise modbus.ModbusError(function, modbus.GATEWAY_TARGET_FAILED)
        return meter

    def read(self, unit: int, function: int, address: int, count: int) -> list[int]:
        with self._lock:
            meter = self._meter(unit, function)
            if meter.mode == regs.MODES["offline"]:
                raise modbus.NoResponse
            if function == modbus.READ_HOLDING_REGISTERS and (address, count) == (
                    regs.MODE_REGISTER, 1):
                return [meter.mode]
            end = address + count
            if end > regs.MEASUREMENT_COUNT:
                raise modbus.ModbusError(function, modbus.ILLEGAL_DATA_ADDRESS)
            now = time.time()
            self._advance(now)
            return meter.registers(now)[address:end]

    def write(self, unit: int, address: int, value: int) -> None:
        with self._lock:
            meter = self._meter(unit, modbus.WRITE_SINGLE_REGISTER)
            if address != regs.MODE_REGISTER:
                raise modbus.ModbusError(modbus.WRITE_SINGLE_REGISTER,
                                         modbus.ILLEGAL_DATA_ADDRESS)
            if value not in regs.MODE_NAMES:
                raise modbus.ModbusError(modbus.WRITE_SINGLE_REGISTER, modbus.ILLEGAL_DATA_VALUE)
            now = time.time()
            self._advance(now)
            self._set_mode(meter, value, now)
            log.info("unit %d: mode %s", unit, regs.MODE_NAMES[value])

    @staticmethod
    def _set_mode(meter: SimMeter, mode: int, now: float) -> None:
        name = regs.MODE_NAMES[mode]
        if name == "stuck":
            if meter.frozen is None:
                meter.frozen = meter.registers(now)
        else:
            meter.frozen = None
        # reset and spike act once, then the meter runs normally again
        if name == "reset":
            meter.kwh = 0.0
            mode = regs.MODES["normal"]
        elif name == "spike":
            meter.kwh += SPIKE_KWH
            mode = regs.MODES["normal"]
        meter.mode = mode


def main(argv: Sequence[str] | None = None) -> int:
    cfg = service.parse_config("Simulated Modbus TCP energy meters.", ("meter_sim",), argv)
    sim = cfg.meter_sim
    stop = service.stop_event()
    try:
        sim.state_path.parent.mkdir(parents=True, exist_ok=True)
        bank = MeterBank.load(sim.state_path, sim.meters)
        server = modbus.Server((sim.listen, sim.port), bank)
    except OSError as exc:
        log.error("cannot start on %s:%d: %s", sim.listen, sim.port, exc)
        return 1
    threading.Thread(target=server.serve_forever, name="modbus", daemon=True).start()
    log.info("serving %d meters (units 1..%d) on %s:%d", sim.meters, sim.meters,
             sim.listen, sim.port)
    try:
        while not stop.wait(SAVE_INTERVAL_S):
            bank.save(sim.state_path)
    finally:
        server.shutdown()
        server.server_close()
        bank.save(sim.state_path)
        log.info("state saved to %s", sim.state_path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Interval energy from a cumulative kWh counter, with the counter checks of DESIGN section 6:
a drop under 10 % is a dip (warning, no energy), 10 % or more a counter reset (energy counts
again from zero), a negative reading an error (ignored), and a step whose mean power exceeds the
physical maximum a spike (flagged, no energy)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

DIP_LIMIT = 0.10


@dataclass(frozen=True)
class Sample:
    ts: datetime
    kwh: float


@dataclass
class Interval:
    start: datetime
    energy_kwh: float = 0.0
    samples: int = 0
    flags: set[str] = field(default_factory=set)


def interval_start(ts: datetime, minutes: int) -> datetime:
    seconds = minutes * 60
    return datetime.fromtimestamp(ts.timestamp() // seconds * seconds, UTC)


def step(previous: Sample, current: Sample, max_power_kw: float) -> tuple[float, str | None]:
    """(energy in kWh, flag or None) for one pair of consecutive non-negative readings."""
    delta = current.kwh - previous.kwh
    if delta < 0:
        if -delta / previous.kwh < DIP_LIMIT:
            return 0.0, "dip"
        energy, flag = current.kwh, "reset"
    else:
        energy, flag = delta, None
    hours = (current.ts - previous.ts) / timedelta(hours=1)
    if energy > max_power_kw * hours:
        return 0.0, "spike"
    return energy, flag


def rollup(baseline: Sample | None, samples: Iterable[Sample], minutes: int,
           max_power_kw: float) -> list[Interval]:
    """Intervals for `samples` (ordered by time); `baseline` is the last good reading before.
    A step's energy belongs to the interval of its later reading."""
    intervals: dict[datetime, Interval] = {}
    for sample in samples:
        start = interval_start(sample.ts, minutes)
        interval = intervals.setdefault(start, Interval(start))
        interval.samples += 1
        if sample.kwh < 0:
            interval.flags.add("negative")
            continue
        if baseline is not None:
            energy, flag = step(baseline, sample, max_power_kw)
            interval.energy_kwh += energy
            if flag:
                interval.flags.add(flag)
            if flag == "dip":  # a dip is noise: keep measuring from the higher value
                continue
        baseline = sample
    return list(intervals.values())

"""ems.conf loading: typed sections, defaults, and one-line errors with exit status 2."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from kangpai_ems import config

from .helpers import run_ems, write_config

FULL = """\
[ems]
state_dir = /var/lib/kangpai-ems
license_file = /etc/kangpai-ems/license.json
log_level = INFO
[database]
host = 10.231.0.12
port = 5432
name = ems
user = ems
password = se%cret
connect_timeout_s = 5
[collector]
gateway_id = ems-gw1
platform_url = http://10.231.0.11:8080/
poll_interval_s = 900
timeout_s = 2.0
retries = 2
forward_interval_s = 5
forward_batch = 500
status_listen = 0.0.0.0
status_port = 8081
spool_path = /var/lib/kangpai-ems/spool.db
[meters]
# meter id = host:port:unit
m01 = 10.231.0.14:502:1
m02 = 10.231.0.14:502:2
"""


def test_full_file_loads_typed(tmp_path: Path) -> None:
    path = tmp_path / "ems.conf"
    path.write_text(FULL)
    cfg = config.load(path)
    assert cfg.database.password == "se%cret"  # noqa: S105 (a literal "%", no interpolation)
    assert "se%cret" not in repr(cfg.database)
    assert cfg.collector.platform_url == "http://10.231.0.11:8080"
    assert cfg.collector.timeout_s == 2.0 and cfg.collector.retries == 2
    assert cfg.meters["m02"] == config.MeterAddress("10.231.0.14", 502, 2)
    with pytest.raises(config.ConfigError, match=r"missing section \[platform\]"):
        getattr(cfg, "platform")  # noqa: B009 (the property raises on access)


def test_defaults_for_optional_keys(tmp_path: Path) -> None:
    path = write_config(tmp_path / "ems.conf", {"aggregate": {}, "meter_sim": {}})
    cfg = config.load(path)
    assert (cfg.aggregate.interval_minutes, cfg.aggregate.max_power_kw) == (15, 1000.0)
    assert cfg.meter_sim.meters == 8 and cfg.meter_sim.port == 502
    assert cfg.meter_sim.state_path == Path("/var/lib/kangpai-ems/meter-sim.json")


@pytest.mark.parametrize(("sections", "problem"), [
    ({"aggregate": {"interval_minutes": 7}}, "must divide a day"),
    ({"collector": {"gateway_id": "g", "platform_url": "ftp://x"}}, "http(s) URL"),
    ({"meters": {"m01": "10.0.0.1:502"}}, "host:port:unit"),
    ({"database": {"host": "db", "port": "five"}}, "not a valid int"),
])
def test_bad_values_are_named(tmp_path: Path, sections: dict, problem: str) -> None:
    cfg = config.load(write_config(tmp_path / "ems.conf", sections))
    section = next(iter(sections))
    with pytest.raises(config.ConfigError, match=re.escape(problem)):
        getattr(cfg, section)


@pytest.mark.parametrize("module", ["platform", "collector", "meter_sim", "migrate", "aggregate"])
def test_program_with_missing_section_exits_2(tmp_path: Path, module: str) -> None:
    result = run_ems(module, write_config(tmp_path / "ems.conf", {"ems": {}}))
    assert result.returncode == 2
    assert "missing section" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_missing_file_exits_2(tmp_path: Path) -> None:
    result = run_ems("platform", tmp_path / "nope.conf")
    assert result.returncode == 2
    assert "cannot read" in result.stderr

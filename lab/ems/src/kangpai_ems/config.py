"""The one loader of /etc/kangpai-ems/ems.conf (INI); each section becomes a typed dataclass."""

from __future__ import annotations

import configparser
from dataclasses import dataclass
from pathlib import Path


class ConfigError(Exception):
    """The configuration file is missing, unreadable or has a bad value."""


@dataclass(frozen=True)
class EmsSection:
    state_dir: Path
    license_file: Path
    log_level: str


@dataclass(frozen=True)
class DatabaseSection:
    host: str
    port: int
    name: str
    user: str
    password: str
    connect_timeout_s: int

    def __repr__(self) -> str:  # keeps the password out of logs and tracebacks
        return f"DatabaseSection({self.user}@{self.host}:{self.port}/{self.name})"


@dataclass(frozen=True)
class PlatformSection:
    listen: str
    port: int


@dataclass(frozen=True)
class AggregateSection:
    interval_minutes: int
    max_power_kw: float


@dataclass(frozen=True)
class CollectorSection:
    gateway_id: str
    platform_url: str
    poll_interval_s: float
    timeout_s: float
    retries: int
    forward_interval_s: float
    forward_batch: int
    status_listen: str
    status_port: int
    spool_path: Path
    history_hours: float


@dataclass(frozen=True)
class MeterAddress:
    host: str
    port: int
    unit: int


@dataclass(frozen=True)
class MeterSimSection:
    listen: str
    port: int
    meters: int
    state_path: Path


class Config:
    """Typed access to ems.conf; a section is only validated when a program asks for it."""

    def __init__(self, parser: configparser.ConfigParser, path: str) -> None:
        self._parser = parser
        self.path = path

    def _section(self, name: str) -> configparser.SectionProxy:
        if not self._parser.has_section(name):
            raise ConfigError(f"{self.path}: missing section [{name}]")
        return self._parser[name]

    def _get(self, section: str, key: str, kind: type = str, default: object = None) -> object:
        sect = self._section(section)
        if key not in sect:
            if default is None:
                raise ConfigError(f"{self.path}: [{section}] needs {key}")
            return default
        raw = sect[key].strip()
        try:
            return kind(raw)
        except ValueError:
            raise ConfigError(
                f"{self.path}: [{section}] {key} = {raw!r} is not a valid {kind.__name__}"
            ) from None

    @property
    def ems(self) -> EmsSection:
        if not self._parser.has_section("ems"):
            return EmsSection(Path("/var/lib/kangpai-ems"),
                              Path("/etc/kangpai-ems/license.json"), "INFO")
        level = str(self._get("ems", "log_level", str, "INFO")).upper()
        if level not in ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"):
            raise ConfigError(f"{self.path}: [ems] log_level = {level!r} is not a log level")
        return EmsSection(
            state_dir=Path(self._get("ems", "state_dir", str, "/var/lib/kangpai-ems")),
            license_file=Path(
                self._get("ems", "license_file", str, "/etc/kangpai-ems/license.json")
            ),
            log_level=level,
        )

    @property
    def database(self) -> DatabaseSection:
        return DatabaseSection(
            host=self._get("database", "host"),
            port=self._get("database", "port", int, 5432),
            name=self._get("database", "name", str, "ems"),
            user=self._get("database", "user", str, "ems"),
            password=self._get("database", "password", str, ""),
            connect_timeout_s=self._get("database", "connect_timeout_s", int, 5),
        )

    @property
    def platform(self) -> PlatformSection:
        return PlatformSection(
            listen=self._get("platform", "listen", str, "0.0.0.0"),  # noqa: S104
            port=self._get("platform", "port", int, 8080),
        )

    @property
    def aggregate(self) -> AggregateSection:
        minutes = self._get("aggregate", "interval_minutes", int, 15)
        if minutes <= 0 or 1440 % minutes:
            raise ConfigError(
                f"{self.path}: [aggregate] interval_minutes = {minutes} must divide a day"
            )
        return AggregateSection(
            interval_minutes=minutes,
            max_power_kw=self._get("aggregate", "max_power_kw", float, 1000.0),
        )

    @property
    def collector(self) -> CollectorSection:
        state_dir = self.ems.state_dir
        url = str(self._get("collector", "platform_url")).rstrip("/")
        if not url.startswith(("http://", "https://")):
            raise ConfigError(f"{self.path}: [collector] platform_url must be an http(s) URL")
        return CollectorSection(
            gateway_id=self._get("collector", "gateway_id"),
            platform_url=url,
            poll_interval_s=self._positive("collector", "poll_interval_s", 900.0),
            timeout_s=self._positive("collector", "timeout_s", 2.0),
            retries=self._retries(),
            forward_interval_s=self._positive("collector", "forward_interval_s", 5.0),
            forward_batch=int(self._positive("collector", "forward_batch", 500, int)),
            status_listen=self._get("collector", "status_listen", str, "0.0.0.0"),  # noqa: S104
            status_port=self._get("collector", "status_port", int, 8081),
            spool_path=Path(self._get("collector", "spool_path", str,
                                      str(state_dir / "spool.db"))),
            history_hours=self._history_hours(),
        )

    @property
    def meters(self) -> dict[str, MeterAddress]:
        meters = {}
        for meter_id, value in self._section("meters").items():
            parts = value.strip().rsplit(":", 2)
            try:
                host, port, unit = parts[0], int(parts[1]), int(parts[2])
            except (IndexError, ValueError):
                raise ConfigError(
                    f"{self.path}: [meters] {meter_id} = {value!r} is not host:port:unit"
                ) from None
            if not 0 <= unit <= 255:
                raise ConfigError(f"{self.path}: [meters] {meter_id}: unit {unit} not in 0..255")
            meters[meter_id] = MeterAddress(host, port, unit)
        return meters

    @property
    def meter_sim(self) -> MeterSimSection:
        state_dir = self.ems.state_dir
        meters = self._get("meter_sim", "meters", int, 8)
        if not 1 <= meters <= 247:
            raise ConfigError(f"{self.path}: [meter_sim] meters = {meters} not in 1..247")
        return MeterSimSection(
            listen=self._get("meter_sim", "listen", str, "0.0.0.0"),  # noqa: S104
            port=self._get("meter_sim", "port", int, 502),
            meters=meters,
            state_path=Path(self._get("meter_sim", "state_path", str,
                                      str(state_dir / "meter-sim.json"))),
        )

    def _retries(self) -> int:
        retries = self._get("collector", "retries", int, 2)
        if retries < 0:
            raise ConfigError(f"{self.path}: [collector] retries must be >= 0")
        return retries

    def _history_hours(self) -> float:
        hours = self._get("collector", "history_hours", float, 72.0)
        if hours < 0:
            raise ConfigError(f"{self.path}: [collector] history_hours must be >= 0")
        return hours

    def _positive(self, section: str, key: str, default: float, kind: type = float) -> float:
        value = self._get(section, key, kind, default)
        if value <= 0:
            raise ConfigError(f"{self.path}: [{section}] {key} must be > 0")
        return value


def load(path: str | Path) -> Config:
    # No interpolation: a password may contain "%".
    parser = configparser.ConfigParser(interpolation=None)
    try:
        with open(path, encoding="utf-8") as handle:
            parser.read_file(handle)
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror}") from None
    except configparser.Error as exc:
        raise ConfigError(f"{path}: {exc}") from None
    return Config(parser, str(path))

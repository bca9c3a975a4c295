"""Gateway daemon: polls meters over Modbus TCP into a durable spool, forwards the spool to the
platform in order, and marks readings sent only after the platform confirmed their commit (they
stay as history for `history_hours`, see `kangpai_ems.replay`).
Serves GET /health (JSON) and GET /metrics (Prometheus text) on the status port."""

from __future__ import annotations

import json
import logging
import sqlite3
import threading
import time
import urllib.error
import urllib.request
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

from . import config, httpjson, modbus, service
from . import meter_registers as regs
from ._release import VERSION
from .spool import Spool
from .timeutil import iso, utcnow

log = logging.getLogger("kangpai_ems.collector")

FORWARD_TIMEOUT_S = 30.0
# The window of /health's `last_hour` counters (DESIGN §6: read-error ratio over the last hour).
WINDOW_S = 3600.0


@dataclass
class MeterStats:
    last_good_read: datetime | None = None
    reads: int = 0
    errors: int = 0
    # (monotonic time, read ok) of every poll within the last WINDOW_S.
    recent: deque = field(default_factory=deque)

    def record(self, ok: bool) -> None:
        now = time.monotonic()
        self.recent.append((now, ok))
        while self.recent and self.recent[0][0] < now - WINDOW_S:
            self.recent.popleft()

    def last_hour(self) -> dict:
        since = time.monotonic() - WINDOW_S
        polls = [ok for at, ok in self.recent if at >= since]
        return {"reads": sum(polls), "errors": len(polls) - sum(polls)}


class ForwardError(Exception):
    """The platform did not confirm the batch."""


class Collector:
    def __init__(self, cfg: config.CollectorSection, meters: dict[str, config.MeterAddress],
                 spool: Spool) -> None:
        self.cfg = cfg
        self.meters = meters
        self.spool = spool
        self.stats = {meter_id: MeterStats() for meter_id in meters}
        self.last_forward_ok: datetime | None = None
        self.last_forward_error: str | None = None
        self._lock = threading.Lock()
        # One connection per meter endpoint: meters behind one Modbus gateway share it.
        self._clients = {(a.host, a.port): modbus.Client(a.host, a.port, cfg.timeout_s)
                         for a in meters.values()}
        # Ignore http_proxy and friends: the platform is on the site LAN.
        self._http = urllib.request.build_opener(urllib.request.ProxyHandler({}))

    # --- polling ---------------------------------------------------------------------------

    def run_poller(self, stop: threading.Event) -> None:
        next_at = time.monotonic()
        while not stop.is_set():
            for meter_id, address in self.meters.items():
                if stop.is_set():
                    return
                try:
                    self.read_meter(meter_id, address)
                except Exception:  # the poller outlives a bug in one read
                    log.exception("meter %s: unexpected failure", meter_id)
            next_at += self.cfg.poll_interval_s
            now = time.monotonic()
            if next_at < now:  # a poll overran its interval: start the next one now
                log.warning("poll took longer than poll_interval_s=%s", self.cfg.poll_interval_s)
                next_at = now
            stop.wait(next_at - now)

    def read_meter(self, meter_id: str, address: config.MeterAddress) -> None:
        client = self._clients[(address.host, address.port)]
        error: Exception | None = None
        for _attempt in range(self.cfg.retries + 1):
            try:
                measurement = regs.read(client, address.unit)
            except (OSError, modbus.FrameError, modbus.ModbusError) as exc:
                error = exc
                continue
            moment = utcnow()
            try:
                self.spool.add(meter_id, iso(moment), moment.timestamp(), measurement.kwh,
                               measurement.voltage, measurement.current, measurement.power)
            except sqlite3.Error as exc:
                error = exc
                break
            with self._lock:
                stats = self.stats[meter_id]
                stats.reads += 1
                stats.last_good_read = moment
                stats.record(True)
            return
        with self._lock:
            self.stats[meter_id].errors += 1
            self.stats[meter_id].record(False)
        log.warning("meter %s (%s:%d unit %d): read failed after %d attempts: %s",
                    meter_id, address.host, address.port, address.unit, self.cfg.retries + 1,
                    f"{type(error).__name__}: {error}" if error else "unknown")

    # --- forwarding ------------------------------------------------------------------------

    def run_forwarder(self, stop: threading.Event) -> None:
        while not stop.is_set():
            more = False
            try:
                more = self.forward_once()
            except Exception as exc:  # the forwarder outlives any failure; readings stay spooled
                message = f"{type(exc).__name__}: {exc}"
                if self.last_forward_error is None:
                    log.warning("forwarding to %s failed, readings stay spooled: %s",
                                self.cfg.platform_url, message)
                self.last_forward_error = message
            if not more:
                stop.wait(self.cfg.forward_interval_s)

    def forward_once(self) -> bool:
        """Send the oldest batch (an empty one is a heartbeat); True if more may be waiting."""
        batch = self.spool.oldest(self.cfg.forward_batch)
        body = json.dumps({"gateway_id": self.cfg.gateway_id, "version": VERSION,
                           "readings": [r.as_payload() for r in batch]}).encode()
        request = urllib.request.Request(  # noqa: S310 (config allows only http/https URLs)
            self.cfg.platform_url + "/api/v1/ingest", data=body, method="POST",
            headers={"Content-Type": "application/json",
                     "User-Agent": f"kangpai-ems-collector/{VERSION}"})
        try:
            with self._http.open(request, timeout=FORWARD_TIMEOUT_S) as response:
                answer = json.loads(response.read())
        except urllib.error.HTTPError as exc:
            raise ForwardError(f"platform answered {exc.code}: {exc.read()[:200]!r}") from None
        if not isinstance(answer, dict) or answer.get("committed") != len(batch):
            raise ForwardError(f"platform did not confirm {len(batch)} readings: {answer!r}")
        self.spool.confirm(batch)
        self.last_forward_ok = utcnow()
        if self.last_forward_error is not None:
            log.info("forwarding to %s works again", self.cfg.platform_url)
            self.last_forward_error = None
        if batch:
            log.debug("forwarded %d readings", len(batch))
        return len(batch) == self.cfg.forward_batch

    # --- status ----------------------------------------------------------------------------

    def health(self, _request: httpjson.Request) -> httpjson.Response:
        size, age = self.spool.backlog()
        kept, whole_since = self.spool.history()
        with self._lock:
            meters = {meter_id: {"last_good_read": iso(s.last_good_read), "reads": s.reads,
                                 "errors": s.errors, "last_hour": s.last_hour()}
                      for meter_id, s in self.stats.items()}
        return httpjson.Response(200, {
            "status": "ok", "version": VERSION, "gateway_id": self.cfg.gateway_id,
            "meters": meters, "backlog": {"size": size, "oldest_age_s": age},
            "history": {"size": kept,
                        "whole_since": iso(datetime.fromtimestamp(whole_since, UTC))},
            "last_forward_ok": iso(self.last_forward_ok),
            "last_forward_error": self.last_forward_error,
        })

    def metrics(self, _request: httpjson.Request) -> httpjson.Response:
        gw = _label(self.cfg.gateway_id)
        size, age = self.spool.backlog()
        lines = [
            "# HELP kangpai_collector_info Collector version.",
            "# TYPE kangpai_collector_info gauge",
            f'kangpai_collector_info{{gateway="{gw}",version="{_label(VERSION)}"}} 1',
        ]
        with self._lock:
            stats = sorted(self.stats.items())
        for name, kind, help_text, value in (
            ("reads_total", "counter", "Successful meter reads.", lambda s: s.reads),
            ("read_errors_total", "counter", "Meter reads that failed after all retries.",
             lambda s: s.errors),
            ("last_good_read_timestamp_seconds", "gauge",
             "Unix time of the last good read (0: none yet).",
             lambda s: s.last_good_read.timestamp() if s.last_good_read else 0),
        ):
            lines += [f"# HELP kangpai_collector_{name} {help_text}",
                      f"# TYPE kangpai_collector_{name} {kind}"]
            lines += [f'kangpai_collector_{name}{{gateway="{gw}",meter="{_label(m)}"}} '
                      f"{value(s)}" for m, s in stats]
        forward_ok = self.last_forward_ok.timestamp() if self.last_forward_ok else 0
        lines += [
            "# HELP kangpai_collector_backlog_size Readings spooled, not yet confirmed.",
            "# TYPE kangpai_collector_backlog_size gauge",
            f'kangpai_collector_backlog_size{{gateway="{gw}"}} {size}',
            "# HELP kangpai_collector_backlog_oldest_age_seconds Age of the oldest spooled "
            "reading (0: empty).",
            "# TYPE kangpai_collector_backlog_oldest_age_seconds gauge",
            f'kangpai_collector_backlog_oldest_age_seconds{{gateway="{gw}"}} {age or 0}',
            "# HELP kangpai_collector_last_forward_ok_timestamp_seconds Unix time the platform "
            "last confirmed a batch (0: never).",
            "# TYPE kangpai_collector_last_forward_ok_timestamp_seconds gauge",
            f'kangpai_collector_last_forward_ok_timestamp_seconds{{gateway="{gw}"}} {forward_ok}',
        ]
        return httpjson.Response(200, text="\n".join(lines) + "\n",
                                 content_type="text/plain; version=0.0.4; charset=utf-8")

    def close(self) -> None:
        for client in self._clients.values():
            client.close()


def _label(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def main(argv: Sequence[str] | None = None) -> int:
    cfg = service.parse_config("Kangpai EMS gateway collector.", ("collector", "meters"), argv)
    settings, meters = cfg.collector, cfg.meters
    stop = service.stop_event()
    try:
        spool = Spool(settings.spool_path, settings.history_hours * 3600)
    except (OSError, sqlite3.Error) as exc:
        log.error("cannot open spool %s: %s", settings.spool_path, exc)
        return 1
    collector = Collector(settings, meters, spool)
    try:
        server = httpjson.start(settings.status_listen, settings.status_port, {
            ("GET", "/health"): collector.health, ("GET", "/metrics"): collector.metrics})
    except OSError as exc:
        log.error("cannot listen on %s:%d: %s", settings.status_listen, settings.status_port,
                  exc)
        spool.close()
        return 1
    workers = [threading.Thread(target=collector.run_poller, args=(stop,), name="poller"),
               threading.Thread(target=collector.run_forwarder, args=(stop,), name="forwarder")]
    for worker in workers:
        worker.start()
    log.info("collector %s %s: %d meters every %ss, forwarding to %s, status on %s:%d",
             settings.gateway_id, VERSION, len(meters), settings.poll_interval_s,
             settings.platform_url, settings.status_listen, settings.status_port)
    stop.wait()
    for worker in workers:
        worker.join()
    server.shutdown()
    server.server_close()
    collector.close()
    size, _ = spool.backlog()
    spool.close()
    log.info("stopped; %d readings stay spooled for the next start", size)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

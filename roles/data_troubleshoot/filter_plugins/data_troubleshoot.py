"""Filters of role data_troubleshoot: the SQL analysis's meters, the gaps a gateway is asked
about, and the findings of a run (pure functions over the JSON the hosts returned)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

OK, WARN, FAIL = "ok", "warn", "fail"
RANK = {OK: 0, WARN: 1, FAIL: 2}
# Gaps a gateway is asked about in one run: they travel on its script's command line, which
# holds at most 128 KiB per argument (the rest are reported as not looked up).
MAX_LOCATE = 500


def _epoch(text: str | None) -> float | None:
    return None if not text else datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def meters_spec(gateways: list[dict], selected: list[str], interval_s: float,
                max_power_kw: float, meter_max_power_kw: dict[str, float]) -> list[dict]:
    """[{meter_id, gateway_id, interval_s, max_power_kw}] for the SQL: every meter a gateway
    polls (at its poll interval), or only the selected ones (a selected meter no gateway polls
    is still analysed, at the standard interval)."""
    spec: dict[str, dict] = {}
    for gw in gateways:
        for meter in gw.get("meters", []):
            spec[meter] = {"meter_id": meter, "gateway_id": gw.get("gateway_id"),
                           "interval_s": float(gw.get("poll_interval_s") or interval_s)}
    for meter in selected:
        spec.setdefault(meter, {"meter_id": meter, "gateway_id": None,
                                "interval_s": float(interval_s)})
    chosen = [spec[m] for m in sorted(spec) if not selected or m in selected]
    for item in chosen:
        item["max_power_kw"] = float(meter_max_power_kw.get(item["meter_id"], max_power_kw))
    return chosen


def gaps_of(analysis: dict, gateway_id: str | None) -> list[dict]:
    """The gaps of the meters `gateway_id` polls, as `ems-gateway-data locate` takes them."""
    return [{"meter_id": meter, "from": gap["from"], "to": gap["to"]}
            for meter, info in sorted((analysis.get("meters") or {}).items())
            if info.get("gateway_id") == gateway_id
            for gap in info.get("gaps", [])][:MAX_LOCATE]


def _finding(meter: str | None, gateway: str | None, fid: str, severity: str, evidence: str,
             **data: Any) -> dict:
    return {"meter": meter, "gateway": gateway, "id": fid, "severity": severity,
            "evidence": evidence, "fix": None, "onsite": False, **data}


def _collection(gateways: dict[str, dict], meters: set[str], thresholds: dict) -> list[dict]:
    out = []
    for host, gw in sorted(gateways.items()):
        health = gw.get("health")
        if health is None:
            out.append(_finding(None, host, "collection.down", FAIL,
                                f"collector status on {host} did not answer: "
                                f"{gw.get('health_error') or gw.get('error')}"))
            continue
        now = _epoch(gw["probed_at"])  # ages by the gateway's own clock
        stale_s = max(thresholds["meter_stale_factor"] * gw["poll_interval_s"],
                      thresholds["meter_stale_min_s"])
        for meter, m in sorted((health.get("meters") or {}).items()):
            if meters and meter not in meters:
                continue
            last = _epoch(m.get("last_good_read"))
            age = None if last is None else round(now - last, 1)
            if age is None or age > stale_s:
                out.append(_finding(
                    meter, host, "collection.meter_silent", FAIL,
                    f"{meter}: no good read for {'ever' if age is None else f'{age:.0f} s'}"
                    f" (stale past {stale_s:.0f} s), {m.get('errors', 0)} failed polls since the"
                    " collector started: check the meter's wiring, power and Modbus address",
                    last_good_read=m.get("last_good_read"), onsite=True))
            hour = m.get("last_hour") or {}
            polls = (hour.get("reads") or 0) + (hour.get("errors") or 0)
            pct = 100.0 * (hour.get("errors") or 0) / polls if polls else 0.0
            if pct > thresholds["read_error_warn_pct"]:
                out.append(_finding(
                    meter, host, "collection.read_errors",
                    FAIL if pct > thresholds["read_error_fail_pct"] else WARN,
                    f"{meter}: {pct:.1f} % of polls failed over the last hour "
                    f"({hour.get('errors')} of {polls})", pct=round(pct, 1)))
        backlog = health.get("backlog") or {}
        if (backlog.get("oldest_age_s") or 0) > thresholds["backlog_warn_age_s"]:
            out.append(_finding(None, host, "collection.backlog", WARN,
                                f"{backlog.get('size')} readings wait in the spool, the oldest "
                                f"for {backlog['oldest_age_s']:.0f} s",
                                backlog=backlog))
    return out


def report(symptom: str, analysis: dict, verified: dict | None, gateways: dict[str, dict],
           located: dict[str, dict], fixes: list[dict], thresholds: dict) -> dict:
    """The run's results: per meter what the window holds, the findings (each with its time
    range, the fix applied or why none is safe, and whether it needs on-site work), the fixes."""
    final = verified or analysis
    by_gateway_id = {gw.get("gateway_id"): host for host, gw in gateways.items()}
    where: dict[tuple[str, str, str], dict] = {}
    for host, loc in located.items():
        for gap in loc.get("gaps", []):
            where[(gap["meter_id"], gap["from"], gap["to"])] = {"gateway": host, **gap}
    replayed_on = {f["gateway"] for f in fixes if f.get("action") == "replay"}
    # Readings in each held gap's range after the fixes (the verification counts them).
    counted = {(r["meter_id"], r["from"], r["to"]): r["readings"]
               for r in (verified or {}).get("ranges", [])}
    findings: list[dict] = []
    meters_out: dict[str, dict] = {}
    for meter, info in sorted((analysis.get("meters") or {}).items()):
        after = (final.get("meters") or {}).get(meter, info)
        host = by_gateway_id.get(info.get("gateway_id"))
        seen = set()
        for gap in info.get("gaps", []):
            key = (meter, gap["from"], gap["to"])
            seen.add(key)
            loc = where.get(key)
            history, waiting = (loc or {}).get("history", 0), (loc or {}).get("waiting", 0)
            place = ("unknown" if loc is None else "gateway history" if history
                     else "gateway spool" if waiting else "nowhere")
            f = _finding(meter, host, "data.gap", WARN,
                         f"{meter}: no readings from {gap['from']} to {gap['to']} "
                         f"({gap['seconds']} s, about {gap['missing']} missing); readings in "
                         f"{place}" + (f" ({history} in history, {waiting} waiting)"
                                       if history or waiting else ""),
                         **{"from": gap["from"], "to": gap["to"]}, missing=gap["missing"],
                         location=place, history=history, waiting=waiting)
            if place == "nowhere":
                f["fix"] = "none: the gateway holds no readings of this range (not read)"
            elif place == "unknown":
                f["fix"] = (f"not looked up: its gateway is not in the run, or it has more than "
                            f"{MAX_LOCATE} gaps (narrow the window or the meters)")
            elif key in counted and (host in replayed_on or waiting):
                now_in = counted[key]
                f["readings_after"] = now_in
                f["fixed"] = now_in >= history + waiting
                f["fix"] = (f"filled from the gateway: {now_in} readings now in the range"
                            if f["fixed"] else
                            f"sent again from the gateway: {now_in} of {history + waiting} "
                            "readings in the database so far")
                f["severity"] = OK if f["fixed"] else WARN
            else:
                f["fix"] = "not applied (fixes off): replay from the gateway would fill it"
            findings.append(f)
        # Gaps that show only after a fix, inside a filled one: read by no gateway.
        for gap in after.get("gaps", []) if verified else []:
            if (meter, gap["from"], gap["to"]) not in seen:
                findings.append(_finding(
                    meter, host, "data.gap", WARN,
                    f"{meter}: no readings from {gap['from']} to {gap['to']} "
                    f"({gap['seconds']} s, about {gap['missing']} missing), left after the "
                    "gateway sent what it held; readings nowhere",
                    **{"from": gap["from"], "to": gap["to"]}, missing=gap["missing"],
                    location="nowhere", history=0, waiting=0,
                    fix="none: the gateway holds no readings of this range (not read)"))
        for day in info.get("days", []):
            if day["pct"] is not None and day["pct"] < thresholds["completeness_min_pct"]:
                after_day = next((d for d in after.get("days", []) if d["day"] == day["day"]),
                                 day)
                f = _finding(meter, host, "data.completeness", WARN,
                             f"{meter}: {day['samples']} of {day['expected']} expected samples "
                             f"on {day['day']} ({day['pct']} %, minimum "
                             f"{thresholds['completeness_min_pct']} %)",
                             day=day["day"], pct=day["pct"], pct_after=after_day["pct"])
                if after_day["pct"] is not None and after_day["pct"] >= \
                        thresholds["completeness_min_pct"]:
                    f["severity"], f["fix"], f["fixed"] = OK, "filled from the gateway", True
                findings.append(f)
        for drop in info.get("drops", []):
            if drop["kind"] == "dip":
                findings.append(_finding(
                    meter, host, "data.dip", WARN,
                    f"{meter}: counter dipped from {drop['from_kwh']} to {drop['to_kwh']} kWh at "
                    f"{drop['ts']} (less than {thresholds['dip_reset_pct']} %)",
                    **{"from": drop["prev_ts"], "to": drop["ts"]}))
            else:
                findings.append(_finding(
                    meter, host, "data.reset", FAIL,
                    f"{meter}: counter reset from {drop['from_kwh']} to {drop['to_kwh']} kWh at "
                    f"{drop['ts']}: a replaced or reset meter? confirm on site and record the "
                    "exchange", **{"from": drop["prev_ts"], "to": drop["ts"]}, onsite=True))
        for neg in info.get("negatives", []):
            findings.append(_finding(meter, host, "data.negative", FAIL,
                                     f"{meter}: negative counter {neg['kwh']} kWh at {neg['ts']}",
                                     **{"from": neg["ts"], "to": neg["ts"]}, onsite=True))
        for spike in info.get("spikes", []):
            findings.append(_finding(
                meter, host, "data.spike", WARN,
                f"{meter}: counter jumped {spike['delta_kwh']} kWh between {spike['prev_ts']} and "
                f"{spike['ts']} ({spike['power_kw']} kW mean, above the physical maximum "
                f"{info['max_power_kw']} kW)", **{"from": spike["prev_ts"], "to": spike["ts"]},
                power_kw=spike["power_kw"]))
        for run in info.get("stuck", []):
            findings.append(_finding(
                meter, host, "data.stuck", WARN,
                f"{meter}: counter stuck at {run['kwh']} kWh from {run['from']} to {run['to']} "
                f"({run['readings']} readings) while reporting {run['power']} W: check the "
                "meter", **{"from": run["from"], "to": run["to"]}, readings=run["readings"],
                onsite=True))
        meters_out[meter] = {**after, "readings_before": info.get("readings"),
                             "gaps_before": info.get("gaps", []), "gateway": host}
    meters = set(analysis.get("meters") or {})
    findings += _collection(gateways, meters, thresholds)
    status = max((f["severity"] for f in findings), key=RANK.__getitem__, default=OK)
    return {"symptom": symptom, "window": analysis.get("window"), "status": status,
            "meters": meters_out, "findings": findings, "fixes": fixes,
            "onsite": [f for f in findings if f["onsite"]]}


class FilterModule:
    def filters(self) -> dict:
        return {"data_troubleshoot_meters_spec": meters_spec,
                "data_troubleshoot_gaps_of": gaps_of,
                "data_troubleshoot_report": report}

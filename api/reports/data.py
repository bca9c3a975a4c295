"""Data troubleshooting reports: built from troubleshoot_data.yml's `data_troubleshoot` set_stats
(never from its output), kept as JSON + HTML under <data dir>/reports/data/<site>/<id>/ with an
index per site, through the inspection reports' machinery (api/reports/inspection.py).

Per meter the report carries a timeline of the window: each gap and flagged range as a share of
the window, so the HTML draws it rather than only listing it.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from api.reports import inspection as base

KIND = "data"
FINAL = base.FINAL
# Finding ids drawn on a meter's timeline, and what the drawing calls them.
MARKS = {"data.gap": "gap", "data.stuck": "stuck", "data.spike": "spike", "data.reset": "reset",
         "data.dip": "dip", "data.negative": "negative"}


def _epoch(text: str | None) -> float | None:
    return None if not text else datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def _timeline(meter: str, info: dict, findings: list[dict], since: float, until: float) -> dict:
    span = max(until - since, 1e-9)
    marks = []
    for f in findings:
        if f.get("meter") != meter or f["id"] not in MARKS or not f.get("from"):
            continue
        start = min(max(_epoch(f["from"]) - since, 0.0), span)
        end = min(max(_epoch(f.get("to") or f["from"]) - since, start), span)
        marks.append({"kind": MARKS[f["id"]], "severity": f["severity"],
                      "fixed": bool(f.get("fixed")), "from": f["from"], "to": f.get("to"),
                      "left_pct": round(100 * start / span, 2),
                      "width_pct": round(max(100 * (end - start) / span, 0.4), 2)})
    return {"meter": meter, "gateway": info.get("gateway"),
            "readings_before": info.get("readings_before"), "readings": info.get("readings"),
            "days": info.get("days", []), "marks": marks}


def build_report(stats: dict | None, *, site: str, job_id: str,
                 started: str | None = None) -> dict:
    """The report of one troubleshooting run from its `data_troubleshoot` set_stats."""
    result = (stats or {}).get("data_troubleshoot") or {}
    findings = result.get("findings", [])
    window = result.get("window") or {}
    since, until = _epoch(window.get("since")), _epoch(window.get("until"))
    timelines = ([_timeline(m, info, findings, since, until)
                  for m, info in sorted((result.get("meters") or {}).items())]
                 if since is not None and until is not None else [])
    counts = {s: sum(f["severity"] == s for f in findings) for s in (base.OK, base.WARN, base.FAIL)}
    return {
        "id": job_id, "site": site, "kind": KIND, "state": FINAL,
        "symptom": result.get("symptom"), "window": window,
        "started": started, "generated": datetime.now(UTC).isoformat(timespec="seconds"),
        "status": result.get("status", base.FAIL) if result else base.FAIL,
        "counts": counts, "timelines": timelines, "findings": findings,
        "fixes": result.get("fixes", []), "onsite": result.get("onsite", []),
        "fixed": sum(bool(f.get("fixed")) for f in findings),
    }


def render_html(report: dict) -> str:
    return base.render_html(report, f"{KIND}_report.html.j2")


def write_report(reports_dir: Path, report: dict) -> Path:
    return base.write_report(reports_dir, report, kind=KIND)


def job_report(ctx: Any, job: dict) -> dict:
    """The report of an ended troubleshoot_data job, written under the data dir."""
    from api.errors import Conflict, NotFound
    from api.store import TERMINAL

    if job["service"] != "troubleshoot_data":
        raise NotFound(f"job {job['id']} is a {job['service']} job: it has no data report")
    if job["state"] not in TERMINAL:
        raise Conflict(f"job {job['id']} is {job['state']}: its report comes when it ends")
    report = build_report(job["set_stats"], site=job["customer_id"], job_id=job["id"],
                          started=job["started_at"])
    report["generated"] = job["finished_at"]
    write_report(ctx.settings.data_dir / "reports" / KIND, report)
    return report

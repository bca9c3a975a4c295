"""Inspection reports: built from the playbook's `inspection` set_stats (never from its output),
kept as JSON + HTML under <data dir>/reports/inspections/<site>/<id>/ with an index per site.

Automated reports are final; manual ones are `awaiting_signoff` until an engineer signs them.
"""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from jinja2 import Environment, FileSystemLoader, select_autoescape

TEMPLATES = Path(__file__).resolve().parent.parent / "templates"
OK, WARN, FAIL = "ok", "warn", "fail"
RANK = {OK: 0, WARN: 1, FAIL: 2}
AUTOMATED, MANUAL = "automated", "manual"
FINAL, AWAITING_SIGNOFF, SIGNED = "final", "awaiting_signoff", "signed"
# DESIGN.md §6, in report order: (key, title, finding sections shown in it).
SECTIONS = (
    ("resources", "Server resources", ("resources",)),
    ("services", "Services", ("services", "probe")),
    ("database_backups", "Database and backups", ("database", "backups")),
    ("gateways", "Gateways and backlog", ("gateways",)),
    ("data_quality", "Data quality", ("data_quality",)),
    ("scheduled_tasks", "Scheduled tasks", ("scheduled_tasks",)),
    ("network", "Network", ("network", "time")),
)
# Findings that need someone at the site rather than a remote action.
ONSITE = re.compile(r"^(disk\.|inodes\.|network\.duplicate\.|meter\.m[^.]*$)")


def _worst(severities: list[str]) -> str:
    return max(severities, key=RANK.__getitem__, default=OK)


def build_report(stats: dict | None, *, site: str, mode: str, job_id: str,
                 started: str | None = None, previous: dict | None = None) -> dict:
    """The report of one inspection from its `inspection` set_stats ({host: probe answer})."""
    hosts = (stats or {}).get("inspection") or {}
    findings = [f for host in sorted(hosts) for f in hosts[host].get("findings", [])]
    sections = []
    for key, title, kinds in SECTIONS:
        items = [f for f in findings if f["section"] in kinds]
        sections.append({"key": key, "title": title, "status": _worst([f["severity"]
                                                                       for f in items]),
                         "findings": items})
    status = _worst([f["severity"] for f in findings]) if hosts else FAIL
    actions = [{"host": f["host"], "id": f["id"], "severity": f["severity"],
                "action": f["evidence"], "onsite": bool(ONSITE.match(f["id"]))}
               for f in findings if f["severity"] != OK]
    if not hosts:
        actions.append({"host": "-", "id": "inspection", "severity": FAIL, "onsite": False,
                        "action": "the inspection returned no host results: see the job's log"})
    version = next((f["evidence"].split()[1] for f in findings if f["id"] == "platform.health"
                    and f["severity"] == OK), None)
    pictures = {
        "resources": [_resource_bars(h, r.get("facts", {})) for h, r in sorted(hosts.items())],
        "completeness": next((f.get("grid", []) for f in findings
                              if f["id"] == "data.completeness"), []),
    }
    counts = {s: sum(f["severity"] == s for f in findings) for s in (OK, WARN, FAIL)}
    trend = None
    if previous:
        trend = {"previous_id": previous.get("id"), "previous_status": previous.get("status"),
                 "previous_counts": previous.get("counts"), "counts": counts}
    return {
        "id": job_id, "site": site, "mode": mode,
        "state": AWAITING_SIGNOFF if mode == MANUAL else FINAL,
        "started": started, "generated": datetime.now(UTC).isoformat(timespec="seconds"),
        "version": version, "status": status, "counts": counts,
        "hosts": {h: r.get("status", FAIL) for h, r in sorted(hosts.items())},
        "sections": sections, "actions": actions, "pictures": pictures, "trend": trend,
        "signoff": None,
    }


def _resource_bars(host: str, facts: dict) -> dict:
    res = facts.get("resources") or {}
    bars = [{"label": "memory", "pct": (res.get("memory") or {}).get("used_pct", 0)}]
    bars += [{"label": f"disk {m['mount']}", "pct": m["used_pct"]} for m in res.get("mounts", [])]
    bars += [{"label": f"inodes {m['mount']}", "pct": m["inodes_used_pct"]}
             for m in res.get("mounts", [])]
    load = res.get("load") or [0, 0, 0]
    cores = max(res.get("cores") or 1, 1)
    bars.append({"label": "load/core", "pct": round(min(100.0, 100 * load[1] / cores), 1)})
    return {"host": host, "bars": bars}


def sign(report: dict, *, by: str, remarks: str, at: str | None = None) -> dict:
    """The report with the engineer's signature (only a report awaiting one can be signed)."""
    if report["state"] != AWAITING_SIGNOFF:
        raise ValueError(f"report {report['id']} is {report['state']}: nothing to sign")
    return {**report, "state": SIGNED,
            "signoff": {"by": by, "remarks": remarks,
                        "at": at or datetime.now(UTC).isoformat(timespec="seconds")}}


def _env() -> Environment:
    return Environment(loader=FileSystemLoader(TEMPLATES),
                       autoescape=select_autoescape(["html", "html.j2"]))


def render_html(report: dict, template: str = "inspection_report.html.j2") -> str:
    return _env().get_template(template).render(report=report)


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "_", name) or "_"


def site_dir(reports_dir: Path, site: str) -> Path:
    return reports_dir / _safe(site)


def previous_report(reports_dir: Path, site: str, before_id: str) -> dict | None:
    """The newest earlier report of the same site (for the trend)."""
    reports = [r for r in load_reports(site_dir(reports_dir, site)) if r["id"] != before_id]
    return reports[0] if reports else None


def load_reports(folder: Path) -> list[dict]:
    out = []
    for path in folder.glob("*/report.json"):
        try:
            out.append(json.loads(path.read_text()))
        except (OSError, ValueError):
            continue
    return sorted(out, key=lambda r: r.get("generated") or "", reverse=True)


def write_report(reports_dir: Path, report: dict, *, kind: str = "inspection") -> Path:
    """Write <site>/<id>/report.json and report.html, then the site's index; returns the folder.
    `kind` names the templates (`<kind>_report.html.j2`, `<kind>_index.html.j2`)."""
    folder = site_dir(reports_dir, report["site"]) / _safe(report["id"])
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "report.json").write_text(json.dumps(report, indent=2, sort_keys=True) + "\n")
    (folder / "report.html").write_text(render_html(report, f"{kind}_report.html.j2"))
    index = folder.parent / "index.html"
    index.write_text(_env().get_template(f"{kind}_index.html.j2").render(
        site=report["site"], reports=load_reports(folder.parent)))
    return folder


def read_report(reports_dir: Path, site: str, report_id: str) -> dict | None:
    path = site_dir(reports_dir, site) / _safe(report_id) / "report.json"
    return json.loads(path.read_text()) if path.is_file() else None


def summary_rows(report: dict) -> list[tuple[str, str, str, str]]:
    """(host, severity, finding, evidence) for every finding above ok, worst first."""
    rows = [(a["host"], a["severity"], a["id"], a["action"]) for a in report["actions"]]
    return sorted(rows, key=lambda r: (-RANK[r[1]], r[0], r[2]))


# --- the API's reports: one per inspect job, rebuilt from the job's record and its sign-off ------

def job_report(ctx: Any, job: dict) -> dict:
    """The report of an ended inspect job, written under the data dir (and its site index)."""
    from api.errors import Conflict, NotFound
    from api.store import TERMINAL

    if job["service"] != "inspect":
        raise NotFound(f"job {job['id']} is a {job['service']} job: it has no inspection report")
    if job["state"] not in TERMINAL:
        raise Conflict(f"job {job['id']} is {job['state']}: its report comes when it ends")
    reports_dir = ctx.settings.data_dir / "reports" / "inspections"
    site = job["customer_id"]
    mode = (job["decision"].get("details") or {}).get("mode", AUTOMATED)
    report = build_report(job["set_stats"], site=site, mode=mode, job_id=job["id"],
                          started=job["started_at"],
                          previous=previous_report(reports_dir, site, job["id"]))
    report["generated"] = job["finished_at"]
    signature = ctx.store.signoff(job["id"])
    if signature is not None:
        report = sign(report, by=f"{signature['role']} token {signature['signed_by']}",
                      remarks=signature["remarks"], at=signature["signed_at"])
    write_report(reports_dir, report)
    return report


def sign_job_report(ctx: Any, job: dict, *, signed_by: str, role: str, remarks: str) -> dict:
    """Sign a manual inspection's report once; the report as it now reads."""
    from api.errors import Conflict

    report = job_report(ctx, job)
    if report["state"] != AWAITING_SIGNOFF:
        raise Conflict(f"the report of job {job['id']} is {report['state']}: nothing to sign")
    if not ctx.store.add_signoff(job_id=job["id"], signed_by=signed_by, role=role,
                                 remarks=remarks):
        raise Conflict(f"the report of job {job['id']} was signed meanwhile")
    ctx.notifier.notify(job["id"])  # its `report_signed` webhook is queued: send it now
    return job_report(ctx, job)

"""`emsops drill`: run playbooks/drill.yml against a site as a job (api.launch) and keep its
report (JSON + HTML).

Reports live in <EMSOPS_DATA_DIR>/reports/drills/<id>/ with an index page of past drills.
RTO is the time from the drill's start until the restored site was verified healthy; RPO is the
drill's start minus the time of the oldest snapshot it restored.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from jinja2 import Environment, FileSystemLoader, select_autoescape

from api.runner import Verifier
from api.settings import Settings

TEMPLATES = Path(__file__).resolve().parent / "templates"
PASS, WARN, FAIL = "pass", "warn", "fail"


def parse_time(value: str) -> datetime:
    """restic and Ansible timestamps (ISO 8601, restic with nanoseconds) as aware datetimes."""
    text = value.replace("Z", "+00:00")
    if "." in text:  # Python parses at most 6 fractional digits
        head, rest = text.split(".", 1)
        digits = "".join(c for c in rest if c.isdigit())
        tz = rest[len(digits):]
        text = f"{head}.{digits[:6]}{tz}"
    ts = datetime.fromisoformat(text)
    return ts if ts.tzinfo else ts.replace(tzinfo=UTC)


def build_report(result: dict | None, *, rc: int, rpo_warn_s: float, log_tail: str = "") -> dict:
    """The report of one drill from the playbook's result (None when it wrote none)."""
    if not result:
        return {"verdict": FAIL,
                "reasons": [f"the drill playbook ended (rc {rc}) without a result"],
                "phases": [], "rto_s": None, "rpo_s": None, "data": None,
                "failure": {"phase": "playbook", "message": log_tail[-2000:]}}
    started = parse_time(result["started"])
    phases, previous = [], started
    for phase in result.get("phases", []):
        ended = parse_time(phase["ended"])
        phases.append({"name": phase["name"], "ok": True, "seconds": round(
            (ended - previous).total_seconds(), 1), "detail": phase.get("detail", "")})
        previous = ended
    failure = result.get("failure")
    if failure:
        phases.append({"name": failure["phase"], "ok": False, "seconds": round(
            (parse_time(result["finished"]) - previous).total_seconds(), 1),
            "detail": f"{failure.get('task', '')}: {failure.get('message', '')}"})
    snaps = [s for s in (result.get("app_snapshot"), result.get("db_snapshot")) if s]
    rpo_s = (round((started - min(parse_time(s["time"]) for s in snaps)).total_seconds(), 1)
             if snaps else None)
    verified = not failure and rc == 0 and bool(result.get("ok"))
    rto_s = round((previous - started).total_seconds(), 1) if verified else None
    reasons = []
    verdict = PASS
    if not verified:
        verdict = FAIL
        where = failure["phase"] if failure else "playbook"
        reasons.append(f"failed in phase {where}: "
                       f"{(failure or {}).get('message', f'playbook rc {rc}')}")
    elif rpo_s is not None and rpo_s > rpo_warn_s:
        verdict = WARN
        reasons.append(f"RPO {rpo_s:.0f} s exceeds the {rpo_warn_s:.0f} s objective: "
                       "the newest backup is too old")
    return {"verdict": verdict, "reasons": reasons, "started": result["started"],
            "finished": result.get("finished"), "standby": result.get("standby"),
            "version": result.get("version"), "rto_s": rto_s, "rpo_s": rpo_s,
            "phases": phases, "failure": failure, "data": result.get("data"),
            "app_snapshot": result.get("app_snapshot"), "db_snapshot": result.get("db_snapshot")}


def _env() -> Environment:
    return Environment(loader=FileSystemLoader(TEMPLATES),
                       autoescape=select_autoescape(["html", "html.j2"]))


def render_report_html(report: dict) -> str:
    return _env().get_template("drill_report.html.j2").render(report=report)


def write_report(reports_dir: Path, report: dict, inventory: Path) -> Path:
    """Write <id>/report.json and report.html (adding the id to `report`), then rebuild the
    index; returns the folder."""
    started = parse_time(report.get("started") or datetime.now(UTC).isoformat())
    drill_id = started.strftime("%Y%m%dT%H%M%SZ")
    folder = reports_dir / drill_id
    folder.mkdir(parents=True, exist_ok=True)
    report.update(id=drill_id, inventory=str(inventory))
    (folder / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    (folder / "report.html").write_text(render_report_html(report))
    write_index(reports_dir)
    return folder


def write_index(reports_dir: Path) -> Path:
    drills = []
    for path in sorted(reports_dir.glob("*/report.json"), reverse=True):
        try:
            drills.append(json.loads(path.read_text()))
        except (OSError, ValueError):
            continue
    index = reports_dir / "index.html"
    index.write_text(_env().get_template("drill_index.html.j2").render(drills=drills))
    return index


def run_drill(inventory: Path, reports_dir: Path, rpo_warn_s: float, *,
              settings: Settings | None = None, verifier: Verifier | None = None,
              on_event: Callable[[dict], None] | None = None) -> tuple[dict, Path]:
    """Run the drill as a job through the launcher and write its report from the job's result
    (the playbook's `drill` set_stats) and its redacted output."""
    from api.launch import run_job, stdout_of

    job = run_job("drill", inventory, limit="standby", settings=settings, verifier=verifier,
                  on_event=on_event)
    log_text = stdout_of(job, settings)
    rc = job["rc"] if job["rc"] is not None else 1
    report = build_report((job["set_stats"] or {}).get("drill"), rc=rc, rpo_warn_s=rpo_warn_s,
                          log_tail=log_text[-3000:] + (job["error"] or ""))
    report["job_id"] = job["id"]
    folder = write_report(reports_dir, report, inventory)
    (folder / "ansible.log").write_text(log_text)
    return report, folder


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("drill", help="disaster-recovery drill on the site's standby host",
                       description="Restore the newest app and db backups onto the standby "
                                   "host, verify them in layers and write a JSON + HTML report "
                                   "under <data dir>/reports/drills/. Exit status 1 when the "
                                   "drill fails.")
    p.add_argument("-i", "--inventory", required=True, type=Path)
    p.add_argument("--rpo-warn-s", type=float, default=26 * 3600,
                   help="RPO objective in seconds: an older newest backup makes a warning")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.set_defaults(func=_cli)


def _cli(args: argparse.Namespace) -> int:
    from api.cli import CliError
    from api.launch import LaunchError
    from api.settings import get_settings

    if not args.inventory.is_file():
        raise CliError(f"inventory {args.inventory} does not exist")
    reports_dir = get_settings().data_dir / "reports" / "drills"
    try:
        report, folder = run_drill(args.inventory.resolve(), reports_dir, args.rpo_warn_s)
    except LaunchError as exc:
        raise CliError(str(exc)) from None
    if args.json:
        print(json.dumps({**report, "report_dir": str(folder)}, indent=2))
    else:
        print(f"drill {report['verdict'].upper()}: RTO {report['rto_s']} s, "
              f"RPO {report['rpo_s']} s")
        for phase in report["phases"]:
            state = "ok" if phase["ok"] else "FAILED"
            print(f"  {phase['name']:<12} {state:<6} {phase['seconds']:>7} s  {phase['detail']}")
        for reason in report["reasons"]:
            print(f"  - {reason}")
        print(f"report: {folder / 'report.html'}")
    return 1 if report["verdict"] == FAIL else 0

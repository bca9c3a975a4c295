"""`GET /v1/jobs/{id}/report` of a troubleshoot_data job: the data report (JSON and HTML with a
per-meter timeline) built from the job's stored `set_stats`, 409 while it runs."""

from __future__ import annotations

from tests.support.report_html import ReportPage

RESULT = {
    "symptom": "missing", "status": "warn",
    "window": {"since": "2026-12-01T00:00:00.000Z", "until": "2026-12-01T01:00:00.000Z"},
    "meters": {"m01": {"gateway": "gw1", "readings": 60, "readings_before": 50, "days": []},
               "m02": {"gateway": "gw1", "readings": 60, "readings_before": 60, "days": []}},
    "findings": [
        {"meter": "m01", "gateway": "gw1", "id": "data.gap", "severity": "ok", "fixed": True,
         "evidence": "m01: no readings from 00:15 to 00:25", "fix": "filled from the gateway",
         "onsite": False, "from": "2026-12-01T00:15:00.000Z", "to": "2026-12-01T00:25:00.000Z",
         "location": "gateway history"},
        {"meter": "m02", "gateway": "gw1", "id": "data.reset", "severity": "warn",
         "evidence": "m02: counter reset", "fix": None, "onsite": True,
         "from": "2026-12-01T00:30:00.000Z", "to": "2026-12-01T00:31:00.000Z"}],
    "fixes": [{"gateway": "gw1", "action": "replay", "replayed": 10, "complete": True,
               "since": "2026-12-01T00:15:00.000Z"}],
    "onsite": [],
}


def troubleshoot_job(store, *, ended: bool = True) -> str:
    decision = {"outcome": "billable", "details": {}}
    decision_id = store.add_decision(ticket_id="T-9", customer_id="acme",
                                     service="troubleshoot_data", request={}, decision=decision,
                                     caller="t")
    job, _ = store.create_job(ticket_id="T-9", customer_id="acme", service="troubleshoot_data",
                              limit_pattern="db1", inventory="/inv", hosts=["db1"],
                              parameters={"symptom": "missing"}, fingerprint="f9",
                              decision_id=decision_id, decision=decision, created_by="t")
    if ended:
        assert store.finish_job(job["id"], state="succeeded", webhook=False,
                                set_stats={"data_troubleshoot": RESULT})
    return job["id"]


def test_data_report_of_an_ended_job_in_json_and_html(api):
    job_id = troubleshoot_job(api.ctx.store)
    report = api.request("GET", f"/v1/jobs/{job_id}/report")
    assert report.status_code == 200, report.text
    body = report.json()
    assert (body["kind"], body["symptom"], body["status"], body["fixed"]) == (
        "data", "missing", "warn", 1)
    gap = next(t for t in body["timelines"] if t["meter"] == "m01")["marks"][0]
    assert (gap["kind"], gap["fixed"], gap["left_pct"]) == ("gap", True, 25.0)
    html = api.request("GET", f"/v1/jobs/{job_id}/report?format=html")
    assert html.headers["content-type"].startswith("text/html")
    page = ReportPage(html.text)
    assert {g["data-meter"] for g in page.elements("g", "data-meter")} == {"m01", "m02"}
    assert {r["data-mark"] for r in page.elements("rect", "data-mark")} == {"gap", "reset"}
    index = api.ctx.settings.data_dir / "reports" / "data" / "acme" / "index.html"
    assert job_id in index.read_text()


def test_data_report_waits_for_the_job_to_end(api):
    job_id = troubleshoot_job(api.ctx.store, ended=False)
    assert api.request("GET", f"/v1/jobs/{job_id}/report").status_code == 409

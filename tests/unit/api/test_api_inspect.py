"""Inspection through the API: covered on an active contract, refused on a lapsed one; the
report (JSON and HTML) of an ended inspect job; a manual report's sign-off and who may sign."""

from __future__ import annotations

import json

import pytest

from api.tokens import Role
from api.webhook_wire import verify_signature
from tests.support.report_html import ReportPage
from tests.support.waiting import wait_for
from tests.support.webhook_receiver import WebhookReceiver


def inspect_job(api, *, tier: str, ticket: str = "T-1") -> dict:
    api.contract(tier=tier)
    response = api.request("POST", "/v1/jobs", json={
        "ticket_id": ticket, "customer_id": "acme", "service": "inspect", "limit": "app1,db1"})
    assert response.status_code == 202, response.text
    return api.wait(response.json()["id"])


def test_inspection_on_a_lapsed_contract_is_refused_and_runs_nothing(api):
    api.contract(state="lapsed")
    response = api.request("POST", "/v1/jobs", json={
        "ticket_id": "T-1", "customer_id": "acme", "service": "inspect", "limit": "app1"})
    assert response.status_code == 403
    assert response.json()["error"]["detail"]["rule"] == "inspect.lapsed_contract"
    with api.ctx.store.tx() as tx:
        assert tx.all("SELECT id FROM jobs") == []


def test_automated_inspection_report_is_final_with_every_section(api):
    job = inspect_job(api, tier="machine_package")
    assert job["state"] == "succeeded"
    assert job["decision"]["rule"] == "inspect.active_contract"
    report = api.request("GET", f"/v1/jobs/{job['id']}/report").json()
    assert (report["mode"], report["state"], report["status"]) == ("automated", "final", "warn")
    assert report["hosts"] == {"app1": "ok", "db1": "warn"}
    assert [a["host"] for a in report["actions"]] == ["db1"]
    assert [s["key"] for s in report["sections"]][:2] == ["resources", "services"]
    signed = api.request("POST", f"/v1/jobs/{job['id']}/signoff", Role.ENGINEER,
                         json={"remarks": "nothing to sign"})
    assert signed.status_code == 409
    html = api.request("GET", f"/v1/jobs/{job['id']}/report?format=html")
    assert html.headers["content-type"].startswith("text/html")
    page = ReportPage(html.text)
    assert page.ids["header"]["data-status"] == "warn"
    assert {b["data-label"] for b in page.elements("g", "data-pct")} >= {"memory", "disk /"}
    index = api.ctx.settings.data_dir / "reports" / "inspections" / "acme" / "index.html"
    assert job["id"] in index.read_text()


def test_manual_report_awaits_an_engineers_signoff_then_carries_it(api):
    job = inspect_job(api, tier="manual_inspection")
    url = f"/v1/jobs/{job['id']}/report"
    assert api.request("GET", url).json()["state"] == "awaiting_signoff"
    html = api.client.get(url, headers={**api.auth(), "Accept": "text/html"}).text
    assert ReportPage(html).ids["state"] and html.count("Awaiting an engineer") == 1
    for role in (Role.TICKET_SYSTEM, Role.SALES, Role.ADMIN):
        refused = api.request("POST", f"/v1/jobs/{job['id']}/signoff", role,
                              json={"remarks": "looks fine"})
        assert refused.status_code == 403, role
    assert api.request("GET", url).json()["signoff"] is None
    signed = api.request("POST", f"/v1/jobs/{job['id']}/signoff", Role.ENGINEER,
                         json={"remarks": "db1 disk: order a larger disk <b>soon</b>"})
    assert signed.status_code == 200, signed.text
    body = signed.json()
    assert body["state"] == "signed"
    assert body["signoff"]["remarks"] == "db1 disk: order a larger disk <b>soon</b>"
    assert body["signoff"]["by"].startswith("engineer token ")
    assert body["signoff"]["at"]
    assert api.request("GET", url).json()["signoff"] == body["signoff"]
    page = api.request("GET", url + "?format=html").text
    assert "order a larger disk &lt;b&gt;soon&lt;/b&gt;" in page
    again = api.request("POST", f"/v1/jobs/{job['id']}/signoff", Role.ENGINEER,
                        json={"remarks": "twice"})
    assert again.status_code == 409


@pytest.mark.parametrize("body", [{}, {"remarks": ""}, {"remarks": "x", "extra": 1}])
def test_signoff_needs_remarks_and_nothing_else(api, body):
    job = inspect_job(api, tier="manual_package")
    response = api.request("POST", f"/v1/jobs/{job['id']}/signoff", Role.ENGINEER, json=body)
    assert response.status_code == 422


def test_report_of_other_jobs_and_unknown_jobs_is_404(api):
    assert api.request("GET", "/v1/jobs/nope/report").status_code == 404
    api.contract()
    api.guarantee("T-2", "restore")
    response = api.request("POST", "/v1/jobs", json={
        "ticket_id": "T-2", "customer_id": "acme", "service": "restore", "limit": "app1",
        "parameters": {"reason": "fails_to_start"}})
    assert response.status_code == 202, response.text
    job = api.wait(response.json()["id"])
    assert api.request("GET", f"/v1/jobs/{job['id']}/report").status_code == 404


def test_signing_sends_a_second_webhook_that_says_so(api, settings):
    with WebhookReceiver() as receiver:
        response = api.request("PUT", "/v1/customers/acme", Role.ADMIN,
                               json={"name": "Acme", "webhook_url": receiver.url})
        assert response.status_code == 200
        job = inspect_job(api, tier="manual_package")
        first = wait_for(receiver.successes, what="the completion webhook")
        assert "event" not in json.loads(first[0].body)
        api.request("POST", f"/v1/jobs/{job['id']}/signoff", Role.ENGINEER,
                    json={"remarks": "checked on site"})
        both = wait_for(lambda: len(receiver.successes()) == 2 and receiver.successes(),
                        what="the sign-off webhook")
    signed = json.loads(both[1].body)
    assert verify_signature(settings.webhook_secret, both[1].headers["X-Emsops-Timestamp"],
                            both[1].body, both[1].headers["X-Emsops-Signature"])
    assert (signed["event"], signed["report_state"], signed["job_id"]) == (
        "report_signed", "signed", job["id"])
    assert signed["signoff"]["remarks"] == "checked on site"
    assert signed["delivery_id"] != json.loads(both[0].body)["delivery_id"]
    store = api.ctx.store
    assert wait_for(lambda: (store.webhook(job["id"], "signoff") or {}).get("state")
                    == "delivered", what="the sign-off delivery recorded")
    assert [d["attempt"] for d in store.deliveries(job["id"], "signoff")] == [1]
    assert [d["attempt"] for d in store.deliveries(job["id"])] == [1]

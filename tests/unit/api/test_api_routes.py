"""Every route: happy path and the 401/402/403/404/409/422 answers that apply to it."""

from __future__ import annotations

import pytest

from api.runner import EXPECTED_CHANGES, observed_version
from api.store import MIGRATIONS
from api.tokens import Role

ROUTES = [
    ("POST", "/v1/jobs"),
    ("GET", "/v1/jobs/x"),
    ("POST", "/v1/jobs/x/cancel"),
    ("GET", "/v1/jobs/x/events"),
    ("POST", "/v1/quotes"),
    ("PUT", "/v1/customers/acme"),
    ("GET", "/v1/customers/acme"),
    ("PUT", "/v1/customers/acme/contract"),
    ("GET", "/v1/customers/acme/site"),
    ("PUT", "/v1/customers/acme/site"),
    ("POST", "/v1/tickets/T1/settlements"),
    ("GET", "/v1/tickets/T1/settlements?service=restore"),
    ("GET", "/metrics"),
]


def job(service="restore", ticket="T-1", limit="app1", parameters=None, **extra):
    body = {"ticket_id": ticket, "customer_id": "acme", "service": service, "limit": limit}
    if parameters is not None:
        body["parameters"] = parameters
    return {**body, **extra}


def settlement(service="restore", kind="guarantee", customer="acme", **extra):
    return {"customer_id": customer, "service": service, "kind": kind, **extra}


def quote_onsite(api, started: str, ended: str):
    """POST /v1/quotes for on-site work in the ticket window started..ended (ISO, with zone)."""
    return api.request(
        "POST",
        "/v1/quotes",
        json={
            "customer_id": "acme",
            "service": "onsite",
            "ticket_started_at": started,
            "ticket_ended_at": ended,
        },
    )


def settle(api, body: dict, role: Role = Role.TICKET_SYSTEM, ticket: str = "T-9"):
    return api.request("POST", f"/v1/tickets/{ticket}/settlements", role, json=body)


def no_job(api, ticket="T-1", service="restore"):
    return api.ctx.store.job_for_ticket(ticket_id=ticket, service=service) is None


def test_healthz_needs_no_token(api):
    response = api.request("GET", "/healthz", role=None)
    assert response.status_code == 200
    assert response.json() == {"status": "ok", "schema_version": len(MIGRATIONS)}


@pytest.mark.parametrize(("method", "url"), ROUTES)
def test_every_other_route_needs_a_token(api, method, url):
    anonymous = api.request(method, url, role=None, json={})
    assert anonymous.status_code == 401
    assert anonymous.headers["WWW-Authenticate"] == "Bearer"
    assert anonymous.json()["error"]["code"] == "unauthenticated"
    forged = api.client.request(method, url, headers={"Authorization": "Bearer nope"}, json={})
    assert forged.status_code == 401


def test_metrics_count_decisions(api):
    api.contract()
    api.request(
        "POST", "/v1/jobs", json=job(service="upgrade", parameters={"target_version": "3.3.0"})
    )
    text = api.request("GET", "/metrics").text
    assert 'emsops_decisions_total{outcome="refused",service="upgrade"} 1.0' in text


def test_unknown_route_uses_the_error_shape(api):
    response = api.request("GET", "/v1/nothing")
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "http_error"


# --- admin ---------------------------------------------------------------------------------------


def test_admin_creates_customer_contract_and_site(api, project):
    put = api.request(
        "PUT",
        "/v1/customers/new1",
        Role.ADMIN,
        json={"name": "New", "webhook_url": "http://127.0.0.1:1/hook"},
    )
    assert put.status_code == 200
    assert api.request("GET", "/v1/customers/new1", Role.ENGINEER).json()["name"] == "New"
    contract = api.request(
        "PUT",
        "/v1/customers/new1/contract",
        Role.ADMIN,
        json={
            "tier": "manual_package",
            "state": "active",
            "licensed_modules": ["water"],
            "version_line": "3.2",
            "ends_on": "2030-01-01",
        },
    )
    assert contract.status_code == 200
    assert contract.json()["tier"] == "manual_package"
    site = api.request(
        "PUT",
        "/v1/customers/new1/site",
        Role.ADMIN,
        json={"inventory": str(project.inventory), "installed_version": "3.2.1"},
    )
    assert site.status_code == 200
    assert api.ctx.store.get_site("new1")["installed_version"] == "3.2.1"
    read = api.request("GET", "/v1/customers/new1/site", Role.ENGINEER)
    assert read.status_code == 200 and read.json()["installed_version"] == "3.2.1"


@pytest.mark.parametrize("role", [Role.TICKET_SYSTEM, Role.ENGINEER])
def test_only_admins_change_customers(api, role):
    response = api.request("PUT", "/v1/customers/acme", role, json={"name": "x"})
    assert response.status_code == 403
    assert response.json()["error"]["code"] == "forbidden"


def test_ticket_system_may_not_read_customers(api):
    assert api.request("GET", "/v1/customers/acme").status_code == 403
    assert api.request("GET", "/v1/customers/acme/site").status_code == 403


def test_admin_routes_404_and_422(api):
    assert api.request("GET", "/v1/customers/nobody", Role.ADMIN).status_code == 404
    assert api.request("GET", "/v1/customers/nobody/site", Role.ADMIN).status_code == 404
    assert (
        api.request(
            "PUT",
            "/v1/customers/nobody/contract",
            Role.ADMIN,
            json={
                "tier": "manual_package",
                "state": "active",
                "licensed_modules": [],
                "version_line": "3.2",
            },
        ).status_code
        == 404
    )
    assert (
        api.request(
            "PUT", "/v1/customers/nobody/site", Role.ADMIN, json={"inventory": "x.yml"}
        ).status_code
        == 404
    )
    assert (
        api.request(
            "PUT", "/v1/customers/acme", Role.ADMIN, json={"name": "x", "colour": "red"}
        ).status_code
        == 422
    )
    assert (
        api.request(
            "PUT",
            "/v1/customers/acme/contract",
            Role.ADMIN,
            json={"tier": "gold", "state": "active", "licensed_modules": [], "version_line": "3.2"},
        ).status_code
        == 422
    )
    missing = api.request(
        "PUT", "/v1/customers/acme/site", Role.ADMIN, json={"inventory": "/nonexistent/hosts.yml"}
    )
    assert missing.status_code == 422


def test_settlements_recorded_and_listed(api):
    paid = api.request(
        "POST",
        "/v1/tickets/T-9/settlements",
        json=settlement(kind="payment", amount="100.50", reference="bank-1"),
    )
    assert paid.status_code == 201
    listed = api.request("GET", "/v1/tickets/T-9/settlements?service=restore").json()
    assert [(s["kind"], s["amount"]) for s in listed] == [("payment", "100.50")]


@pytest.mark.parametrize(
    ("role", "kind", "status"),
    [
        (Role.TICKET_SYSTEM, "payment", 201),
        (Role.TICKET_SYSTEM, "guarantee", 403),
        (Role.SALES, "guarantee", 201),
        (Role.SALES, "payment", 403),
        (Role.ADMIN, "payment", 201),
        (Role.ADMIN, "guarantee", 201),
        (Role.ENGINEER, "payment", 403),
        (Role.ENGINEER, "guarantee", 403),
    ],
)
def test_payments_come_from_the_ticket_system_and_guarantees_from_sales(api, role, kind, status):
    amount = {"amount": "10.00"} if kind == "payment" else {}
    response = settle(api, settlement(kind=kind, reference="ref-1", **amount), role)
    assert response.status_code == status
    stored = api.ctx.store.settlements(ticket_id="T-9", service="restore")
    assert len(stored) == (1 if status == 201 else 0)


@pytest.mark.parametrize(
    "body",
    [
        settlement(kind="payment", reference="s"),  # a payment without an amount
        settlement(kind="guarantee", amount="1", reference="s"),
        settlement(kind="payment", amount="-1", reference="s"),
        settlement(kind="payment", amount="NaN", reference="s"),
        settlement(kind="payment", amount="Infinity", reference="s"),
        {"service": "restore", "kind": "payment", "amount": "1", "reference": "s"},  # no customer
    ],
)
def test_settlement_bodies_that_are_422(api, body):
    response = settle(api, body, Role.ADMIN)
    assert response.status_code == 422
    assert api.ctx.store.settlements(ticket_id="T-9", service="restore") == []


def test_settlement_for_an_unknown_customer_is_404(api):
    response = settle(api, settlement(customer="nobody", reference="s"), Role.SALES)
    assert response.status_code == 404


def test_a_retried_payment_is_the_first_record(api):
    body = settlement(kind="payment", amount="795.00", reference="bank-42")
    first = settle(api, body)
    again = settle(api, {**body, "amount": "795.0"})
    assert (first.status_code, again.status_code) == (201, 200)
    assert again.json() == first.json()
    assert len(api.ctx.store.settlements(ticket_id="T-9", service="restore")) == 1


def test_the_same_reference_with_another_amount_is_409(api):
    body = settlement(kind="payment", amount="795.00", reference="bank-42")
    settle(api, body)
    other = settle(api, {**body, "amount": "1590.00"})
    assert other.status_code == 409
    assert other.json()["error"]["code"] == "settlement_conflict"
    rows = api.ctx.store.settlements(ticket_id="T-9", service="restore")
    assert [r["amount"] for r in rows] == ["795.00"]


@pytest.fixture
def lapsed_and_other(api):
    """acme with a lapsed contract (restore is billable) and a second customer, `other`."""
    api.contract(state="lapsed")
    api.request("PUT", "/v1/customers/other", Role.ADMIN, json={"name": "O"})
    return api


def test_a_guarantee_settles_only_its_customers_ticket(lapsed_and_other):
    """Two customers whose ticket systems both use ticket id T-1: a guarantee sales gave one
    of them must not unlock the other's job."""
    api = lapsed_and_other
    api.guarantee("T-1", "restore", customer="other")
    response = api.request("POST", "/v1/jobs", json=job(service="restore"))
    assert response.status_code == 402
    assert response.json()["error"]["detail"]["settled"] is False
    assert no_job(api, service="restore")


def test_a_ticket_of_one_customer_cannot_be_settled_for_another(lapsed_and_other):
    api = lapsed_and_other
    assert api.request("POST", "/v1/jobs", json=job(service="restore")).status_code == 402
    response = settle(api, settlement(customer="other", reference="s-1"), Role.SALES, "T-1")
    assert response.status_code == 409
    assert response.json()["error"]["detail"] == {"customer_id": "acme"}


# --- quotes -------------------------------------------------------------------------------------


def test_onsite_quote_for_machine_inspection_uses_ticket_window(api):
    api.contract(tier="machine_inspection")
    response = quote_onsite(api, "2025-06-02T09:00:00+08:00", "2025-06-03T12:00:00+08:00")
    assert response.status_code == 200
    body = response.json()
    assert (body["outcome"], body["details"]["days"]) == ("billable", 2)
    assert body["quote"]["total"] == "2544.00"  # 2 x 1200 + 6 % tax (example prices)


def test_onsite_for_manual_package_is_covered(api):
    api.contract(tier="manual_package")
    body = api.request(
        "POST", "/v1/quotes", json={"customer_id": "acme", "service": "onsite"}
    ).json()
    assert (body["outcome"], body["quote"], body["runnable"]) == ("covered", None, True)


def test_quote_reports_settlement(api):
    api.contract(state="lapsed")
    api.request(
        "POST",
        "/v1/tickets/T-2/settlements",
        json=settlement(kind="payment", amount="1590.00", reference="bank"),
    )
    body = api.request(
        "POST", "/v1/quotes", json={"customer_id": "acme", "service": "restore", "ticket_id": "T-2"}
    ).json()
    assert (body["quote"]["total"], body["settled"]) == ("1590.00", True)


def test_quote_errors(api):
    assert (
        api.request(
            "POST", "/v1/quotes", json={"customer_id": "nobody", "service": "onsite"}
        ).status_code
        == 404
    )
    assert (
        api.request(
            "POST", "/v1/quotes", json={"customer_id": "acme", "service": "onsite", "extra": 1}
        ).status_code
        == 422
    )
    assert (
        api.request(
            "POST",
            "/v1/quotes",
            json={
                "customer_id": "acme",
                "service": "onsite",
                "ticket_started_at": "2025-06-02T09:00:00",
            },
        ).status_code
        == 422
    )  # no time zone


# --- jobs: decisions ----------------------------------------------------------------------------


def test_lapsed_customer_upgrade_is_refused_and_runs_nothing(api, verifier):
    api.contract(state="lapsed")
    response = api.request(
        "POST", "/v1/jobs", json=job(service="upgrade", parameters={"target_version": "3.2.1"})
    )
    assert response.status_code == 403
    error = response.json()["error"]
    assert (error["code"], error["detail"]["rule"]) == ("refused", "upgrade.lapsed_contract")
    assert no_job(api, service="upgrade")
    assert not list(api.ctx.settings.runs_dir.glob("*"))


@pytest.mark.parametrize(
    ("parameters", "rule"),
    [
        ({"target_version": "3.3.0"}, "upgrade.outside_installed_minor_line"),
        (
            {"target_version": "3.2.2", "modules": ["electricity", "gas"]},
            "upgrade.module_outside_license",
        ),
    ],
)
def test_upgrade_outside_license_is_refused(api, parameters, rule):
    api.contract()
    response = api.request("POST", "/v1/jobs", json=job(service="upgrade", parameters=parameters))
    assert response.status_code == 403
    assert response.json()["error"]["detail"]["rule"] == rule
    assert no_job(api, service="upgrade")


def test_upgrade_in_line_is_covered_and_runs(api, verifier):
    api.contract()
    response = api.request(
        "POST", "/v1/jobs", json=job(service="upgrade", parameters={"target_version": "3.2.2"})
    )
    assert response.status_code == 202
    assert response.json()["decision"]["outcome"] == "covered"
    done = api.wait(response.json()["id"])
    assert done["state"] == "succeeded"
    # The API's target_version reaches upgrade.yml as the role input; unset modules stay unset
    # (the role defaults to the licensed ones).
    assert {k: done["set_stats"][k] for k in ("target", "modules")} == {
        "target": "3.2.2", "modules": "unset"}


def test_upgrade_modules_reach_the_role_as_its_input(api, verifier):
    api.contract()
    response = api.request("POST", "/v1/jobs", json=job(
        service="upgrade", parameters={"target_version": "3.2.2", "modules": ["water"]}))
    assert response.status_code == 202, response.text
    done = api.wait(response.json()["id"])
    assert {k: done["set_stats"][k] for k in ("target", "modules")} == {
        "target": "3.2.2", "modules": ["water"]}


def installed(api) -> str | None:
    return api.request("GET", "/v1/customers/acme/site", Role.ADMIN).json()["installed_version"]


def test_the_site_record_follows_the_version_the_hosts_report_not_the_request(api, verifier):
    api.contract(installed="3.2.0")
    done = api.wait(api.request("POST", "/v1/jobs", json=job(
        service="upgrade", parameters={"target_version": "3.2.2"})).json()["id"])
    assert done["state"] == "succeeded"
    # The hosts are verified against the upgrade's target, not the inventory's old release...
    assert verifier.expected == [{"ems_release_version": "3.2.2"}]
    assert installed(api) == "3.2.2"  # ...and the record takes what they report
    # A rolled-back upgrade (the playbook fails) leaves the record alone and verifies nothing.
    failed = api.wait(api.request("POST", "/v1/jobs", json=job(
        service="upgrade", ticket="T-2", parameters={"target_version": "3.2.3"})).json()["id"])
    assert failed["state"] == "failed" and failed["set_stats"]["patch_upgrade"]["result"] == \
        "rolled back"
    assert len(verifier.calls) == 1 and installed(api) == "3.2.2"
    # An engineer's upgrade by hand is seen at the next job's verification (hosts report 3.2.3,
    # whatever the request or the record said).
    verifier.version = "3.2.3"
    api.guarantee("T-3", "restore")
    assert api.wait(api.request("POST", "/v1/jobs", json=job(ticket="T-3")).json()["id"])[
        "state"] == "succeeded"
    assert verifier.expected[-1] == {} and installed(api) == "3.2.3"


def test_hosts_on_different_releases_have_no_single_installed_version():
    verification = {"hosts": {"app1": {"observed": {"version": "3.2.2"}},
                              "gw1": {"observed": {"version": "3.2.1"}}, "db1": {}}}
    assert observed_version(verification) is None
    verification["hosts"]["gw1"]["observed"]["version"] = "3.2.2"
    assert observed_version(verification) == "3.2.2"


def test_lapsed_network_repair_quoted_then_runs_after_guarantee(api):
    api.contract(state="lapsed")
    body = job(service="repair_network", parameters={"issue": "ip_conflict"})
    quoted = api.request("POST", "/v1/jobs", json=body)
    assert quoted.status_code == 402
    quote = quoted.json()["error"]["detail"]["quote"]
    assert quote["lines"][0]["unit_price"] == "1100.00"  # the lapsed price
    assert no_job(api, service="repair_network")
    api.guarantee("T-1", "repair_network")
    accepted = api.request("POST", "/v1/jobs", json=body)
    assert accepted.status_code == 202
    assert accepted.json()["decision"]["settled"] is True
    assert api.wait(accepted.json()["id"])["state"] == "succeeded"


def test_partial_payment_still_402(api):
    api.contract(state="lapsed")
    api.request(
        "POST",
        "/v1/tickets/T-1/settlements",
        json=settlement(
            service="repair_network", kind="payment", amount="1000.00", reference="b"
        ),
    )
    response = api.request(
        "POST", "/v1/jobs", json=job(service="repair_network", parameters={"issue": "lan_change"})
    )
    assert response.status_code == 402


def test_network_repair_on_a_switch_is_refused(api):
    api.contract()
    response = api.request(
        "POST",
        "/v1/jobs",
        json=job(service="repair_network", limit="app1,sw1", parameters={"issue": "lan_change"}),
    )
    assert response.status_code == 403
    detail = response.json()["error"]["detail"]
    assert (detail["rule"], detail["details"]["hosts"]) == (
        "repair_network.no_network_devices",
        ["sw1"],
    )


def test_internal_services_for_vendor_staff_only(api):
    api.contract()
    refused = api.request("POST", "/v1/jobs", json=job(service="backup"))
    assert refused.status_code == 403
    assert refused.json()["error"]["detail"]["rule"] == "internal.vendor_staff_only"
    accepted = api.request("POST", "/v1/jobs", Role.ENGINEER, json=job(service="backup"))
    assert accepted.status_code == 202


def test_no_contract_is_refused(api):
    response = api.request("POST", "/v1/jobs", json=job(service="inspect"))
    assert response.json()["error"]["detail"]["rule"] == "contract.missing"


def test_decisions_are_stored_even_when_refused(api):
    api.contract(state="lapsed")
    api.request("POST", "/v1/jobs", json=job(service="inspect"))
    with api.ctx.store.tx() as tx:
        rows = tx.all("SELECT * FROM decisions WHERE ticket_id = 'T-1'")
    assert [(r["service"], r["decision"]["rule"]) for r in rows] == [
        ("inspect", "inspect.lapsed_contract")
    ]


# --- jobs: input validation ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "body",
    [
        job(surprise=True),
        job(parameters={"reason": "expansion", "extra": 1}),
        job(service="upgrade", parameters={"target_version": "3.2"}),
        job(service="upgrade", parameters={"target_version": "3.2.1; rm -rf /"}),
        job(service="repair_network", parameters={}),
        job(service="onsite"),
        job(service="format_disk"),
        job(limit="@/etc/passwd"),
        job(limit="app1 -e x=1"),
        job(limit="~.*"),
        job(ticket="../../etc"),
    ],
)
def test_bad_requests_are_422(api, body):
    api.contract()
    response = api.request("POST", "/v1/jobs", json=body)
    assert response.status_code == 422
    assert response.json()["error"]["code"] == "invalid_request"


@pytest.mark.parametrize("limit", ["nosuchhost", "app1,nosuchgroup", "ems_app:&ems_db"])
def test_limit_must_name_inventory_hosts(api, limit):
    api.contract()
    response = api.request("POST", "/v1/jobs", json=job(limit=limit))
    assert response.status_code == 422
    assert response.json()["error"]["code"] == "invalid_target"


def test_unknown_customer_is_404(api):
    assert (
        api.request("POST", "/v1/jobs", json={**job(), "customer_id": "nobody"}).status_code == 404
    )


# --- jobs: idempotency and conflicts ------------------------------------------------------------


def test_same_request_again_returns_the_same_job(api):
    api.contract()
    body = job(service="inspect", limit="db1")
    first = api.request("POST", "/v1/jobs", json=body)
    second = api.request("POST", "/v1/jobs", json=body)
    assert (first.status_code, second.status_code) == (202, 200)
    assert first.json()["id"] == second.json()["id"]


def test_same_ticket_and_service_with_other_request_is_409(api):
    api.contract()
    api.request("POST", "/v1/jobs", json=job(service="inspect", limit="db1"))
    response = api.request("POST", "/v1/jobs", json=job(service="inspect", limit="app1"))
    assert response.status_code == 409
    assert response.json()["error"]["code"] == "ticket_service_taken"


def test_host_held_by_a_running_job_is_409_until_canceled(api):
    api.contract()
    slow = api.hold("db1")
    held = api.request(
        "POST", "/v1/jobs", json=job(service="inspect", ticket="T-2", limit="ems_db")
    )
    assert held.status_code == 409
    assert held.json()["error"]["detail"]["held"] == {"db1": slow}
    assert no_job(api, ticket="T-2", service="inspect")
    assert api.request("POST", f"/v1/jobs/{slow}/cancel").status_code == 200
    assert api.wait(slow)["state"] == "canceled"
    again = api.request(
        "POST", "/v1/jobs", json=job(service="inspect", ticket="T-2", limit="ems_db")
    )
    assert again.status_code == 202


def test_job_routes_404(api):
    assert api.request("GET", "/v1/jobs/nope").status_code == 404
    assert api.request("POST", "/v1/jobs/nope/cancel").status_code == 404
    assert api.request("GET", "/v1/jobs/nope/events").status_code == 404


def test_get_job_and_event_paging(api):
    api.contract()
    created = api.request("POST", "/v1/jobs", json=job(service="inspect", limit="app1"))
    job_id = created.json()["id"]
    api.wait(job_id)
    got = api.request("GET", f"/v1/jobs/{job_id}").json()
    assert got["state"] == "succeeded"
    assert got["host_stats"]["app1"]["ok"] == 2  # the test project's inspect.yml: two tasks
    assert got["decision"]["details"] == {"mode": "automated"}
    first = api.request("GET", f"/v1/jobs/{job_id}/events?limit=2").json()
    assert [e["counter"] for e in first["events"]] == [1, 2]
    rest = api.request("GET", f"/v1/jobs/{job_id}/events?after={first['next_after']}").json()
    assert rest["events"][0]["counter"] == 3
    assert rest["events"][-1]["event"] == "playbook_on_stats"
    assert api.request("GET", f"/v1/jobs/{job_id}/events?limit=0").status_code == 422


def test_events_as_server_sent_events(api):
    api.contract()
    job_id = api.request("POST", "/v1/jobs", json=job(service="inspect")).json()["id"]
    with api.client.stream(
        "GET", f"/v1/jobs/{job_id}/events", headers={**api.auth(), "Accept": "text/event-stream"}
    ) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        text = "".join(response.iter_text())
    assert "event: playbook_on_start" in text
    assert "event: playbook_on_stats" in text
    assert text.rstrip().endswith('data: {"state": "succeeded"}')


@pytest.mark.parametrize(("service", "stats", "expected"), [
    ("upgrade", {"patch_upgrade": {"result": "upgraded", "to": "3.2.2"}},
     {"ems_release_version": "3.2.2"}),
    ("upgrade", {"patch_upgrade": {"result": "already at", "to": "3.2.1"}},
     {"ems_release_version": "3.2.1"}),
    ("upgrade", {"patch_upgrade": {"result": "rolled back", "to": "3.2.3"}}, {}),
    ("upgrade", {}, {}),
    ("reinstall", {"reinstall": {"gw1": {"version": "3.2.2"}}}, {"ems_release_version": "3.2.2"}),
    ("reinstall", {"reinstall": {"gw1": {"version": "3.2.2"}, "gw2": {"version": "3.2.1"}}}, {}),
])
def test_what_a_run_changed_on_purpose_is_what_verification_expects(service, stats, expected):
    assert EXPECTED_CHANGES[service](stats) == expected

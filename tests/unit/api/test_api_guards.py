"""What a hostile client or a careless operator tried (issue 8 D): each is refused with a 4xx in
the one error shape, stores nothing and runs nothing."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from test_api_routes import job, no_job, quote_onsite  # noqa: I001 - a sibling test module

from api.app import create_app
from api.tokens import Role


def put_site(api, inventory: str, customer: str = "acme"):
    return api.request(
        "PUT", f"/v1/customers/{customer}/site", Role.ADMIN, json={"inventory": inventory}
    )


def post_raw(api, url: str, body: dict, role: Role = Role.TICKET_SYSTEM, **headers):
    # json.dumps keeps a lone surrogate as the escape "\ud800", as a hostile client sends it.
    return api.client.post(
        url,
        content=json.dumps(body),
        headers={**api.auth(role), "Content-Type": "application/json", **headers},
    )


# --- 1. site inventories only from the trusted root ---------------------------------------------


def _untrusted(project) -> dict[str, str]:
    """Paths an admin could send, each refused; files are made inside a copy of the root."""
    root = project.inventory.parent
    script = root / "script.yml"
    script.write_text("#!/bin/sh\necho '{}'\n")
    script.chmod(0o755)
    (root / "notes.txt").write_text("[ems_app]\napp1\n")
    link = root / "escape.yml"
    if not link.is_symlink():
        link.symlink_to(project.root / "ansible.cfg")
    return {
        "executable": str(script),
        "shadow": "/etc/shadow",
        "proc": "/proc/self/environ",
        "dotdot": str(root / ".." / "ansible.cfg"),
        "symlink out": str(link),
        "relative dotdot": "inventory/../../../../../etc/passwd",
        "folder": str(root / "group_vars"),
        "not yaml or ini": str(root / "notes.txt"),
        "missing": str(root / "nope.yml"),
        "too long": "a" * 1000,
        "nul byte": str(root) + "/hosts.yml\u0000.txt",
        "surrogate": str(root) + "/\ud800.yml",
    }


@pytest.mark.parametrize(
    "case",
    [
        "executable",
        "shadow",
        "proc",
        "dotdot",
        "symlink out",
        "relative dotdot",
        "folder",
        "not yaml or ini",
        "missing",
        "too long",
        "nul byte",
        "surrogate",
    ],
)
def test_untrusted_site_inventories_are_422_and_not_stored(api, project, case):
    before = api.ctx.store.get_site("acme")
    response = post_raw_put_site(api, _untrusted(project)[case])
    assert response.status_code == 422, response.text
    assert response.json()["error"]["code"] in ("invalid_inventory", "invalid_request")
    assert api.ctx.store.get_site("acme") == before


def post_raw_put_site(api, inventory: str):
    return api.client.put(
        "/v1/customers/acme/site",
        content=json.dumps({"inventory": inventory}),
        headers={**api.auth(Role.ADMIN), "Content-Type": "application/json"},
    )


def test_refusals_say_why(api, project):
    cases = _untrusted(project)
    messages = {
        case: post_raw_put_site(api, cases[case]).json()["error"]["message"]
        for case in ("executable", "shadow", "folder", "not yaml or ini")
    }
    assert messages == {
        "executable": "a site inventory must not be executable (Ansible would run it)",
        "shadow": "site inventories must lie inside EMSOPS_INVENTORY_ROOT",
        "folder": "a site inventory must be a regular file",
        "not yaml or ini": "a site inventory must be YAML (.yml, .yaml) or INI (.ini)",
    }


def test_a_site_is_stored_by_its_real_path(api, project):
    response = put_site(api, "inventory/../inventory/hosts.yml")  # relative: the project folder
    assert response.status_code == 200
    assert response.json()["inventory"] == str(project.inventory.resolve())


def test_an_ini_inventory_inside_the_root_is_accepted(api, project):
    ini = project.inventory.parent / "site.ini"
    ini.write_text("[ems_app]\napp1 ansible_connection=local\n")
    assert put_site(api, str(ini)).status_code == 200


def test_an_inventory_made_executable_later_is_refused_at_the_job(api, project, tmp_path):
    api.contract()
    hosts = project.inventory.parent / "later.yml"
    hosts.write_text(project.inventory.read_text())
    assert put_site(api, str(hosts)).status_code == 200
    hosts.chmod(0o755)
    response = api.request("POST", "/v1/jobs", json=job(service="inspect"))
    assert response.status_code == 422
    assert response.json()["error"]["code"] == "invalid_inventory"
    assert no_job(api, service="inspect")


def test_configured_sites_outside_the_root_stop_the_start(settings, verifier, tmp_path):
    outside = tmp_path / "hosts.yml"
    outside.write_text("all:\n  hosts:\n    app1: {}\n")
    app = create_app(settings.model_copy(update={"sites": {"acme": outside}}), verifier=verifier)
    with pytest.raises(ValueError, match="EMSOPS_INVENTORY_ROOT"), TestClient(app):
        pass


# --- 2. host locks by the real path -------------------------------------------------------------


def test_two_spellings_of_one_inventory_share_the_host_locks(api, project):
    api.contract()
    slow = api.hold("db1")
    api.request("PUT", "/v1/customers/twin", Role.ADMIN, json={"name": "Twin"})
    spelled = project.inventory.parent / ".." / project.inventory.parent.name / "hosts.yml"
    assert put_site(api, str(spelled), customer="twin").status_code == 200
    api.contract(customer="twin")
    held = api.request(
        "POST", "/v1/jobs", json={**job(service="inspect", ticket="T-2", limit="db1"),
                                  "customer_id": "twin"}
    )
    assert held.status_code == 409, held.text
    assert held.json()["error"]["detail"]["held"] == {"db1": slow}
    api.request("POST", f"/v1/jobs/{slow}/cancel")
    assert api.wait(slow)["state"] == "canceled"


# --- 4. no input gives a 500 --------------------------------------------------------------------


def test_a_version_of_5000_digits_is_422(api):
    api.contract()
    body = job(service="upgrade", parameters={"target_version": "3.2." + "1" * 5000})
    response = api.request("POST", "/v1/jobs", json=body)
    assert response.status_code == 422
    assert no_job(api, service="upgrade")


def test_a_lone_surrogate_in_a_note_is_422(api):
    api.contract()
    response = post_raw(api, "/v1/jobs", job(service="inspect", note="\ud800"))
    assert response.status_code == 422
    assert response.json()["error"]["code"] == "invalid_request"
    assert no_job(api, service="inspect")


@pytest.mark.parametrize("body", [{"name": "\ud800"}, {"name": "ok", "colour": "\udfff" * 3}])
def test_lone_surrogates_anywhere_are_422(api, body):
    response = api.client.put(
        "/v1/customers/acme",
        content=json.dumps(body),
        headers={**api.auth(Role.ADMIN), "Content-Type": "application/json"},
    )
    assert response.status_code == 422
    assert api.ctx.store.get_customer("acme")["name"] == "acme"


# b"\xb2" is "²" to the server (header bytes are latin-1): a digit to str.isdigit(), not to int().
@pytest.mark.parametrize("last_event_id", [b"\xb2", b"9" * 5000, b"%d" % 2**63, b"-1", b"1e3"])
def test_bad_last_event_ids_are_4xx(api, last_event_id):
    api.contract()
    job_id = api.request("POST", "/v1/jobs", json=job(service="inspect")).json()["id"]
    response = api.client.get(
        f"/v1/jobs/{job_id}/events",
        headers={
            **api.auth(),
            "Accept": "text/event-stream",
            "Last-Event-ID": last_event_id,
        },
    )
    assert 400 <= response.status_code < 500
    assert "error" in response.json()


def test_a_valid_last_event_id_resumes_after_it(api):
    api.contract()
    job_id = api.request("POST", "/v1/jobs", json=job(service="inspect")).json()["id"]
    api.wait(job_id)
    with api.client.stream(
        "GET",
        f"/v1/jobs/{job_id}/events",
        headers={**api.auth(), "Accept": "text/event-stream", "Last-Event-ID": "2"},
    ) as response:
        text = "".join(response.iter_text())
    assert "id: 3\n" in text
    assert "id: 2\n" not in text


def test_an_unexpected_error_is_a_logged_500_in_the_error_shape(settings, verifier, caplog):
    with TestClient(create_app(settings, verifier=verifier), raise_server_exceptions=False) as c:
        from api.tokens import issue_token

        token = issue_token(c.app.state.ctx.store, Role.ADMIN)
        c.app.state.ctx.store._conn.close()  # the database goes away under a running API
        with caplog.at_level(logging.ERROR, logger="api.app"):
            response = c.get("/v1/customers/acme", headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 500
    assert response.json() == {
        "error": {
            "code": "internal_error",
            "message": "internal error; the API's log has the details",
            "detail": None,
        }
    }
    assert "unhandled error on GET /v1/customers/acme" in caplog.text
    assert "Traceback" in caplog.text


# --- 4 and 5. limits Ansible cannot parse, and the implicit localhost -----------------------------


@pytest.mark.parametrize(
    "limit",
    # Ansible's parser raises on these (they were 500s):
    ["&", "!", ":&", "ems_app,!", "ems_app[1:0]"]
    # Ansible's implicit localhost is the API host, never a host of the site:
    + ["localhost", "127.0.0.1", "app1,localhost", "all:!localhost", "app1:127.0.0.1"],
)
def test_limits_refused_when_resolved_against_the_inventory(api, limit):
    api.contract()
    response = api.request("POST", "/v1/jobs", json=job(service="inspect", limit=limit))
    assert response.status_code == 422
    assert response.json()["error"]["code"] == "invalid_target"
    assert no_job(api, service="inspect")
    assert api.ctx.store.held_hosts() == []


@pytest.mark.parametrize(
    ("limit", "hosts"),
    [("app*", ["app1"]), ("ems_app[0]", ["app1"]), ("all:!network_devices", ["app1", "db1"])],
)
def test_globs_and_subscripts_still_work(api, limit, hosts):
    api.contract()
    response = api.request("POST", "/v1/jobs", json=job(service="inspect", limit=limit))
    assert response.status_code == 202
    assert response.json()["hosts"] == hosts


# --- 6. resource limits -------------------------------------------------------------------------


@pytest.fixture
def small_api(make_api, settings):
    return make_api(settings.model_copy(update={"max_body_bytes": 4096}))


def test_a_body_over_the_limit_is_413_before_it_is_parsed(small_api):
    not_even_json = b"{" * 5000
    response = small_api.client.post(
        "/v1/jobs",
        content=not_even_json,
        headers={**small_api.auth(), "Content-Type": "application/json"},
    )
    assert response.status_code == 413
    assert response.json()["error"]["code"] == "payload_too_large"


def test_a_streamed_body_over_the_limit_is_413(small_api):
    def chunks():
        for _ in range(10):
            yield b" " * 1000

    response = small_api.client.post(
        "/v1/jobs",
        content=chunks(),
        headers={**small_api.auth(), "Content-Type": "application/json"},
    )
    assert "content-length" not in {k.lower() for k in response.request.headers}
    assert response.status_code == 413
    assert response.json()["error"]["code"] == "payload_too_large"


def test_a_body_within_the_limit_is_served(small_api):
    small_api.contract()
    response = small_api.request("POST", "/v1/jobs", json=job(service="inspect", note="x" * 400))
    assert response.status_code == 202


def test_error_bodies_do_not_echo_large_inputs(api):
    huge = {"ticket_id": "T-1", "customer_id": "acme", "service": "inspect", "note": "n" * 900_000}
    response = api.request("POST", "/v1/jobs", json=huge)
    assert response.status_code == 422
    assert len(response.content) < 4096


def test_error_messages_quoting_a_long_path_are_cut(api):
    response = api.request("GET", "/v1/jobs/" + "j" * 20_000)
    assert response.status_code == 404
    assert len(response.content) < 2048


def test_error_bodies_show_a_bounded_number_of_errors(api):
    body = {f"extra{i}": i for i in range(20_000)}
    response = api.request("PUT", "/v1/customers/acme", Role.ADMIN, json=body)
    assert response.status_code == 422
    error = response.json()["error"]
    assert len(error["detail"]) == 20
    assert "errors, the first 20 shown" in error["message"]
    assert len(response.content) < 16_384


# --- 9. internal jobs are vendor staff's --------------------------------------------------------


@pytest.fixture
def drill(api):
    api.contract()
    body = job(service="drill", ticket="T-D", limit="db1")
    created = api.request("POST", "/v1/jobs", Role.ENGINEER, json=body)
    assert created.status_code == 202
    return body, created.json()["id"]


@pytest.mark.parametrize(
    ("method", "path"),
    [("GET", ""), ("GET", "/events"), ("GET", "/webhooks"), ("POST", "/cancel")],
)
def test_the_ticket_system_can_neither_read_nor_cancel_internal_jobs(api, drill, method, path):
    _, job_id = drill
    response = api.request(method, f"/v1/jobs/{job_id}{path}")
    assert response.status_code == 403
    assert response.json()["error"]["code"] == "forbidden"
    assert api.ctx.store.get_job(job_id)["cancel_requested"] == 0
    assert api.request(method, f"/v1/jobs/{job_id}{path}", Role.ENGINEER).status_code == 200


def test_replaying_an_engineers_internal_request_does_not_hand_out_the_job(api, drill):
    body, job_id = drill
    response = api.request("POST", "/v1/jobs", json=body)
    assert response.status_code == 403
    assert response.json()["error"]["detail"]["rule"] == "internal.vendor_staff_only"
    assert job_id not in response.text


def test_sales_neither_starts_nor_reads_jobs(api, drill):
    _, job_id = drill
    submitted = api.request("POST", "/v1/jobs", Role.SALES, json=job(service="inspect"))
    assert submitted.status_code == 403
    assert api.request("GET", f"/v1/jobs/{job_id}", Role.SALES).status_code == 403


# --- 10. on-site windows ------------------------------------------------------------------------


def test_an_onsite_window_of_millennia_is_refused_with_its_rule(api):
    api.contract(tier="machine_inspection")
    response = quote_onsite(api, "0001-01-01T00:00:00+08:00", "9999-12-31T23:59:59-08:00")
    assert response.status_code == 200
    body = response.json()
    assert (body["outcome"], body["rule"], body["quote"]) == (
        "refused",
        "onsite.ticket_window_too_long",
        None,
    )
    assert body["details"]["max_days"] == 366


def test_the_onsite_maximum_is_a_setting(make_api, settings):
    api = make_api(settings.model_copy(update={"onsite_max_days": 3}))
    api.contract(tier="machine_inspection")
    body = quote_onsite(api, "2025-06-01T09:00:00+00:00", "2025-06-05T09:00:00+00:00").json()
    assert (body["rule"], body["details"]) == (
        "onsite.ticket_window_too_long",
        {"days": 4, "max_days": 3},
    )


def test_settings_name_the_new_limits(monkeypatch):
    from api.settings import Settings

    monkeypatch.setenv("EMSOPS_INVENTORY_ROOT", "/srv/inventories")
    monkeypatch.setenv("EMSOPS_MAX_BODY_BYTES", "65536")
    monkeypatch.setenv("EMSOPS_ONSITE_MAX_DAYS", "31")
    settings = Settings()
    assert (settings.inventory_root, settings.max_body_bytes, settings.onsite_max_days) == (
        Path("/srv/inventories"),
        65536,
        31,
    )

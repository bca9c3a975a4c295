"""What other code calls (`emsops token create`, `emsops serve`), settings, and the app on
PostgreSQL."""

from __future__ import annotations

import inspect

import pytest
from test_api_store import make_job

from api import server, tokens
from api.settings import Settings, get_settings
from api.store import CANCELED, FAILED, UNANSWERED, Store, now
from api.tokens import Role, create_token, hash_token, role_of
from api.webhooks import Notifier
from tests.support.waiting import wait_for
from tests.support.webhook_receiver import WebhookReceiver


@pytest.fixture
def env_data_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("EMSOPS_DATA_DIR", str(tmp_path / "data"))
    get_settings.cache_clear()
    yield tmp_path / "data"
    get_settings.cache_clear()


def test_create_token_stores_only_a_hash_under_the_data_dir(env_data_dir):
    token = create_token("engineer")
    assert token.startswith("emsops_")
    store = Store(sqlite_path=env_data_dir / "emsops.sqlite3")
    try:
        assert role_of(store, token) is Role.ENGINEER
        assert role_of(store, token + "x") is None
    finally:
        store.close()
    raw = (env_data_dir / "emsops.sqlite3").read_bytes()
    assert token.encode() not in raw
    assert hash_token(token).encode() in raw


def test_create_token_refuses_unknown_roles(env_data_dir):
    with pytest.raises(ValueError, match="root"):
        create_token("root")


def test_cli_hook_signatures():
    assert str(inspect.signature(server.serve)) == "(host: 'str', port: 'int') -> 'None'"
    assert str(inspect.signature(tokens.create_token)) == (
        "(role: 'str', expires_in: 'timedelta | None' = None) -> 'str'"
    )


def test_settings_from_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("EMSOPS_WORKERS", "5")
    monkeypatch.setenv("EMSOPS_SITES", '{"acme": "inventories/acme/hosts.yml"}')
    monkeypatch.setenv("EMSOPS_DATABASE_URL", "postgresql://u@h/db")
    settings = Settings()
    assert settings.workers == 5
    assert settings.database_url == "postgresql://u@h/db"
    assert settings.resolve(settings.sites["acme"]) == (
        settings.project_dir / "inventories/acme/hosts.yml"
    )


@pytest.mark.parametrize("secret", ["changeme", "short"])
def test_placeholder_webhook_secret_refused_outside_development(secret):
    with pytest.raises(ValueError, match="placeholder"):
        Settings(webhook_secret=secret).check_secrets()
    Settings(webhook_secret=secret, development=True).check_secrets()


def notifier_of(store, **overrides) -> Notifier:
    options = {"url": None, "secret": None, "attempts": 3, "backoff_s": 0, "timeout_s": 1}
    return Notifier(store=store, **(options | overrides))


def test_webhook_without_secret_is_not_sent_but_recorded(store):
    job, _ = make_job(store)
    notifier = notifier_of(store, url="http://127.0.0.1:9/hook")
    try:
        store.finish_job(job["id"], state=CANCELED)
        notifier.notify(job["id"])
        wait_for(lambda: store.webhook(job["id"])["state"] == FAILED, what="giving up")
    finally:
        notifier.close()
    [row] = store.deliveries(job["id"])
    assert row["error"] == "not sent: EMSOPS_WEBHOOK_SECRET is not set"  # and never retried


def test_last_attempt_cut_short_by_a_crash_is_not_sent_again_beyond_the_limit(store):
    """A process died during the only attempt allowed; the next one records the loss."""
    job, _ = make_job(store)
    store.finish_job(job["id"], state=CANCELED)
    store.claim_webhook(due_by=now(), lease_until=now())  # its lease has already run out
    store.start_webhook_attempt(job_id=job["id"], attempt=1, url="u")
    with WebhookReceiver() as receiver:
        notifier = notifier_of(store, url=receiver.url, secret="s" * 16, attempts=1)
        try:
            wait_for(lambda: store.webhook(job["id"])["state"] == FAILED, what="giving up")
        finally:
            notifier.close()
        assert receiver.received == []
    assert [(d["attempt"], d["error"]) for d in store.deliveries(job["id"])] == [(1, UNANSWERED)]


def test_app_runs_a_job_on_postgresql(make_api, settings, pg_server):
    pg_server.create_database("emsops_app", owner="emsops_app", password="test-only")  # noqa: S106
    url = f"postgresql://emsops_app:test-only@{pg_server.host}:{pg_server.port}/emsops_app"
    api = make_api(settings.model_copy(update={"database_url": url}))
    assert api.ctx.store.pg
    api.contract()
    created = api.request(
        "POST",
        "/v1/jobs",
        json={"ticket_id": "T-1", "customer_id": "acme", "service": "inspect", "limit": "app1"},
    )
    assert created.status_code == 202
    assert api.wait(created.json()["id"])["state"] == "succeeded"
    assert not (settings.data_dir / "emsops.sqlite3").exists()

"""Tokens: `emsops token create|list|revoke`, expiry, and the 401 for a revoked or expired one."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta

import pytest

from api.settings import REPO_ROOT
from api.tokens import Role, issue_token, parse_duration

SALES_ROUTE = "/v1/tickets/T-1/settlements?service=restore"


def emsops(data_dir, *args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, EMSOPS_DATA_DIR=str(data_dir))
    return subprocess.run(  # noqa: S603 - our own CLI
        [sys.executable, "-m", "api.cli", "token", *args],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )


def listed(data_dir) -> list[dict[str, str]]:
    proc = emsops(data_dir, "list")
    assert proc.returncode == 0, proc.stderr
    header, *rows = proc.stdout.splitlines()
    return [dict(zip(header.split("\t"), row.split("\t"), strict=True)) for row in rows]


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def test_a_token_is_created_with_an_expiry_listed_and_revoked(api, settings):
    data_dir = settings.data_dir
    created = emsops(data_dir, "create", "--role", "sales", "--expires-in", "12h")
    assert created.returncode == 0, created.stderr
    token = created.stdout.strip()
    assert api.client.get(SALES_ROUTE, headers=bearer(token)).status_code == 200

    [row] = [r for r in listed(data_dir) if r["role"] == "sales" and r["expires_at"] != "-"]
    expires = datetime.fromisoformat(row["expires_at"])
    assert abs(expires - (datetime.now(UTC) + timedelta(hours=12))) < timedelta(minutes=5)
    assert row["revoked_at"] == "-"
    listing = emsops(data_dir, "list").stdout
    assert token not in listing and token.removeprefix("emsops_") not in listing

    revoked = emsops(data_dir, "revoke", row["id"])
    assert (revoked.returncode, revoked.stdout.strip()) == (0, f"revoked {row['id']}")
    refused = api.client.get(SALES_ROUTE, headers=bearer(token))
    assert refused.status_code == 401
    assert refused.json()["error"]["code"] == "unauthenticated"
    assert next(r for r in listed(data_dir) if r["id"] == row["id"])["revoked_at"] != "-"

    again = emsops(data_dir, "revoke", row["id"])
    assert again.returncode == 2
    assert f"no unrevoked token with id {row['id']}" in again.stderr


def test_revoking_an_unknown_id_fails(settings):
    proc = emsops(settings.data_dir, "revoke", "nope")
    assert proc.returncode == 2
    assert proc.stderr.startswith("emsops: error: no unrevoked token with id nope")


@pytest.mark.parametrize("duration", ["3x", "0d", "-1d", "12", "1.5h", "9999999d", "999999w"])
def test_bad_durations_are_refused(settings, duration):
    proc = emsops(settings.data_dir, "create", "--role", "admin", f"--expires-in={duration}")
    assert proc.returncode == 2
    assert "duration" in proc.stderr
    assert proc.stdout == ""


@pytest.mark.parametrize(
    ("text", "delta"),
    [
        ("30d", timedelta(days=30)),
        ("12h", timedelta(hours=12)),
        ("90m", timedelta(minutes=90)),
        ("2w", timedelta(weeks=2)),
    ],
)
def test_durations(text, delta):
    assert parse_duration(text) == delta


def test_an_expired_token_is_401(api):
    store = api.ctx.store
    expired = issue_token(store, Role.ENGINEER, expires_at=datetime.now(UTC) - timedelta(seconds=1))
    valid = issue_token(store, Role.ENGINEER, expires_at=datetime.now(UTC) + timedelta(hours=1))
    response = api.client.get("/v1/customers/acme", headers=bearer(expired))
    assert response.status_code == 401
    assert response.json()["error"]["message"] == "unknown, revoked or expired token"
    assert api.client.get("/v1/customers/acme", headers=bearer(valid)).status_code == 200


def test_sales_is_a_role_of_token_create(settings):
    help_text = emsops(settings.data_dir, "create", "--help").stdout
    assert "{ticket-system,engineer,sales,admin}" in help_text

"""Bearer tokens: random, shown once, stored only as a SHA-256 hash with their role."""

from __future__ import annotations

import hashlib
import re
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from enum import StrEnum

from api.settings import get_settings
from api.store import Store


class Role(StrEnum):
    TICKET_SYSTEM = "ticket-system"
    ENGINEER = "engineer"
    SALES = "sales"  # records sales guarantees; runs nothing
    ADMIN = "admin"


PREFIX = "emsops_"


def hash_token(token: str) -> str:
    # Tokens are 256 random bits: a fast hash is enough, no salt or key stretching needed.
    return hashlib.sha256(token.encode()).hexdigest()


def issue_token(store: Store, role: Role | str, *, expires_at: datetime | None = None) -> str:
    """Store a new token for `role` and return its plaintext (the only time it is visible)."""
    role = Role(role)
    token = PREFIX + secrets.token_urlsafe(32)
    # The store's timestamp format (UTC, microseconds), so expiries compare with now() as text.
    expires = expires_at and expires_at.astimezone(UTC).isoformat(timespec="microseconds")
    store.add_token(role=role.value, token_hash=hash_token(token), expires_at=expires)
    return token


def create_token(role: str, expires_in: timedelta | None = None) -> str:
    """For `emsops token create --role ROLE`: a token in the store under EMSOPS_DATA_DIR."""
    with _store() as store:
        expires_at = datetime.now(UTC) + expires_in if expires_in else None
        return issue_token(store, role, expires_at=expires_at)


def list_tokens() -> list[dict]:
    """For `emsops token list`: every token's id, role and dates (hashes stay in the store)."""
    with _store() as store:
        return store.tokens()


def revoke_token(token_id: str) -> bool:
    """For `emsops token revoke ID`: False when no valid token has that id."""
    with _store() as store:
        return store.revoke_token(token_id)


@contextmanager
def _store() -> Iterator[Store]:
    store = Store.from_settings(get_settings())
    try:
        yield store
    finally:
        store.close()


_DURATION = re.compile(r"^([1-9][0-9]{0,5})([mhdw])$")
_UNITS = {"m": "minutes", "h": "hours", "d": "days", "w": "weeks"}
MAX_DURATION = timedelta(days=3660)


def parse_duration(text: str) -> timedelta:
    """`30d`, `12h`, `90m`, `2w` as a timedelta; ValueError for anything else."""
    match = _DURATION.match(text)
    if not match:
        raise ValueError(f"not a duration like 30d, 12h, 90m or 2w: {text!r}")
    duration = timedelta(**{_UNITS[match.group(2)]: int(match.group(1))})
    if duration > MAX_DURATION:  # also keeps the expiry a date Python can hold
        raise ValueError(f"a token duration is at most {MAX_DURATION.days} days: {text!r}")
    return duration


def role_of(store: Store, token: str) -> Role | None:
    row = store.token_by_hash(hash_token(token))
    return Role(row["role"]) if row else None

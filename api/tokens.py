"""Bearer tokens: random, shown once, stored only as a SHA-256 hash with their role."""

from __future__ import annotations

import hashlib
import secrets
from enum import StrEnum

from api.settings import get_settings
from api.store import Store


class Role(StrEnum):
    TICKET_SYSTEM = "ticket-system"
    ENGINEER = "engineer"
    ADMIN = "admin"


PREFIX = "emsops_"


def hash_token(token: str) -> str:
    # Tokens are 256 random bits: a fast hash is enough, no salt or key stretching needed.
    return hashlib.sha256(token.encode()).hexdigest()


def issue_token(store: Store, role: Role | str) -> str:
    """Store a new token for `role` and return its plaintext (the only time it is visible)."""
    role = Role(role)
    token = PREFIX + secrets.token_urlsafe(32)
    store.add_token(role=role.value, token_hash=hash_token(token))
    return token


def create_token(role: str) -> str:
    """For `emsops token create --role ROLE`: a token in the store under EMSOPS_DATA_DIR."""
    store = Store.from_settings(get_settings())
    try:
        return issue_token(store, role)
    finally:
        store.close()


def role_of(store: Store, token: str) -> Role | None:
    row = store.token_by_hash(hash_token(token))
    return Role(row["role"]) if row else None

"""Settlements and tokens in the store, on SQLite and PostgreSQL (fixture `store`)."""

from __future__ import annotations

from decimal import Decimal

import pytest

from api.errors import SettlementConflict
from api.store import MIGRATIONS, Store


def pay(store: Store, *, amount="10.50", reference="r1", customer="c1", kind="payment"):
    return store.add_settlement(
        ticket_id="T-1",
        customer_id=customer,
        service="restore",
        kind=kind,
        amount=None if amount is None else Decimal(amount),
        reference=reference,
        recorded_by="x",
    )


def test_the_same_settlement_reference_again_is_the_first_record(store):
    first, created = pay(store)
    again, created_again = pay(store, amount="10.5")
    assert (created, created_again) == (True, False)
    assert again == first
    with pytest.raises(SettlementConflict):
        pay(store, amount="11.00")
    with pytest.raises(SettlementConflict):
        pay(store, amount=None, kind="guarantee")
    assert len(store.settlements(ticket_id="T-1", service="restore")) == 1


def test_a_ticket_with_another_customers_settlement_is_refused(store):
    store.put_customer(customer_id="c2", name="Two", webhook_url=None)
    pay(store)
    with pytest.raises(SettlementConflict, match="another customer"):
        pay(store, reference="r2", customer="c2")
    assert store.settlements(ticket_id="T-1", service="restore", customer_id="c2") == []


def test_settlements_from_before_customers_take_their_tickets_customer(store_factory, monkeypatch):
    """Migration 2 on a store that has settlements without a customer."""
    import api.store

    monkeypatch.setattr(api.store, "MIGRATIONS", MIGRATIONS[:1])
    old = store_factory()
    old.put_customer(customer_id="c1", name="One", webhook_url=None)
    old.add_decision(
        ticket_id="T-1", customer_id="c1", service="restore", request={}, decision={}, caller="x"
    )
    with old.tx() as tx:
        for settlement_id, ticket in (("s1", "T-1"), ("s2", "T-unknown")):
            tx.run(
                "INSERT INTO settlements VALUES (?, ?, 'restore', 'guarantee', NULL, 'ref', "
                "'x', '2025-01-01T00:00:00+00:00')",
                (settlement_id, ticket),
            )
    monkeypatch.setattr(api.store, "MIGRATIONS", MIGRATIONS)
    new = store_factory()
    assert new.schema_version() == len(MIGRATIONS)
    [known] = new.settlements(ticket_id="T-1", service="restore", customer_id="c1")
    assert known["id"] == "s1"
    [orphan] = new.settlements(ticket_id="T-unknown", service="restore")
    assert orphan["customer_id"] is None


def test_tokens_expire_and_are_revoked(store):
    old, new = "h-old", "h-new"  # hashes, as the store sees tokens
    store.add_token(role="admin", token_hash=old, expires_at="2000-01-01T00:00:00+00:00")
    valid = store.add_token(role="admin", token_hash=new, expires_at="2999-01-01T00:00:00+00:00")
    assert store.token_by_hash("h-old") is None
    assert store.token_by_hash("h-new")["id"] == valid
    assert store.revoke_token(valid) is True
    assert store.revoke_token(valid) is False
    assert store.token_by_hash("h-new") is None
    assert [t["id"] for t in store.tokens() if t["revoked_at"]] == [valid]
    assert all("token_hash" not in t for t in store.tokens())

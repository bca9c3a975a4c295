"""Table tests: one row per catalog rule of DESIGN section 2."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta, timezone
from decimal import Decimal

import pytest

from api.entitlements import (
    Contract,
    ContractState,
    Outcome,
    PriceList,
    Request,
    Rule,
    Service,
    Settlement,
    Tier,
    decide,
    onsite_days,
)
from api.settings import REPO_ROOT

PRICES = PriceList.load(REPO_ROOT / "api" / "prices.example.yml")
TODAY = date(2025, 6, 1)
MODULES = frozenset({"electricity", "water"})


def contract(tier=Tier.MACHINE_INSPECTION, state=ContractState.ACTIVE, ends_on=None):
    return Contract(tier, state, MODULES, "3.2", ends_on)


NO_SETTLEMENT = Settlement()


def run(request, *, c=None, settlement=NO_SETTLEMENT, missing_contract=False):
    return decide(
        request,
        contract=None if missing_contract else (c or contract()),
        prices=PRICES,
        settlement=settlement,
        today=TODAY,
    )


def at(day, hour):
    return datetime(2025, 6, day, hour, tzinfo=UTC)


DAY = timedelta(days=1)
UPGRADE = dict(service=Service.UPGRADE, installed_version="3.2.0")
ACTIVE = contract()
LAPSED = contract(state=ContractState.LAPSED)

TABLE = [
    # (id, request, contract, outcome, rule)
    (
        "inspect active machine",
        Request(Service.INSPECT),
        ACTIVE,
        Outcome.COVERED,
        Rule.INSPECT_ACTIVE,
    ),
    ("inspect lapsed", Request(Service.INSPECT), LAPSED, Outcome.REFUSED, Rule.INSPECT_LAPSED),
    (
        "inspect past end date",
        Request(Service.INSPECT),
        contract(ends_on=date(2025, 5, 31)),
        Outcome.REFUSED,
        Rule.INSPECT_LAPSED,
    ),
    *[
        (f"{s} active", Request(s), ACTIVE, Outcome.BILLABLE, Rule.VALUE_ADDED_PRICED)
        for s in (
            Service.RESTORE,
            Service.REPAIR_NETWORK,
            Service.TROUBLESHOOT_DATA,
            Service.REINSTALL,
        )
    ],
    *[
        (f"{s} lapsed", Request(s), LAPSED, Outcome.BILLABLE, Rule.VALUE_ADDED_PRICED)
        for s in (
            Service.RESTORE,
            Service.REPAIR_NETWORK,
            Service.TROUBLESHOOT_DATA,
            Service.REINSTALL,
        )
    ],
    (
        "network repair of a switch",
        Request(
            Service.REPAIR_NETWORK,
            target_groups={"sw1": frozenset({"network_devices"}), "app": frozenset({"ems_app"})},
        ),
        ACTIVE,
        Outcome.REFUSED,
        Rule.NETWORK_DEVICES,
    ),
    (
        "network repair of servers",
        Request(Service.REPAIR_NETWORK, target_groups={"app": frozenset({"ems_app"})}),
        ACTIVE,
        Outcome.BILLABLE,
        Rule.VALUE_ADDED_PRICED,
    ),
    (
        "upgrade patch in line",
        Request(**UPGRADE, target_version="3.2.2"),
        ACTIVE,
        Outcome.COVERED,
        Rule.UPGRADE_ACTIVE,
    ),
    (
        "upgrade lapsed",
        Request(**UPGRADE, target_version="3.2.2"),
        LAPSED,
        Outcome.REFUSED,
        Rule.UPGRADE_LAPSED,
    ),
    (
        "upgrade next minor",
        Request(**UPGRADE, target_version="3.3.0"),
        ACTIVE,
        Outcome.REFUSED,
        Rule.UPGRADE_MINOR_LINE,
    ),
    (
        "upgrade installed outside licensed line",
        Request(Service.UPGRADE, installed_version="3.1.0", target_version="3.1.4"),
        ACTIVE,
        Outcome.REFUSED,
        Rule.UPGRADE_LICENSED_LINE,
    ),
    (
        "upgrade downgrade",
        Request(Service.UPGRADE, installed_version="3.2.2", target_version="3.2.1"),
        ACTIVE,
        Outcome.REFUSED,
        Rule.UPGRADE_NOT_NEWER,
    ),
    (
        "upgrade same version",
        Request(**UPGRADE, target_version="3.2.0"),
        ACTIVE,
        Outcome.REFUSED,
        Rule.UPGRADE_NOT_NEWER,
    ),
    (
        "upgrade unknown installed",
        Request(Service.UPGRADE, target_version="3.2.2"),
        ACTIVE,
        Outcome.REFUSED,
        Rule.UPGRADE_INSTALLED_UNKNOWN,
    ),
    (
        "upgrade unlicensed module",
        Request(**UPGRADE, target_version="3.2.2", modules=frozenset({"electricity", "gas"})),
        ACTIVE,
        Outcome.REFUSED,
        Rule.UPGRADE_MODULE,
    ),
    (
        "upgrade licensed subset",
        Request(**UPGRADE, target_version="3.2.2", modules=frozenset({"water"})),
        ACTIVE,
        Outcome.COVERED,
        Rule.UPGRADE_ACTIVE,
    ),
    *[
        (
            f"onsite {t}",
            Request(Service.ONSITE, ticket_started_at=at(2, 9), ticket_ended_at=at(2, 17)),
            contract(tier=t),
            Outcome.COVERED,
            Rule.ONSITE_PACKAGE,
        )
        for t in (Tier.MACHINE_PACKAGE, Tier.MANUAL_PACKAGE)
    ],
    *[
        (
            f"onsite {t}",
            Request(Service.ONSITE, ticket_started_at=at(2, 9), ticket_ended_at=at(2, 17)),
            contract(tier=t),
            Outcome.BILLABLE,
            Rule.ONSITE_BILLABLE,
        )
        for t in (Tier.MACHINE_INSPECTION, Tier.MANUAL_INSPECTION)
    ],
    (
        "onsite package lapsed",
        Request(Service.ONSITE, ticket_started_at=at(2, 9), ticket_ended_at=at(2, 17)),
        contract(tier=Tier.MANUAL_PACKAGE, state=ContractState.LAPSED),
        Outcome.BILLABLE,
        Rule.ONSITE_BILLABLE,
    ),
    (
        "onsite end before start",
        Request(Service.ONSITE, ticket_started_at=at(3, 9), ticket_ended_at=at(2, 9)),
        ACTIVE,
        Outcome.REFUSED,
        Rule.ONSITE_WINDOW,
    ),
    ("onsite without window", Request(Service.ONSITE), ACTIVE, Outcome.REFUSED, Rule.ONSITE_WINDOW),
    (
        "onsite window of the longest allowed length",
        Request(Service.ONSITE, ticket_started_at=at(1, 9), ticket_ended_at=at(1, 9) + 366 * DAY),
        ACTIVE,
        Outcome.BILLABLE,
        Rule.ONSITE_BILLABLE,
    ),
    (
        "onsite window one started day too long",
        Request(
            Service.ONSITE, ticket_started_at=at(1, 9), ticket_ended_at=at(1, 10) + 366 * DAY
        ),
        ACTIVE,
        Outcome.REFUSED,
        Rule.ONSITE_WINDOW_TOO_LONG,
    ),
    (
        "onsite window from year 1 to 9999",
        Request(
            Service.ONSITE,
            ticket_started_at=datetime(1, 1, 1, tzinfo=timezone(timedelta(hours=8))),
            ticket_ended_at=datetime(9999, 12, 31, 23, 59, tzinfo=timezone(timedelta(hours=-8))),
        ),
        ACTIVE,
        Outcome.REFUSED,
        Rule.ONSITE_WINDOW_TOO_LONG,
    ),
]


@pytest.mark.parametrize(
    ("request_", "c", "outcome", "rule"), [row[1:] for row in TABLE], ids=[row[0] for row in TABLE]
)
def test_catalog_rule(request_, c, outcome, rule):
    decision = run(request_, c=c)
    assert (decision.outcome, decision.rule) == (outcome, rule)
    assert decision.runnable is (outcome is Outcome.COVERED)


@pytest.mark.parametrize("service", [Service.BACKUP, Service.DRILL, Service.SITE])
def test_internal_services_need_vendor_staff(service):
    assert run(Request(service)).rule is Rule.INTERNAL_STAFF_ONLY
    staff = run(Request(service, by_vendor_staff=True), missing_contract=True)
    assert (staff.outcome, staff.runnable) == (Outcome.COVERED, True)


@pytest.mark.parametrize(
    "service", [Service.INSPECT, Service.RESTORE, Service.UPGRADE, Service.ONSITE]
)
def test_no_contract_is_refused(service):
    assert run(Request(service), missing_contract=True).rule is Rule.CONTRACT_MISSING


def test_inspection_mode_follows_tier():
    assert run(Request(Service.INSPECT), c=contract(tier=Tier.MANUAL_INSPECTION)).details == {
        "mode": "manual"
    }
    assert run(Request(Service.INSPECT), c=contract(tier=Tier.MACHINE_PACKAGE)).details == {
        "mode": "automated"
    }


def test_lapsed_price_differs_from_active_price():
    active = run(Request(Service.REPAIR_NETWORK), c=ACTIVE).quote
    lapsed = run(Request(Service.REPAIR_NETWORK), c=LAPSED).quote
    assert active.net == Decimal("600.00")
    assert lapsed.net == Decimal("1100.00")
    assert lapsed.total == Decimal("1166.00")  # 6 % example tax included


def test_billable_runs_only_when_paid_in_full_or_guaranteed():
    req = Request(Service.REPAIR_NETWORK)
    total = run(req, c=LAPSED).quote.total
    assert not run(req, c=LAPSED, settlement=Settlement(paid=total - Decimal("0.01"))).runnable
    assert run(req, c=LAPSED, settlement=Settlement(paid=total)).runnable
    assert run(req, c=LAPSED, settlement=Settlement(guaranteed=True)).runnable


def test_the_longest_onsite_window_is_configurable():
    request = Request(Service.ONSITE, ticket_started_at=at(1, 9), ticket_ended_at=at(11, 9))
    decision = decide(
        request, contract=ACTIVE, prices=PRICES, settlement=NO_SETTLEMENT, today=TODAY,
        onsite_max_days=7,
    )
    assert (decision.rule, decision.details) == (
        Rule.ONSITE_WINDOW_TOO_LONG,
        {"days": 10, "max_days": 7},
    )
    assert decision.quote is None


def test_refusal_is_not_unlocked_by_payment():
    req = Request(Service.UPGRADE, installed_version="3.2.0", target_version="3.2.1")
    assert not run(req, c=LAPSED, settlement=Settlement(guaranteed=True)).runnable


def test_onsite_quote_from_ticket_window():
    req = Request(
        Service.ONSITE, ticket_started_at=at(2, 9), ticket_ended_at=at(4, 10), long_distance=True
    )
    decision = run(req, c=contract(tier=Tier.MACHINE_INSPECTION))
    quote = decision.quote.as_dict()
    assert decision.details == {"days": 3}
    assert [(li["quantity"], li["amount"]) for li in quote["lines"]] == [
        (3, "3600.00"),
        (1, "2000.00"),
    ]
    assert (quote["net"], quote["tax"], quote["total"]) == ("5600.00", "336.00", "5936.00")
    assert quote["tax_included"] is True
    assert quote["example_prices"] is True


@pytest.mark.parametrize(
    ("start", "end", "days"),
    [
        (at(2, 9), at(2, 10), 1),
        (at(2, 9), at(3, 9), 1),
        (at(2, 9), at(3, 10), 2),
        (at(2, 0), at(5, 0), 3),
    ],
)
def test_onsite_days_counts_started_days(start, end, days):
    assert onsite_days(start, end) == days


def test_price_list_must_price_both_states():
    with pytest.raises(ValueError, match="restore"):
        PriceList.from_mapping(
            {
                "currency": "X",
                "tax_rate": "0",
                "onsite": {"day_rate": 1, "long_distance_transport": 1},
                "value_added": {
                    "restore": {"active": 1},
                    "repair_network": {"active": 1, "lapsed": 1},
                    "troubleshoot_data": {"active": 1, "lapsed": 1},
                    "reinstall": {"active": 1, "lapsed": 1},
                },
            }
        )

"""The vendor's service catalog as pure functions: is a request covered, billable or refused?

Every rule of DESIGN section 2 has a stable id (`Rule`) that is returned with the decision, stored
with the job and shown to the ticket system, so a refusal always says which rule decided.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal
from enum import StrEnum
from pathlib import Path
from typing import Any

import yaml


class Service(StrEnum):
    INSPECT = "inspect"
    RESTORE = "restore"
    REPAIR_NETWORK = "repair_network"
    TROUBLESHOOT_DATA = "troubleshoot_data"
    REINSTALL = "reinstall"
    UPGRADE = "upgrade"
    ONSITE = "onsite"
    BACKUP = "backup"
    DRILL = "drill"
    SITE = "site"


VALUE_ADDED = frozenset(
    {Service.RESTORE, Service.REPAIR_NETWORK, Service.TROUBLESHOOT_DATA, Service.REINSTALL}
)
INTERNAL = frozenset({Service.BACKUP, Service.DRILL, Service.SITE})
# Services that run a catalog playbook `playbooks/<service>.yml`; on-site work is only a quote.
PLAYBOOK_SERVICES = frozenset(Service) - {Service.ONSITE}


class Tier(StrEnum):
    MACHINE_INSPECTION = "machine_inspection"
    MANUAL_INSPECTION = "manual_inspection"
    MACHINE_PACKAGE = "machine_package"
    MANUAL_PACKAGE = "manual_package"


class ContractState(StrEnum):
    ACTIVE = "active"  # "renewal and insured"
    LAPSED = "lapsed"  # "over-insured and no renewal"


class Outcome(StrEnum):
    COVERED = "covered"
    BILLABLE = "billable"
    REFUSED = "refused"


class Rule(StrEnum):
    CONTRACT_MISSING = "contract.missing"
    INTERNAL_STAFF = "internal.vendor_staff"
    INTERNAL_STAFF_ONLY = "internal.vendor_staff_only"
    INSPECT_ACTIVE = "inspect.active_contract"
    INSPECT_LAPSED = "inspect.lapsed_contract"
    VALUE_ADDED_PRICED = "value_added.priced_by_contract_state"
    NETWORK_DEVICES = "repair_network.no_network_devices"
    UPGRADE_ACTIVE = "upgrade.active_contract_free"
    UPGRADE_LAPSED = "upgrade.lapsed_contract"
    UPGRADE_INSTALLED_UNKNOWN = "upgrade.installed_version_unknown"
    UPGRADE_NOT_NEWER = "upgrade.target_not_newer"
    UPGRADE_MINOR_LINE = "upgrade.outside_installed_minor_line"
    UPGRADE_LICENSED_LINE = "upgrade.outside_licensed_version_line"
    UPGRADE_MODULE = "upgrade.module_outside_license"
    ONSITE_PACKAGE = "onsite.included_in_package"
    ONSITE_BILLABLE = "onsite.days_times_rate_plus_transport"
    ONSITE_WINDOW = "onsite.ticket_window_invalid"
    ONSITE_WINDOW_TOO_LONG = "onsite.ticket_window_too_long"


PACKAGE_TIERS = frozenset({Tier.MACHINE_PACKAGE, Tier.MANUAL_PACKAGE})
MANUAL_TIERS = frozenset({Tier.MANUAL_INSPECTION, Tier.MANUAL_PACKAGE})
# At most 9 digits a part: versions are compared as integers, and int() refuses a 5000-digit one.
_PART = r"(0|[1-9][0-9]{0,8})"
VERSION_RE = re.compile(rf"^{_PART}\.{_PART}\.{_PART}$")
LINE_RE = re.compile(rf"^{_PART}\.{_PART}$")
CENT = Decimal("0.01")
# A ticket open for longer is not one visit (a window from year 1 to 9999 once came back as a
# quote for 3.6 million days); EMSOPS_ONSITE_MAX_DAYS configures it.
ONSITE_MAX_DAYS = 366


@dataclass(frozen=True)
class Contract:
    tier: Tier
    state: ContractState
    licensed_modules: frozenset[str]
    version_line: str  # "3.2": the licensed minor line
    ends_on: date | None = None

    def effective_state(self, today: date) -> ContractState:
        """A contract past its end date is lapsed whatever its recorded state says."""
        if self.ends_on is not None and self.ends_on < today:
            return ContractState.LAPSED
        return self.state


@dataclass(frozen=True)
class PriceList:
    currency: str
    tax_rate: Decimal
    value_added: Mapping[Service, Mapping[ContractState, Decimal]]
    onsite_day_rate: Decimal
    long_distance_transport: Decimal
    example: bool = False

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any]) -> PriceList:
        value_added = {
            Service(name): {
                ContractState(state): Decimal(str(price)) for state, price in by.items()
            }
            for name, by in data["value_added"].items()
        }
        missing = {s for s in VALUE_ADDED if set(value_added.get(s, {})) != set(ContractState)}
        if missing:
            raise ValueError(f"price list lacks active/lapsed prices for {sorted(missing)}")
        return cls(
            currency=str(data["currency"]),
            tax_rate=Decimal(str(data["tax_rate"])),
            value_added=value_added,
            onsite_day_rate=Decimal(str(data["onsite"]["day_rate"])),
            long_distance_transport=Decimal(str(data["onsite"]["long_distance_transport"])),
            example=bool(data.get("example", False)),
        )

    @classmethod
    def load(cls, path: Path) -> PriceList:
        return cls.from_mapping(yaml.safe_load(path.read_text(encoding="utf-8")))


@dataclass(frozen=True)
class QuoteLine:
    description: str
    quantity: int
    unit_price: Decimal

    @property
    def amount(self) -> Decimal:
        return (self.unit_price * self.quantity).quantize(CENT, ROUND_HALF_UP)


@dataclass(frozen=True)
class Quote:
    currency: str
    lines: tuple[QuoteLine, ...]
    tax_rate: Decimal
    example_prices: bool

    @property
    def net(self) -> Decimal:
        return sum((line.amount for line in self.lines), Decimal("0.00"))

    @property
    def tax(self) -> Decimal:
        return (self.net * self.tax_rate).quantize(CENT, ROUND_HALF_UP)

    @property
    def total(self) -> Decimal:
        """Tax included, as the catalog requires."""
        return self.net + self.tax

    def as_dict(self) -> dict[str, Any]:
        return {
            "currency": self.currency,
            "lines": [
                {
                    "description": line.description,
                    "quantity": line.quantity,
                    "unit_price": str(line.unit_price),
                    "amount": str(line.amount),
                }
                for line in self.lines
            ],
            "net": str(self.net),
            "tax_rate": str(self.tax_rate),
            "tax": str(self.tax),
            "total": str(self.total),
            "tax_included": True,
            "example_prices": self.example_prices,
        }


@dataclass(frozen=True)
class Settlement:
    """What the ticket has on record for the service: money received and/or a sales guarantee."""

    paid: Decimal = Decimal("0")
    guaranteed: bool = False

    def covers(self, quote: Quote) -> bool:
        return self.guaranteed or self.paid >= quote.total


@dataclass(frozen=True)
class Request:
    service: Service
    by_vendor_staff: bool = False
    # host -> the inventory groups it belongs to (for network repair)
    target_groups: Mapping[str, frozenset[str]] = field(default_factory=dict)
    installed_version: str | None = None
    target_version: str | None = None
    modules: frozenset[str] | None = None  # None: the licensed modules
    ticket_started_at: datetime | None = None
    ticket_ended_at: datetime | None = None
    long_distance: bool = False


@dataclass(frozen=True)
class Decision:
    outcome: Outcome
    rule: Rule
    reason: str
    quote: Quote | None = None
    settled: bool = False
    details: Mapping[str, Any] = field(default_factory=dict)

    @property
    def runnable(self) -> bool:
        """Covered work runs; billable work runs once paid or guaranteed; refused never does."""
        return self.outcome is Outcome.COVERED or (
            self.outcome is Outcome.BILLABLE and self.settled
        )

    def as_dict(self) -> dict[str, Any]:
        return {
            "outcome": self.outcome.value,
            "rule": self.rule.value,
            "reason": self.reason,
            "quote": self.quote.as_dict() if self.quote else None,
            "settled": self.settled,
            "runnable": self.runnable,
            "details": dict(self.details),
        }


def parse_version(text: str) -> tuple[int, int, int]:
    match = VERSION_RE.match(text)
    if not match:
        raise ValueError(f"not a version X.Y.Z: {text!r}")
    major, minor, patch = (int(part) for part in match.groups())
    return major, minor, patch


def onsite_days(started_at: datetime, ended_at: datetime) -> int:
    """Started days of on-site work: each begun 24 hours counts as a whole day, at least one.

    The catalog says days are "calculated based on the start and end time of the ticket" without
    a rounding rule; counting every started day is the conservative reading (a visit from 09:00
    to 17:00 is one day, 09:00 to 10:00 the next morning is two).
    """
    elapsed = ended_at - started_at
    return max(1, math.ceil(elapsed / timedelta(days=1)))


def onsite_quote(prices: PriceList, *, days: int, long_distance: bool) -> Quote:
    lines = [QuoteLine("on-site service, per started day", days, prices.onsite_day_rate)]
    if long_distance:
        lines.append(QuoteLine("long-distance transport", 1, prices.long_distance_transport))
    return Quote(prices.currency, tuple(lines), prices.tax_rate, prices.example)


def value_added_quote(prices: PriceList, service: Service, state: ContractState) -> Quote:
    price = prices.value_added[service][state]
    line = QuoteLine(f"{service.value} ({state.value} contract)", 1, price)
    return Quote(prices.currency, (line,), prices.tax_rate, prices.example)


def _refused(rule: Rule, reason: str, **details: Any) -> Decision:
    return Decision(Outcome.REFUSED, rule, reason, details=details)


def _billable(rule: Rule, reason: str, quote: Quote, settlement: Settlement, **details) -> Decision:
    return Decision(
        Outcome.BILLABLE,
        rule,
        reason,
        quote=quote,
        settled=settlement.covers(quote),
        details=details,
    )


def decide(
    request: Request,
    *,
    contract: Contract | None,
    prices: PriceList,
    settlement: Settlement,
    today: date,
    onsite_max_days: int = ONSITE_MAX_DAYS,
) -> Decision:
    """The catalog decision for one request. Pure: everything it needs is passed in."""
    service = request.service
    if service in INTERNAL:
        if request.by_vendor_staff:
            return Decision(Outcome.COVERED, Rule.INTERNAL_STAFF, "internal work by vendor staff")
        return _refused(
            Rule.INTERNAL_STAFF_ONLY,
            f"{service.value} is internal vendor work, not customer service",
        )
    if contract is None:
        return _refused(Rule.CONTRACT_MISSING, "the customer has no O&M contract")
    state = contract.effective_state(today)

    if service is Service.INSPECT:
        if state is not ContractState.ACTIVE:
            return _refused(Rule.INSPECT_LAPSED, "inspection needs an active contract")
        mode = "manual" if contract.tier in MANUAL_TIERS else "automated"
        return Decision(
            Outcome.COVERED,
            Rule.INSPECT_ACTIVE,
            f"{mode} inspection of the {contract.tier} tier",
            details={"mode": mode},
        )

    if service in VALUE_ADDED:
        if service is Service.REPAIR_NETWORK:
            devices = sorted(
                h for h, groups in request.target_groups.items() if "network_devices" in groups
            )
            if devices:
                return _refused(
                    Rule.NETWORK_DEVICES,
                    "network repair never debugs switches or routers (group network_devices)",
                    hosts=devices,
                )
        quote = value_added_quote(prices, service, state)
        return _billable(
            Rule.VALUE_ADDED_PRICED,
            f"value-added service, {state.value}-contract price",
            quote,
            settlement,
            contract_state=state.value,
        )

    if service is Service.UPGRADE:
        return _decide_upgrade(request, contract, state)

    if service is Service.ONSITE:
        if contract.tier in PACKAGE_TIERS and state is ContractState.ACTIVE:
            return Decision(
                Outcome.COVERED, Rule.ONSITE_PACKAGE, f"on-site service is part of {contract.tier}"
            )
        start, end = request.ticket_started_at, request.ticket_ended_at
        if start is None or end is None or end <= start:
            return _refused(
                Rule.ONSITE_WINDOW, "an on-site quote needs the ticket's start and a later end"
            )
        days = onsite_days(start, end)
        if days > onsite_max_days:
            return _refused(
                Rule.ONSITE_WINDOW_TOO_LONG,
                f"the ticket window spans {days} days, more than the {onsite_max_days} an "
                "on-site quote is made for",
                days=days,
                max_days=onsite_max_days,
            )
        quote = onsite_quote(prices, days=days, long_distance=request.long_distance)
        return _billable(
            Rule.ONSITE_BILLABLE,
            f"on-site service outside a package: {days} started day(s)",
            quote,
            settlement,
            days=days,
        )
    raise ValueError(f"no rule for service {service!r}")  # unreachable while Service is covered


def _decide_upgrade(request: Request, contract: Contract, state: ContractState) -> Decision:
    if state is not ContractState.ACTIVE:
        return _refused(Rule.UPGRADE_LAPSED, "lapsed contracts get no upgrade service")
    if request.installed_version is None:
        return _refused(
            Rule.UPGRADE_INSTALLED_UNKNOWN,
            "the site's installed version is not on record; record it before upgrading",
        )
    target = parse_version(request.target_version or "")
    installed = parse_version(request.installed_version)
    line = LINE_RE.match(contract.version_line)
    licensed = (int(line.group(1)), int(line.group(2))) if line else None
    if target[:2] != installed[:2]:
        return _refused(
            Rule.UPGRADE_MINOR_LINE,
            f"{request.target_version} is outside the installed minor line "
            f"{installed[0]}.{installed[1]}",
        )
    if target[:2] != licensed:
        return _refused(
            Rule.UPGRADE_LICENSED_LINE,
            f"{request.target_version} is outside the licensed line {contract.version_line}",
        )
    if target <= installed:
        return _refused(
            Rule.UPGRADE_NOT_NEWER,
            f"{request.target_version} is not newer than the installed {request.installed_version}",
        )
    modules = request.modules if request.modules is not None else contract.licensed_modules
    outside = sorted(modules - contract.licensed_modules)
    if outside:
        return _refused(
            Rule.UPGRADE_MODULE,
            "modules outside the license: " + ", ".join(outside),
            modules=outside,
        )
    return Decision(
        Outcome.COVERED,
        Rule.UPGRADE_ACTIVE,
        "patch upgrade within the licensed minor line, free while the contract is active",
        details={"modules": sorted(modules)},
    )

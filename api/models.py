"""Request and response bodies: inputs forbid unknown fields, each service has its parameters."""

from __future__ import annotations

from datetime import date
from decimal import Decimal
from typing import Annotated, Any, Literal

import yaml
from pydantic import AfterValidator, AwareDatetime, BaseModel, ConfigDict, Field, StringConstraints

from api.entitlements import LINE_RE, VERSION_RE, ContractState, Tier
from api.inventory import LIMIT_RE
from api.layout import ROLES

Ident = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,63}$")]
Version = Annotated[str, StringConstraints(pattern=VERSION_RE.pattern)]
VersionLine = Annotated[str, StringConstraints(pattern=LINE_RE.pattern)]
Module = Annotated[str, StringConstraints(pattern=r"^[a-z][a-z0-9_]{0,31}$")]
Limit = Annotated[str, StringConstraints(pattern=LIMIT_RE)]


def _encodable(value: str) -> str:
    # JSON may carry a lone UTF-16 surrogate ("\ud800") that no UTF-8 database, log or answer
    # can hold: refuse it here rather than fail later.
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("text holds a lone surrogate, which is not a character") from None
    return value


Encodable = AfterValidator(_encodable)
Text = Annotated[str, StringConstraints(min_length=1, max_length=500), Encodable]
SettlementService = Literal["onsite", "restore", "repair_network", "troubleshoot_data", "reinstall"]
Money = Annotated[Decimal, Field(gt=0, max_digits=14, decimal_places=2)]


class Input(BaseModel):
    model_config = ConfigDict(extra="forbid")


# --- per-service parameters (reach the playbook as role inputs, see ROLE_INPUTS; marked unsafe)


class NoParameters(Input):
    pass


def _numeric_inputs(role: str) -> dict[str, type]:
    """A role's int and float inputs, from its argument spec (the one place they are declared)."""
    spec = yaml.safe_load((ROLES / role / "meta" / "argument_specs.yml").read_text())
    kinds = {"int": int, "float": float}
    return {name: kinds[o["type"]] for name, o in spec["argument_specs"]["main"]["options"].items()
            if o.get("type") in kinds}


_THRESHOLDS = _numeric_inputs("inspection")


def _thresholds(value: dict[str, int | float]) -> dict[str, int | float]:
    for name, number in value.items():
        kind = _THRESHOLDS.get(name)
        if kind is None:
            raise ValueError(f"{name!r} is not a threshold of role inspection (one of: "
                             f"{', '.join(sorted(_THRESHOLDS))})")
        if kind is int and not isinstance(number, int):
            raise ValueError(f"{name} takes a whole number, not {number!r}")
    return value


class InspectParameters(Input):
    thresholds: Annotated[dict[str, int | float], AfterValidator(_thresholds)] = Field(
        default_factory=dict, max_length=64,
        description="thresholds of role inspection for this run, by their input names "
                    "(e.g. inspection_backup_warn_age_s); the others keep the inventory's")


class RestoreParameters(Input):
    reason: Literal["fails_to_start", "abnormal_operation", "expansion"] = "abnormal_operation"


class RepairNetworkParameters(Input):
    issue: Literal["lan_change", "ip_conflict"]


class TroubleshootDataParameters(Input):
    symptom: Literal["missing", "inaccurate", "abnormal_collection"]
    meters: list[Ident] = Field(default_factory=list, max_length=256)
    since: AwareDatetime | None = Field(
        default=None, description="window start; default: the last 24 hours or since the first "
                                  "reading, whichever is shorter")
    until: AwareDatetime | None = Field(default=None, description="window end; default: now")


class ReinstallParameters(Input):
    snapshot: Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{8,64}$")] | None = Field(
        default=None, description="restic snapshot id; default: the newest for each host"
    )


class UpgradeParameters(Input):
    target_version: Version
    modules: list[Module] | None = Field(
        default=None, max_length=32, description="modules to run; default: the licensed ones"
    )


# --- the one naming rule: API parameter -> role-prefixed input of the service's role ----------
# The runner writes each given parameter under its role input's name as an unsafe extra var
# (beside `emsops_job`); the command line uses the same names. docs/api.md lists them.
# SPREAD: the parameter is a mapping of the role's own input names, each passed as it is.
SPREAD = "*"
ROLE_INPUTS: dict[str, dict[str, str]] = {
    "inspect": {"thresholds": SPREAD},
    "restore": {"reason": "system_restore_reason"},
    "repair_network": {"issue": "network_repair_issue"},
    "troubleshoot_data": {
        "symptom": "data_troubleshoot_symptom",
        "meters": "data_troubleshoot_meters",
        "since": "data_troubleshoot_since",
        "until": "data_troubleshoot_until",
    },
    "reinstall": {"snapshot": "reinstall_snapshot"},
    "upgrade": {
        "target_version": "patch_upgrade_target_version",
        "modules": "patch_upgrade_modules",
    },
}


def role_inputs(service: str, parameters: dict[str, Any]) -> dict[str, Any]:
    """The role inputs of a job's parameters; a parameter left unset (None) keeps the role's
    default."""
    names = ROLE_INPUTS.get(service, {})
    inputs: dict[str, Any] = {}
    for key, value in parameters.items():
        if value is None:
            continue
        if names[key] == SPREAD:
            inputs.update(value)
        else:
            inputs[names[key]] = value
    return inputs


class _JobBase(Input):
    ticket_id: Ident
    customer_id: Ident
    note: Text | None = Field(
        default=None,
        description="free text from the ticket for the run's report; never templated by Ansible",
    )
    limit: Limit = Field(
        default="all", description="host pattern, resolved against the customer's inventory"
    )


class InspectJob(_JobBase):
    service: Literal["inspect"]
    parameters: InspectParameters = Field(default_factory=InspectParameters)


class RestoreJob(_JobBase):
    service: Literal["restore"]
    parameters: RestoreParameters = Field(default_factory=RestoreParameters)


class RepairNetworkJob(_JobBase):
    service: Literal["repair_network"]
    parameters: RepairNetworkParameters


class TroubleshootDataJob(_JobBase):
    service: Literal["troubleshoot_data"]
    parameters: TroubleshootDataParameters


class ReinstallJob(_JobBase):
    service: Literal["reinstall"]
    parameters: ReinstallParameters = Field(default_factory=ReinstallParameters)


class UpgradeJob(_JobBase):
    service: Literal["upgrade"]
    parameters: UpgradeParameters


class InternalJob(_JobBase):
    """Vendor staff only (roles engineer and admin)."""

    service: Literal["backup", "drill", "site"]
    parameters: NoParameters = Field(default_factory=NoParameters)


JobRequest = Annotated[
    InspectJob
    | RestoreJob
    | RepairNetworkJob
    | TroubleshootDataJob
    | ReinstallJob
    | UpgradeJob
    | InternalJob,
    Field(discriminator="service"),
]


class QuoteRequest(Input):
    customer_id: Ident
    service: SettlementService
    ticket_id: Ident | None = Field(
        default=None, description="when given, the answer says whether it is already settled"
    )
    ticket_started_at: AwareDatetime | None = None
    ticket_ended_at: AwareDatetime | None = None
    long_distance: bool = False


class CustomerIn(Input):
    name: Text
    webhook_url: (
        Annotated[str, StringConstraints(pattern=r"^https?://\S{1,2000}$"), Encodable] | None
    ) = None


class ContractIn(Input):
    tier: Tier
    state: ContractState
    licensed_modules: list[Module] = Field(max_length=32)
    version_line: VersionLine
    ends_on: date | None = None


class SiteIn(Input):
    inventory: Annotated[str, StringConstraints(min_length=1, max_length=1000), Encodable] = Field(
        description="inventory path on the API host, inside EMSOPS_INVENTORY_ROOT; relative paths "
        "start at the project folder"
    )
    installed_version: Version | None = None


class SettlementIn(Input):
    customer_id: Ident = Field(description="the ticket's customer: it settles only their jobs")
    service: SettlementService
    kind: Literal["payment", "guarantee"]
    amount: Money | None = Field(default=None, description="required for a payment")
    reference: Text = Field(
        description="the payment's or guarantee's own id: the same one again is the same record"
    )


# --- responses ----------------------------------------------------------------------------------


class ErrorDetail(BaseModel):
    code: str
    message: str
    detail: Any = None


class ErrorBody(BaseModel):
    error: ErrorDetail


class QuoteLineOut(BaseModel):
    description: str
    quantity: int
    unit_price: str
    amount: str


class QuoteOut(BaseModel):
    currency: str
    lines: list[QuoteLineOut]
    net: str
    tax_rate: str
    tax: str
    total: str
    tax_included: bool
    example_prices: bool


class DecisionOut(BaseModel):
    outcome: Literal["covered", "billable", "refused"]
    rule: str
    reason: str
    quote: QuoteOut | None
    settled: bool
    runnable: bool
    details: dict[str, Any]


class HostStats(BaseModel):
    ok: int
    changed: int
    dark: int
    failures: int
    ignored: int
    processed: int
    rescued: int
    skipped: int


class JobOut(BaseModel):
    id: str
    ticket_id: str
    customer_id: str
    service: str
    limit: str
    hosts: list[str]
    parameters: dict[str, Any]
    note: str | None
    state: Literal["queued", "running", "succeeded", "failed", "canceled", "interrupted"]
    decision: DecisionOut
    playbook_status: str | None
    rc: int | None
    host_stats: dict[str, HostStats] | None
    set_stats: dict[str, Any] | None
    verification: dict[str, Any] | None
    verdict: bool | None
    error: str | None
    cancel_requested: bool
    created_at: str
    started_at: str | None
    finished_at: str | None

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> JobOut:
        fields = {k: v for k, v in row.items() if k in cls.model_fields}
        fields["limit"] = row["limit_pattern"]
        fields["cancel_requested"] = bool(row["cancel_requested"])
        fields["verdict"] = None if row["verdict"] is None else bool(row["verdict"])
        return cls(**fields)


class EventOut(BaseModel):
    counter: int
    event: str
    host: str | None
    task: str | None
    created: str | None
    stdout: str | None
    data: dict[str, Any]


class EventPage(BaseModel):
    job_id: str
    state: str
    events: list[EventOut]
    next_after: int = Field(description="pass as `after` to get the following page")


class WebhookAttemptOut(BaseModel):
    attempt: int
    url: str
    attempted_at: str
    status_code: int | None = Field(description="the receiver's HTTP status; null: no answer")
    error: str | None
    next_attempt_at: str | None = Field(description="when the next attempt was due; null: none")


class WebhookLogOut(BaseModel):
    job_id: str
    delivery_id: str | None = Field(
        description="sent as X-Emsops-Delivery on every attempt; null until the job ends"
    )
    state: Literal["pending", "delivered", "failed"] | None
    next_attempt_at: str | None
    attempts: list[WebhookAttemptOut]


class CustomerOut(BaseModel):
    id: str
    name: str
    webhook_url: str | None
    created_at: str


class ContractOut(BaseModel):
    customer_id: str
    tier: Tier
    state: ContractState
    licensed_modules: list[str]
    version_line: str
    ends_on: str | None
    updated_at: str


class SiteOut(BaseModel):
    customer_id: str
    inventory: str
    installed_version: str | None
    updated_at: str


class SettlementOut(BaseModel):
    id: str
    ticket_id: str
    customer_id: str | None
    service: str
    kind: str
    amount: str | None
    reference: str
    recorded_by: str
    recorded_at: str


class Health(BaseModel):
    status: Literal["ok"]
    schema_version: int


class SignoffRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    remarks: str = Field(min_length=1, max_length=4000, description="what the engineer adds")


class InspectionReportOut(BaseModel):
    """An inspection report (api.reports.inspection): sections of DESIGN §6 with findings."""

    id: str
    site: str
    mode: Literal["automated", "manual"]
    state: Literal["final", "awaiting_signoff", "signed"]
    status: Literal["ok", "warn", "fail"]
    started: str | None
    generated: str | None
    version: str | None
    counts: dict[str, int]
    hosts: dict[str, str]
    sections: list[dict[str, Any]]
    actions: list[dict[str, Any]]
    pictures: dict[str, Any]
    trend: dict[str, Any] | None
    signoff: dict[str, str] | None

"""Request dependencies: the app context and the authenticated caller with role checks."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from api.context import AppContext
from api.errors import Forbidden, Unauthenticated
from api.tokens import Role, hash_token

_bearer = HTTPBearer(auto_error=False, description="A token from `emsops token create`")


def get_ctx(request: Request) -> AppContext:
    return request.app.state.ctx


@dataclass(frozen=True)
class Caller:
    token_id: str
    role: Role

    @property
    def is_vendor_staff(self) -> bool:
        return self.role in (Role.ENGINEER, Role.ADMIN)


Ctx = Annotated[AppContext, Depends(get_ctx)]


def current_caller(
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
    ctx: Ctx,
) -> Caller:
    if credentials is None:
        raise Unauthenticated("a bearer token is required")
    row = ctx.store.token_by_hash(hash_token(credentials.credentials))
    if row is None:
        raise Unauthenticated("unknown, revoked or expired token")
    return Caller(token_id=row["id"], role=Role(row["role"]))


class Allow:
    """Route dependency: the caller must hold one of `roles`."""

    def __init__(self, *roles: Role) -> None:
        self.roles = frozenset(roles)

    def __call__(self, caller: Annotated[Caller, Depends(current_caller)]) -> Caller:
        require_role(caller, self.roles)
        return caller


def require_role(caller: Caller, roles: frozenset[Role]) -> None:
    """For checks that depend on the request (e.g. the kind of a settlement)."""
    if caller.role not in roles:
        raise Forbidden(
            f"role {caller.role.value} may not do this",
            detail={"allowed": sorted(r.value for r in roles)},
        )


ANY_ROLE = Allow(*Role)
AnyCaller = Annotated[Caller, Depends(ANY_ROLE)]
# Sales decides guarantees; it neither starts nor follows playbook runs.
JobsCaller = Annotated[Caller, Depends(Allow(Role.TICKET_SYSTEM, Role.ENGINEER, Role.ADMIN))]
StaffCaller = Annotated[Caller, Depends(Allow(Role.ENGINEER, Role.ADMIN))]
AdminCaller = Annotated[Caller, Depends(Allow(Role.ADMIN))]
# Payments come from the ticket system, guarantees from sales (both: admin); never engineers.
SettlementsCaller = Annotated[Caller, Depends(Allow(Role.TICKET_SYSTEM, Role.SALES, Role.ADMIN))]
SETTLEMENT_ROLES = {
    "payment": frozenset({Role.TICKET_SYSTEM, Role.ADMIN}),
    "guarantee": frozenset({Role.SALES, Role.ADMIN}),
}

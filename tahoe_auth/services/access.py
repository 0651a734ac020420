"""Authorization inside use cases, on top of the interceptor's per-method check:
which tenant a request acts on, finer permissions (acting on someone else), and the
granting rule. Every check goes through `domain.decision`, like the interceptor's."""

from __future__ import annotations

from collections.abc import Iterable

from tahoe_auth.domain import decision
from tahoe_auth.domain.errors import InvalidArgument, PermissionDenied, PrivilegeEscalation
from tahoe_auth.domain.principal import USER, Principal


def target_tenant(principal: Principal, requested: str) -> str:
    """The tenant a request acts on: the one it names, else the caller's own. Another
    tenant's id is NOT_FOUND for tenant-bound callers (no existence oracle)."""
    tenant_id = requested or principal.tenant_id
    if not tenant_id:
        raise InvalidArgument("tenant_id", "tenant_id is required for callers not bound to a tenant")
    decision.require(principal, "", tenant_id)
    return tenant_id


def require(principal: Principal, permission: str, tenant_id: str) -> None:
    decision.require(principal, permission, tenant_id)


def holds(principal: Principal, permission: str) -> bool:
    return decision.decide(principal, permission).allowed


def is_self(principal: Principal, tenant_id: str, user_id: str) -> bool:
    return principal.subject_type == USER and principal.subject == user_id and principal.tenant_id == tenant_id


def ensure_can_grant(principal: Principal, permissions: Iterable[str]) -> None:
    """Nobody grants a permission they do not hold (wildcards included: granting
    `users:*` needs `users:*` or wider)."""
    if principal.platform_admin:
        return
    missing = principal.permissions.missing(permissions)
    if missing:
        raise PrivilegeEscalation(missing[0])


def require_user(principal: Principal, what: str) -> str:
    if principal.subject_type != USER:
        raise PermissionDenied(f"{what} needs a user's credential")
    return principal.subject

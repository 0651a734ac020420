"""What the database says about a subject or a session: loaded on a cold path only,
then cached in-process until a change notification (or a backstop age) drops it."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from tahoe_auth.domain import security_policy
from tahoe_auth.domain.errors import NotFound
from tahoe_auth.domain.permissions import BUILTIN_ROLES, PermissionSet, is_builtin
from tahoe_auth.store import models as m
from tahoe_auth.store.db import SYSTEM, Database, UnitOfWork


@dataclass(frozen=True)
class SubjectFacts:
    permissions: PermissionSet
    subject_active: bool
    tenant_active: bool
    # Tokens issued (`iat`) before this Unix time are refused: a service account's
    # secrets were revoked, and with them every token issued so far.
    not_before: int = 0
    # Users: has a confirmed second factor; the tenant's policy requires one of them;
    # the tenant's step-up window in seconds.
    mfa_enrolled: bool = False
    mfa_required: bool = False
    step_up_seconds: int = 0


@dataclass(frozen=True)
class SessionFacts:
    active: bool
    expires_at: float


MISSING_SUBJECT = SubjectFacts(PermissionSet.of(()), subject_active=False, tenant_active=True)


def role_permissions(roles: list[str], custom: dict[str, list[str]] | None = None) -> PermissionSet:
    grants: set[str] = set()
    for role in roles:
        grants.update(BUILTIN_ROLES.get(role, ()))
        grants.update((custom or {}).get(role, ()))
    return PermissionSet.of(grants)


def user_permissions(uow: UnitOfWork, user_id: str) -> tuple[list[str], PermissionSet]:
    """A user's roles and the union of their permissions (built-in and custom roles)."""
    roles = uow.role_bindings.roles_of(user_id)
    custom = uow.roles.permissions_of([r for r in roles if not is_builtin(r)])
    return roles, role_permissions(roles, custom)


class Directory:
    def __init__(self, db: Database) -> None:
        self._db = db

    def user_facts(self, tenant_id: str, user_id: str) -> SubjectFacts:
        with self._db.unit_of_work(tenant_id) as uow:
            try:
                tenant = uow.tenants.get(tenant_id)
                user = uow.users.get(user_id)
            except NotFound:
                return MISSING_SUBJECT
            roles, permissions = user_permissions(uow, user_id)
            enrolled = uow.mfa.has_confirmed_factor(user_id)
        policy = security_policy.of_tenant_settings(tenant.settings)
        return SubjectFacts(
            permissions=permissions,
            subject_active=user.status == "active",
            tenant_active=tenant.status == "active",
            mfa_enrolled=enrolled,
            mfa_required=policy.mfa_required_for(roles),
            step_up_seconds=policy.step_up_seconds,
        )

    def service_facts(self, tenant_id: str, account_id: str) -> SubjectFacts:
        """Tenant accounts live in their tenant; platform-wide ones (tenant "") in the system scope."""
        with self._db.unit_of_work(tenant_id or SYSTEM) as uow:
            if tenant_id:
                tenant = uow.tenants.find(tenant_id)
                account: m.ServiceAccountFields | None = uow.service_accounts.find(account_id)
                tenant_active = tenant is not None and tenant.status == "active"
            else:
                account = uow.platform_service_accounts.find(account_id)
                tenant_active = True
        if account is None:
            return MISSING_SUBJECT
        revoked = account.secret_revoked_at
        return SubjectFacts(
            permissions=PermissionSet.of(account.permissions),
            subject_active=True,
            tenant_active=tenant_active,
            not_before=int(revoked.timestamp()) + 1 if revoked is not None else 0,
        )

    def session_facts(self, tenant_id: str, session_id: str, now: dt.datetime) -> SessionFacts:
        with self._db.unit_of_work(tenant_id) as uow:
            try:
                session = uow.sessions.get(session_id)
            except NotFound:
                return SessionFacts(active=False, expires_at=now.timestamp())
        active = session.revoked_at is None and session.expires_at > now
        return SessionFacts(active=active, expires_at=session.expires_at.timestamp())

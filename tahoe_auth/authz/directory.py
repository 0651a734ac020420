"""What the database says about a subject or a session: loaded on a cold path only,
then cached in-process until a change notification (or a backstop age) drops it."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from tahoe_auth.domain.errors import NotFound
from tahoe_auth.domain.permissions import BUILTIN_ROLES, PermissionSet
from tahoe_auth.store.db import Database


@dataclass(frozen=True)
class SubjectFacts:
    permissions: PermissionSet
    subject_active: bool
    tenant_active: bool


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
            roles = uow.role_bindings.roles_of(user_id)
        return SubjectFacts(
            permissions=role_permissions(roles),
            subject_active=user.status == "active",
            tenant_active=tenant.status == "active",
        )

    def session_facts(self, tenant_id: str, session_id: str, now: dt.datetime) -> SessionFacts:
        with self._db.unit_of_work(tenant_id) as uow:
            try:
                session = uow.sessions.get(session_id)
            except NotFound:
                return SessionFacts(active=False, expires_at=now.timestamp())
        active = session.revoked_at is None and session.expires_at > now
        return SessionFacts(active=active, expires_at=session.expires_at.timestamp())

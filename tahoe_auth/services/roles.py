"""Roles: built-in and custom, assignment, and effective permissions.

Rules: nobody grants (or takes away) a role whose permissions they do not hold
(PRIVILEGE_ESCALATION), and the tenant's last active owner keeps `owner` (LAST_OWNER).
Changes reach every instance's caches within a second, access tokens included.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from tahoe_auth.domain import events, permissions
from tahoe_auth.domain.errors import AlreadyExists, FailedPrecondition, InvalidArgument, LastOwner, NotFound, RoleInUse
from tahoe_auth.domain.fields import check_description
from tahoe_auth.domain.permissions import BUILTIN_ROLES, OWNER, PermissionSet
from tahoe_auth.domain.principal import API_KEY, SERVICE, USER
from tahoe_auth.kernel.changes import ChangeNotifier
from tahoe_auth.services import access
from tahoe_auth.services.audit import AuditLog
from tahoe_auth.services.context import CallContext
from tahoe_auth.services.events import emit
from tahoe_auth.store import models as m
from tahoe_auth.store.db import Database, UnitOfWork
from tahoe_auth.store.directory import user_permissions

UPDATABLE = frozenset({"description", "permissions"})


@dataclass(frozen=True)
class RoleView:
    name: str
    description: str
    permissions: list[str]
    builtin: bool
    row: m.Role | None = None


@dataclass(frozen=True)
class EffectivePermissions:
    subject_type: str
    subject: str
    permissions: list[str]
    roles: list[str]


BUILTIN_DESCRIPTIONS = {
    "owner": "Everything in the tenant, including ownership and tenant settings.",
    "admin": "Runs the tenant day to day; cannot change tenant settings or grant owner.",
    "member": "Uses the product and manages their own API keys.",
    "viewer": "Reads only.",
}


def builtin_view(name: str) -> RoleView:
    return RoleView(name, BUILTIN_DESCRIPTIONS.get(name, ""), list(BUILTIN_ROLES[name]), builtin=True)


def role_grants(uow: UnitOfWork, role: str) -> list[str]:
    """The permissions of a built-in or custom role of the unit of work's tenant."""
    if permissions.is_builtin(role):
        return list(BUILTIN_ROLES[role])
    row = uow.roles.find(role)
    if row is None:
        raise NotFound("role", f"role {role!r} not found")
    return list(row.permissions)


def ensure_not_last_owner(uow: UnitOfWork, tenant_id: str, user_id: str) -> None:
    """Call before removing, disabling or deleting an owner; locks the tenant row so
    that two concurrent demotions cannot both see a second owner."""
    uow.tenants.lock(tenant_id)
    owners = uow.role_bindings.active_holders(OWNER)
    if user_id in owners and len(owners) == 1:
        raise LastOwner()


class Roles:
    def __init__(self, db: Database, notifier: ChangeNotifier, audit_log: AuditLog) -> None:
        self._audit = audit_log
        self._db = db
        self._notifier = notifier

    def all(self, ctx: CallContext, tenant_id: str) -> list[RoleView]:
        tenant_id = access.target_tenant(ctx.require_principal(), tenant_id)
        with self._db.unit_of_work(tenant_id) as uow:
            custom = [self._view(row) for row in uow.roles.all()]
        return [builtin_view(name) for name in BUILTIN_ROLES] + custom

    def get(self, ctx: CallContext, tenant_id: str, name: str) -> RoleView:
        tenant_id = access.target_tenant(ctx.require_principal(), tenant_id)
        if permissions.is_builtin(name):
            return builtin_view(name)
        with self._db.unit_of_work(tenant_id) as uow:
            return self._view(self._custom(uow, name))

    def create(self, ctx: CallContext, tenant_id: str, name: str, description: str, grants: Sequence[str]) -> RoleView:
        principal = ctx.require_principal()
        tenant_id = access.target_tenant(principal, tenant_id)
        name = permissions.check_role_name(name, "role.name")
        if permissions.is_builtin(name):
            raise AlreadyExists("role", f"{name!r} is a built-in role")
        grants = self._check_grants(grants)
        access.ensure_can_grant(principal, grants)
        with self._db.unit_of_work(tenant_id) as uow:
            row = uow.roles.add(
                m.Role(tenant_id=tenant_id, name=name, description=check_description(description), permissions=grants)
            )
            self._changed(uow, ctx, tenant_id, "role.create", name, {"permissions": grants})
            uow.commit()
        return self._view(row)

    def update(
        self, ctx: CallContext, tenant_id: str, name: str, mask: Sequence[str], description: str, grants: Sequence[str]
    ) -> RoleView:
        principal = ctx.require_principal()
        tenant_id = access.target_tenant(principal, tenant_id)
        if not mask or set(mask) - UPDATABLE:
            raise InvalidArgument("update_mask", "update_mask paths must be among description, permissions")
        if permissions.is_builtin(name):
            raise FailedPrecondition(f"built-in role {name!r} cannot change")
        with self._db.unit_of_work(tenant_id) as uow:
            row = self._custom(uow, name)
            # Changing a held role grants to its holders: the caller must hold old and new.
            access.ensure_can_grant(principal, row.permissions)
            if "permissions" in mask:
                row.permissions = self._check_grants(grants)
                access.ensure_can_grant(principal, row.permissions)
            if "description" in mask:
                row.description = check_description(description)
            self._changed(uow, ctx, tenant_id, "role.update", name, {"permissions": sorted(row.permissions)})
            self._notifier.tenant_changed(uow, tenant_id)
            uow.commit()
        return self._view(row)

    def delete(self, ctx: CallContext, tenant_id: str, name: str, force: bool) -> int:
        principal = ctx.require_principal()
        tenant_id = access.target_tenant(principal, tenant_id)
        if permissions.is_builtin(name):
            raise FailedPrecondition(f"built-in role {name!r} cannot be deleted")
        with self._db.unit_of_work(tenant_id) as uow:
            row = self._custom(uow, name)
            access.ensure_can_grant(principal, row.permissions)
            holders = uow.role_bindings.holders(name)
            if holders and not force:
                raise RoleInUse(name, len(holders))
            uow.role_bindings.remove_everywhere(name)
            uow.roles.delete(row)
            self._changed(uow, ctx, tenant_id, "role.delete", name, {"holders": len(holders)})
            for user_id in holders:
                self._notifier.user_changed(uow, tenant_id, user_id)
            uow.commit()
        return len(holders)

    def assign(self, ctx: CallContext, tenant_id: str, user_id: str, role: str) -> tuple[m.User, list[str]]:
        principal = ctx.require_principal()
        tenant_id = access.target_tenant(principal, tenant_id)
        with self._db.unit_of_work(tenant_id) as uow:
            user = uow.users.get(user_id)
            access.ensure_can_grant(principal, role_grants(uow, role))
            if not uow.role_bindings.exists(user_id, role):
                uow.role_bindings.add(tenant_id, user_id, role)
            roles = uow.role_bindings.roles_of(user_id)
            self._bound(uow, ctx, tenant_id, "role.assign", user_id, role, roles)
            self._notifier.user_changed(uow, tenant_id, user_id)
            uow.commit()
        return user, roles

    def remove(self, ctx: CallContext, tenant_id: str, user_id: str, role: str) -> tuple[m.User, list[str]]:
        principal = ctx.require_principal()
        tenant_id = access.target_tenant(principal, tenant_id)
        with self._db.unit_of_work(tenant_id) as uow:
            user = uow.users.get(user_id)
            if not uow.role_bindings.exists(user_id, role):
                raise NotFound("role_binding", f"the user does not hold {role!r}")
            # Taking a role away needs the same standing as granting it (an admin cannot demote an owner).
            access.ensure_can_grant(principal, role_grants(uow, role) if self._exists(uow, role) else [])
            if role == OWNER:
                ensure_not_last_owner(uow, tenant_id, user_id)
            uow.role_bindings.remove(user_id, role)
            roles = uow.role_bindings.roles_of(user_id)
            self._bound(uow, ctx, tenant_id, "role.unassign", user_id, role, roles)
            self._notifier.user_changed(uow, tenant_id, user_id)
            uow.commit()
        return user, roles

    def _changed(
        self, uow: UnitOfWork, ctx: CallContext, tenant_id: str, action: str, name: str, details: dict[str, Any]
    ) -> None:
        emit(uow, tenant_id, events.ROLE_CHANGED, {"role": name, "change": action.partition(".")[2], **details})
        self._audit.record(uow, ctx, tenant_id, action, f"role:{name}", details=details)

    def _bound(
        self, uow: UnitOfWork, ctx: CallContext, tenant_id: str, action: str, user_id: str, role: str, roles: list[str]
    ) -> None:
        emit(uow, tenant_id, events.USER_UPDATED, {"user_id": user_id, "roles": roles})
        self._audit.record(uow, ctx, tenant_id, action, f"user:{user_id}", details={"role": role, "roles": roles})

    def effective(self, ctx: CallContext, tenant_id: str, subject_type: str, subject: str) -> EffectivePermissions:
        principal = ctx.require_principal()
        if not subject:
            if subject_type and subject_type != principal.subject_type:
                raise InvalidArgument("subject", "subject is required with subject_type")
            roles = self._roles_of_caller(principal.tenant_id, principal.subject, principal.subject_type)
            return EffectivePermissions(principal.subject_type, principal.subject, list(principal.permissions), roles)
        tenant_id = access.target_tenant(principal, tenant_id)
        if not access.is_self(principal, tenant_id, subject) or subject_type not in ("", USER):
            access.require(principal, "roles:read", tenant_id)
        with self._db.unit_of_work(tenant_id) as uow:
            return self._effective(uow, subject_type or USER, subject)

    def _effective(self, uow: UnitOfWork, subject_type: str, subject: str) -> EffectivePermissions:
        if subject_type == USER:
            uow.users.get(subject)
            roles, grants = user_permissions(uow, subject)
            return EffectivePermissions(USER, subject, list(grants), roles)
        if subject_type == API_KEY:
            key = uow.api_keys.get(subject)
            _, owner = user_permissions(uow, key.user_id)
            return EffectivePermissions(API_KEY, subject, list(PermissionSet.of(key.scopes).intersect(owner)), [])
        if subject_type == SERVICE:
            account = uow.service_accounts.get(subject)
            return EffectivePermissions(SERVICE, subject, sorted(account.permissions), [])
        raise InvalidArgument("subject_type", f"unknown subject type {subject_type!r}")

    def _roles_of_caller(self, tenant_id: str, subject: str, subject_type: str) -> list[str]:
        if subject_type != USER or not tenant_id:
            return []
        with self._db.unit_of_work(tenant_id) as uow:
            return uow.role_bindings.roles_of(subject)

    @staticmethod
    def _exists(uow: UnitOfWork, role: str) -> bool:
        return permissions.is_builtin(role) or uow.roles.find(role) is not None

    @staticmethod
    def _custom(uow: UnitOfWork, name: str) -> m.Role:
        row = uow.roles.find(name)
        if row is None:
            raise NotFound("role", f"role {name!r} not found")
        return row

    @staticmethod
    def _check_grants(grants: Sequence[str]) -> list[str]:
        if not grants:
            raise InvalidArgument("role.permissions", "a role needs at least one permission")
        return permissions.validate(grants, "role.permissions")

    @staticmethod
    def _view(row: m.Role) -> RoleView:
        return RoleView(row.name, row.description, sorted(row.permissions), builtin=False, row=row)

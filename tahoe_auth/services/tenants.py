"""Tenants: create, read, update, suspend and reactivate."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from tahoe_auth.domain import audit, events, mail, password_policy, passwords, security_policy
from tahoe_auth.domain.errors import FailedPrecondition, InvalidArgument, NotFound, PermissionDenied
from tahoe_auth.domain.fields import check_display_name, check_email, check_slug
from tahoe_auth.domain.permissions import OWNER
from tahoe_auth.domain.ratelimit import parse_limits
from tahoe_auth.domain.usage import parse_quotas
from tahoe_auth.kernel.changes import ChangeNotifier
from tahoe_auth.kernel.clock import Clock
from tahoe_auth.services import access
from tahoe_auth.services.audit import Actor, AuditLog
from tahoe_auth.services.context import CallContext
from tahoe_auth.services.events import emit
from tahoe_auth.services.invitations import Invitations
from tahoe_auth.services.paging import decode_page_token, next_token, page_size_or_default
from tahoe_auth.store import models as m
from tahoe_auth.store.db import SYSTEM, Database, UnitOfWork

PLAN = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,62}\Z")
ACTIVE, SUSPENDED = "active", "suspended"
DEFAULT_PLAN = "free"
# Fields a tenant's own administrators may change; the rest (slug, plan, limits)
# belong to the platform.
TENANT_EDITABLE = frozenset({"display_name", "settings.security", "settings.mail"})
UPDATABLE = frozenset(
    {
        "display_name",
        "slug",
        "plan",
        "settings",
        "settings.rate_limits",
        "settings.quotas",
        "settings.security",
        "settings.mail",
    }
)


def check_settings(settings: Mapping[str, Any]) -> dict[str, Any]:
    """Per-tenant rate limits and quota overrides, in the schemas the rate limiter and
    usage metering read (docs/usage.md); validated with their own parsers."""
    rate_limits = dict(settings.get("rate_limits") or {})
    quotas = dict(settings.get("quotas") or {})
    parse_limits(rate_limits, field="settings.rate_limits")
    parse_quotas({m: q for m, q in quotas.items() if q is not None}, "settings.quotas")
    security = security_policy.parse_security(settings.get("security"))
    mail_settings = mail.parse_settings(settings.get("mail"))
    skip = ("rate_limits", "quotas", "security", "mail")
    checked = {key: value for key, value in settings.items() if key not in skip}
    if security != security_policy.DEFAULT_POLICY:
        checked["security"] = security.to_settings()
    if mail_settings:
        checked["mail"] = mail_settings
    if rate_limits:
        checked["rate_limits"] = rate_limits
    if quotas:
        checked["quotas"] = quotas
    return checked


class TenantAdmin:
    def __init__(
        self,
        db: Database,
        hasher: passwords.BoundedHasher,
        clock: Clock,
        notifier: ChangeNotifier,
        invitations: Invitations,
        audit_log: AuditLog,
    ) -> None:
        self._audit = audit_log
        self._db = db
        self._hasher = hasher
        self._clock = clock
        self._notifier = notifier
        self._invitations = invitations

    def create_tenant_with_owner(
        self, slug: str, display_name: str, owner_email: str, password: str
    ) -> tuple[m.Tenant, m.User]:
        """For `tahoe-auth bootstrap` and tests: a tenant and its owner, with a password."""
        slug = check_slug(slug.strip().lower())
        email = check_email(owner_email)
        display_name = display_name or slug
        password_policy.check(password, password_policy.context_for({}, (slug, display_name), email))
        password_hash = self._hasher.hash(password)
        with self._db.unit_of_work(SYSTEM) as uow:
            tenant = uow.tenants.add(m.Tenant(slug=slug, display_name=display_name))
            user = uow.users.add(
                m.User(
                    tenant_id=tenant.id, email=email, password_hash=password_hash, password_changed_at=self._clock.now()
                )
            )
            uow.role_bindings.add(tenant.id, user.id, OWNER)
            self._audit.record(
                uow,
                None,
                tenant.id,
                "tenant.create",
                f"tenant:{tenant.id}",
                details={"slug": slug, "owner_user_id": user.id, "via": "bootstrap"},
                actor=Actor("bootstrap", audit.SYSTEM_ACTOR),
            )
            uow.commit()
        return tenant, user

    def create(
        self, ctx: CallContext, slug: str, display_name: str, plan: str, settings: Mapping[str, Any], owner_email: str
    ) -> tuple[m.Tenant, m.Invitation | None, str]:
        """A new tenant; with `owner_email`, an invitation for its first owner (and its token)."""
        principal = ctx.require_principal()
        slug = check_slug(slug.strip().lower())
        plan = self._check_plan(plan or DEFAULT_PLAN)
        settings = check_settings(settings)
        email = check_email(owner_email, "owner_email") if owner_email else ""
        with self._db.unit_of_work(SYSTEM) as uow:
            if plan != DEFAULT_PLAN:
                self._ensure_plan(uow, plan)
            tenant = uow.tenants.add(
                m.Tenant(slug=slug, display_name=check_display_name(display_name) or slug, plan=plan, settings=settings)
            )
            invitation, token = (None, "")
            if email:
                invitation, token = self._invitations.add(uow, tenant.id, email, OWNER, principal, None)
            details = {"slug": slug, "plan": plan, "owner_invited": email}
            self._audit.record(uow, ctx, tenant.id, "tenant.create", f"tenant:{tenant.id}", details=details)
            uow.commit()
        return tenant, invitation, token

    def get(self, ctx: CallContext, tenant_id: str) -> m.Tenant:
        tenant_id = access.target_tenant(ctx.require_principal(), tenant_id)
        with self._db.unit_of_work(tenant_id) as uow:
            return uow.tenants.get(tenant_id)

    def page(self, ctx: CallContext, state: str | None, page_size: int, page_token: str) -> tuple[list[m.Tenant], str]:
        limit = page_size_or_default(page_size)
        with self._db.unit_of_work(SYSTEM) as uow:
            rows = list(uow.tenants.page(status=state, after=decode_page_token(page_token), limit=limit + 1))
        return rows[:limit], next_token(rows, limit)

    def update(self, ctx: CallContext, tenant_id: str, changes: Mapping[str, Any]) -> m.Tenant:
        principal = ctx.require_principal()
        tenant_id = access.target_tenant(principal, tenant_id)
        unknown = set(changes) - UPDATABLE
        if unknown or not changes:
            raise InvalidArgument("update_mask", f"update_mask paths must be among {', '.join(sorted(UPDATABLE))}")
        if not principal.platform_admin and set(changes) - TENANT_EDITABLE:
            raise PermissionDenied("only platform administrators change a tenant's slug, plan or limits")
        with self._db.unit_of_work(tenant_id) as uow:
            tenant = uow.tenants.get(tenant_id)
            self._apply(tenant, changes)
            if "plan" in changes:
                self._ensure_plan(uow, tenant.plan)
            uow.tenants.flush_unique(tenant)
            emit(uow, tenant_id, events.TENANT_UPDATED, {"tenant_id": tenant_id, "changed": sorted(changes)})
            details = {"changed": sorted(changes), "slug": tenant.slug, "plan": tenant.plan}
            self._audit.record(uow, ctx, tenant_id, "tenant.update", f"tenant:{tenant_id}", details=details)
            self._notifier.tenant_changed(uow, tenant_id)
            uow.commit()
        return tenant

    def _apply(self, tenant: m.Tenant, changes: Mapping[str, Any]) -> None:
        if "display_name" in changes:
            tenant.display_name = check_display_name(changes["display_name"]) or tenant.slug
        if "slug" in changes:
            tenant.slug = check_slug(str(changes["slug"]).strip().lower())
        if "plan" in changes:
            tenant.plan = self._check_plan(changes["plan"])
        settings = dict(tenant.settings or {})
        if "settings" in changes:
            settings = dict(changes["settings"])
        for part in ("rate_limits", "quotas", "security", "mail"):
            if f"settings.{part}" in changes:
                settings[part] = changes[f"settings.{part}"]
        tenant.settings = check_settings(settings)

    @staticmethod
    def _ensure_plan(uow: UnitOfWork, plan: str) -> None:
        """Plans are defined with UsageService.UpsertPlan; a tenant may only name one."""
        if uow.usage.plan(plan) is None:
            raise NotFound("plan", f"no plan {plan!r}: define it with UsageService.UpsertPlan")

    @staticmethod
    def _check_plan(plan: str) -> str:
        if not PLAN.match(plan):
            raise InvalidArgument("plan", "plan must be 1-63 lowercase letters, digits, `_`, `.` or `-`")
        return plan

    def suspend(self, ctx: CallContext, tenant_id: str, reason: str) -> m.Tenant:
        return self._set_state(ctx, tenant_id, SUSPENDED, reason[:500])

    def reactivate(self, ctx: CallContext, tenant_id: str) -> m.Tenant:
        return self._set_state(ctx, tenant_id, ACTIVE, "")

    def _set_state(self, ctx: CallContext, tenant_id: str, state: str, reason: str) -> m.Tenant:
        tenant_id = access.target_tenant(ctx.require_principal(), tenant_id)
        with self._db.unit_of_work(tenant_id) as uow:
            tenant = uow.tenants.get(tenant_id)
            if tenant.status == state:
                raise FailedPrecondition(f"tenant is already {state}")
            tenant.status = state
            tenant.suspended_at = self._clock.now() if state == SUSPENDED else None
            tenant.suspend_reason = reason
            emit(uow, tenant_id, events.TENANT_UPDATED, {"tenant_id": tenant_id, "status": state})
            action = "tenant.suspend" if state == SUSPENDED else "tenant.reactivate"
            self._audit.record(uow, ctx, tenant_id, action, f"tenant:{tenant_id}", details={"reason": reason})
            # Every instance drops the tenant's cached facts: its credentials stop within a second.
            self._notifier.tenant_changed(uow, tenant_id)
            uow.commit()
        return tenant

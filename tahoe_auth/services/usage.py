"""UsageService use cases: record, query, summarise, export, plans and quota status.

Tenant callers act on their own tenant (naming another gets NOT_FOUND); platform
administrators name the tenant. Plans are platform-wide: only platform administrators
create or assign them.
"""

from __future__ import annotations

import datetime as dt
import logging
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from tahoe_auth.domain import audit, events, usage
from tahoe_auth.domain.errors import InvalidArgument, NotFound, PermissionDenied
from tahoe_auth.domain.principal import Principal
from tahoe_auth.domain.usage import Granularity, Period, QuotaDecision, QuotaRule, UsageEvent
from tahoe_auth.kernel.changes import ChangeNotifier
from tahoe_auth.kernel.clock import Clock
from tahoe_auth.services import access
from tahoe_auth.services.audit import AuditLog
from tahoe_auth.services.context import CallContext
from tahoe_auth.services.events import emit
from tahoe_auth.services.quotas import rules_for
from tahoe_auth.services.usage_ledger import AppendResult, UsageLedger
from tahoe_auth.services.usage_watch import Subscription, UsageWatch
from tahoe_auth.store.db import SYSTEM, Database

log = logging.getLogger(__name__)

MAX_BATCH = 5000
PLAN_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}\Z")


@dataclass(frozen=True)
class Summary:
    tenant_id: str
    period: Period
    plan: str
    lines: list[usage.InvoiceLine]


@dataclass(frozen=True)
class Export:
    content_type: str
    filename: str
    content: bytes


@dataclass(frozen=True)
class PlanView:
    name: str
    display_name: str
    rules: dict[str, QuotaRule]


@dataclass(frozen=True)
class QuotaStatus:
    tenant_id: str
    plan: str
    period: Period
    decisions: list[QuotaDecision]


class UsageService:
    def __init__(
        self,
        db: Database,
        ledger: UsageLedger,
        watch: UsageWatch,
        notifier: ChangeNotifier,
        clock: Clock,
        audit_log: AuditLog,
    ) -> None:
        self._audit = audit_log
        self._db = db
        self._ledger = ledger
        self._watch = watch
        self._notifier = notifier
        self._clock = clock

    # -- recording ------------------------------------------------------------------------

    def record(self, ctx: CallContext, tenant_id: str, events: Sequence[UsageEvent]) -> AppendResult:
        tenant_id = target_tenant(ctx.require_principal(), tenant_id)
        if not events:
            raise InvalidArgument("events", "at least one event is required")
        if len(events) > MAX_BATCH:
            raise InvalidArgument("events", f"at most {MAX_BATCH} events per call")
        now = self._clock.now()
        checked = [usage.validate_event(e, now, f"events[{i}]") for i, e in enumerate(events)]
        return self._ledger.append({tenant_id: checked})

    # -- reading --------------------------------------------------------------------------

    def series(
        self,
        ctx: CallContext,
        tenant_id: str,
        metric: str,
        start: dt.datetime | None,
        end: dt.datetime | None,
        granularity: Granularity,
    ) -> list[tuple[dt.datetime, float]]:
        """Buckets covering [start, end), aligned to the granularity (start rounded down,
        end rounded up); defaults: the current billing period."""
        tenant_id = target_tenant(ctx.require_principal(), tenant_id)
        usage.check_metric(metric)
        period = usage.period_of(self._clock.now())
        start = usage.truncate(start or period.start, granularity)
        end = end or period.end
        slots = usage.buckets(start, end, granularity)
        end = usage.next_bucket(slots[-1], granularity)
        with self._db.unit_of_work(tenant_id) as uow:
            points = uow.usage.series(tenant_id, metric, start, end, granularity)
        return usage.dense_series(points, start, end, granularity)

    def summary(self, ctx: CallContext, tenant_id: str, period_name: str) -> Summary:
        tenant_id = target_tenant(ctx.require_principal(), tenant_id)
        period = usage.parse_period(period_name, self._clock.now())
        tenants = self._tenant_usage([tenant_id], period)
        if not tenants:
            raise NotFound("tenant")
        return Summary(tenant_id, period, tenants[0].plan, list(tenants[0].lines))

    def export(self, ctx: CallContext | None, tenant_id: str, period_name: str, fmt: str) -> Export:
        """Invoice-ready usage of a period. `ctx` None: the operator's CLI (all tenants)."""
        if ctx is not None:
            principal = ctx.require_principal()
            if tenant_id or not principal.platform_admin:
                tenant_id = target_tenant(principal, tenant_id)
        if fmt not in ("json", "csv"):
            raise InvalidArgument("format", "format must be json or csv")
        now = self._clock.now()
        period = usage.parse_period(period_name, now)
        tenants = self._tenant_usage([tenant_id] if tenant_id else None, period)
        if tenant_id and not tenants:
            raise NotFound("tenant")
        scope = tenants[0].tenant_slug if tenant_id else "all"
        filename = f"usage-{period.name}-{scope}.{fmt}"
        if fmt == "json":
            return Export("application/json", filename, usage.export_json(period, tenants, now).encode())
        return Export("text/csv", filename, usage.export_csv(period, tenants).encode())

    def _tenant_usage(self, tenant_ids: list[str] | None, period: Period) -> list[usage.TenantUsage]:
        with self._db.unit_of_work(SYSTEM) as uow:
            totals = uow.usage.period_totals(tenant_ids, period.start, period.end)
            plans = uow.usage.plans()
            tenants = uow.usage.tenants(tenant_ids)
        return [
            usage.TenantUsage(
                t.id,
                t.slug,
                t.plan,
                usage.invoice_lines(totals.get(t.id, {}), rules_for(plans.get(t.plan), t.settings or {}, t.id)),
            )
            for t in tenants
        ]

    def quota_status(self, ctx: CallContext, tenant_id: str) -> QuotaStatus:
        """Exact, from the database (not the hot-path cache)."""
        tenant_id = target_tenant(ctx.require_principal(), tenant_id)
        now = self._clock.now()
        period = usage.period_of(now)
        with self._db.unit_of_work(SYSTEM) as uow:
            tenants = uow.usage.tenants([tenant_id])
            if not tenants:
                raise NotFound("tenant")
            rules = rules_for(uow.usage.plan(tenants[0].plan), tenants[0].settings or {}, tenant_id)
            used = uow.usage.period_totals([tenant_id], period.start, period.end).get(tenant_id, {})
        decisions = [usage.evaluate_quota(rule, m, used.get(m, 0.0), now) for m, rule in sorted(rules.items())]
        return QuotaStatus(tenant_id, tenants[0].plan, period, decisions)

    def watch(self, ctx: CallContext, tenant_id: str) -> Subscription:
        return self._watch.subscribe(target_tenant(ctx.require_principal(), tenant_id))

    # -- plans ----------------------------------------------------------------------------

    def list_plans(self, ctx: CallContext) -> list[PlanView]:
        ctx.require_principal()
        with self._db.unit_of_work(SYSTEM) as uow:
            plans = uow.usage.plans()
        return [PlanView(p.name, p.display_name, usage.parse_quotas(p.quotas)) for _, p in sorted(plans.items())]

    def upsert_plan(self, ctx: CallContext, name: str, display_name: str, rules: Mapping[str, QuotaRule]) -> PlanView:
        require_platform(ctx.require_principal())
        if not PLAN_NAME.match(name):
            raise InvalidArgument("plan.name", "plan name must be 1-63 lowercase letters, digits, '-' or '_'")
        with self._db.unit_of_work(SYSTEM) as uow:
            plan = uow.usage.save_plan(name, display_name or name, usage.quotas_to_json(rules))
            self._audit.record(
                uow, ctx, audit.PLATFORM_CHAIN, "plan.upsert", f"plan:{name}", details={"quotas": sorted(rules)}
            )
            self._notifier.plans_changed(uow, name)
            uow.commit()
        return PlanView(plan.name, plan.display_name, dict(rules))

    def assign_plan(self, ctx: CallContext, tenant_id: str, plan_name: str) -> str:
        require_platform(ctx.require_principal())
        if not tenant_id:
            raise InvalidArgument("tenant_id", "tenant_id is required")
        with self._db.unit_of_work(SYSTEM) as uow:
            if uow.usage.plan(plan_name) is None:
                raise NotFound("plan")
            tenant = uow.tenants.find(tenant_id)
            if tenant is None:
                raise NotFound("tenant")
            previous, tenant.plan = tenant.plan, plan_name
            emit(uow, tenant.id, events.TENANT_UPDATED, {"tenant_id": tenant.id, "changed": {"plan": plan_name}})
            self._audit.record(
                uow, ctx, tenant.id, "plan.assign", f"tenant:{tenant.id}", details={"from": previous, "to": plan_name}
            )
            self._notifier.tenant_changed(uow, tenant.id)
            uow.commit()
            tenant_id = tenant.id
        return tenant_id


def target_tenant(principal: Principal, tenant_id: str) -> str:
    """The tenant a call acts on: the caller's own, or the one named by a caller not
    bound to a tenant (platform administrators, platform-wide service accounts such as
    the transcription service reporting usage). Decided by services/access.py."""
    return access.target_tenant(principal, tenant_id)


def require_platform(principal: Principal, message: str = "plans are managed by platform administrators") -> None:
    if not principal.platform_admin:
        raise PermissionDenied(message, permission="platform:admin")

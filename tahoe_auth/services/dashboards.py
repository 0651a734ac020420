"""Dashboard use cases: the tenant overview, usage breakdowns, login analytics and the
platform overview. Everything comes from rollups and counts (usage_period_totals,
usage_dimension_rollups, login_rollups, login_active_users, the aggregated denial
entries), never from scanning raw events.

Tenant callers read their own tenant (another tenant's id is NOT_FOUND, services/access);
the interceptor has already required the method's permission (server.POLICIES).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from tahoe_auth.domain import dashboards, usage
from tahoe_auth.domain.dashboards import BreakdownRow, LoginDay
from tahoe_auth.domain.errors import InvalidArgument, NotFound, PermissionDenied
from tahoe_auth.domain.usage import Granularity, InvoiceLine
from tahoe_auth.kernel.clock import Clock
from tahoe_auth.services import access
from tahoe_auth.services.context import CallContext
from tahoe_auth.services.quotas import rules_for
from tahoe_auth.store.db import SYSTEM, Database

DAY = dt.timedelta(days=1)
BREAKDOWN_GRANULARITIES = (Granularity.HOUR, Granularity.DAY, Granularity.MONTH)


@dataclass(frozen=True)
class TenantOverview:
    tenant_id: str
    plan: str
    status: str
    users: dict[str, int]
    active_sessions: int
    active_api_keys: int
    api_keys: int
    service_accounts: int
    period: usage.Period
    usage: list[InvoiceLine]
    denials: int
    logins: dict[str, int]
    webhooks: list[dashboards.EndpointHealth]
    generated_at: dt.datetime


@dataclass(frozen=True)
class Breakdown:
    metric: str
    dimension: str
    granularity: Granularity
    start: dt.datetime
    end: dt.datetime
    buckets: list[dt.datetime]
    values: list[BreakdownRow]
    other: BreakdownRow | None


@dataclass(frozen=True)
class PlatformOverview:
    tenants: int
    by_plan_status: list[tuple[str, str, int]]
    period: usage.Period
    metric: str
    top: list[tuple[str, str, str, float]]


class Dashboards:
    def __init__(self, db: Database, clock: Clock) -> None:
        self._db = db
        self._clock = clock

    def tenant_overview(self, ctx: CallContext, tenant_id: str) -> TenantOverview:
        tenant_id = access.target_tenant(ctx.require_principal(), tenant_id)
        now = self._clock.now()
        period = usage.period_of(now)
        since = usage.truncate(now - DAY, Granularity.HOUR)
        with self._db.unit_of_work(SYSTEM) as uow:
            tenants = uow.usage.tenants([tenant_id])
            if not tenants:
                raise NotFound("tenant")
            tenant = tenants[0]
            rules = rules_for(uow.usage.plan(tenant.plan), tenant.settings or {}, tenant_id)
            totals = uow.usage.period_totals([tenant_id], period.start, period.end).get(tenant_id, {})
        # The tenant's own rows in a tenant-bound transaction: row-level security holds too.
        with self._db.unit_of_work(tenant_id) as uow:
            board = uow.dashboards
            users = board.users_by_status(tenant_id)
            sessions = board.active_sessions(tenant_id, now)
            live_keys, all_keys = board.api_keys(tenant_id, now)
            service_accounts = board.service_accounts(tenant_id)
            denials = board.denials_since(tenant_id, since)
            logins: dict[str, int] = dict.fromkeys(dashboards.LOGIN_OUTCOMES, 0)
            for _, outcome, count in board.login_counts(tenant_id, since, now + dt.timedelta(hours=1)):
                logins[outcome] = logins.get(outcome, 0) + count
            webhooks = [
                dashboards.EndpointHealth(
                    endpoint.id,
                    endpoint.url,
                    endpoint.status,
                    dashboards.endpoint_health(endpoint.status, failures, success, failure),
                    failures,
                    success,
                    failure,
                )
                for endpoint, failures, success, failure in board.webhook_health(tenant_id, now - DAY)
            ]
        return TenantOverview(
            tenant_id=tenant_id,
            plan=tenant.plan,
            status=tenant.status,
            users=users,
            active_sessions=sessions,
            active_api_keys=live_keys,
            api_keys=all_keys,
            service_accounts=service_accounts,
            period=period,
            usage=usage.invoice_lines(totals, rules),
            denials=denials,
            logins=logins,
            webhooks=webhooks,
            generated_at=now,
        )

    def usage_breakdown(
        self,
        ctx: CallContext,
        tenant_id: str,
        metric: str,
        dimension: str,
        start: dt.datetime | None,
        end: dt.datetime | None,
        granularity: Granularity,
        top: int,
    ) -> Breakdown:
        tenant_id = access.target_tenant(ctx.require_principal(), tenant_id)
        metric = usage.check_metric(metric or usage.API_REQUESTS)
        if dimension not in dashboards.DIMENSIONS:
            raise InvalidArgument("dimension", f"dimension must be one of {', '.join(dashboards.DIMENSIONS)}")
        if granularity not in BREAKDOWN_GRANULARITIES:
            raise InvalidArgument("granularity", "breakdowns are by hour, day or month")
        top = _top(top)
        now = self._clock.now()
        start = usage.truncate(start or usage.period_of(now).start, granularity)
        slots = usage.buckets(start, end or now, granularity)
        if len(slots) > dashboards.MAX_BREAKDOWN_BUCKETS:
            raise InvalidArgument("granularity", "too many buckets: use a coarser granularity or a shorter range")
        end = usage.next_bucket(slots[-1], granularity)
        with self._db.unit_of_work(tenant_id) as uow:
            uow.tenants.get(tenant_id)  # NOT_FOUND for a platform caller's unknown tenant
            ranked = uow.dashboards.top_dimension_values(tenant_id, metric, dimension, start, end, top)
            values = [value for value, _ in ranked]
            series = uow.dashboards.dimension_series(tenant_id, metric, dimension, start, end, granularity, values)
        rows, other = dashboards.breakdown_rows(ranked, series)
        return Breakdown(metric, dimension, granularity, start, end, slots, rows, other)

    def login_analytics(
        self, ctx: CallContext, tenant_id: str, start: dt.datetime | None, end: dt.datetime | None
    ) -> list[LoginDay]:
        tenant_id = access.target_tenant(ctx.require_principal(), tenant_id)
        now = self._clock.now()
        end = end or now
        end_day = usage.truncate(end, Granularity.DAY)
        if end_day < end:
            end_day += DAY
        start_day = usage.truncate(start or end_day - dashboards.DEFAULT_LOGIN_DAYS * DAY, Granularity.DAY)
        if end_day <= start_day:
            raise InvalidArgument("end_time", "end_time must be after start_time")
        if end_day - start_day > dashboards.MAX_LOGIN_DAYS * DAY:
            raise InvalidArgument("start_time", f"at most {dashboards.MAX_LOGIN_DAYS} days")
        with self._db.unit_of_work(tenant_id) as uow:
            uow.tenants.get(tenant_id)  # NOT_FOUND for a platform caller's unknown tenant
            counts = uow.dashboards.login_counts(tenant_id, start_day, end_day)
            active = uow.dashboards.active_users(tenant_id, start_day, end_day)
        return dashboards.login_days(start_day, end_day, counts, active)

    def platform_overview(self, ctx: CallContext, metric: str, top: int) -> PlatformOverview:
        if not ctx.require_principal().platform_admin:
            raise PermissionDenied("the platform overview is for platform administrators", permission="platform:admin")
        metric = usage.check_metric(metric or usage.API_REQUESTS)
        period = usage.period_of(self._clock.now())
        with self._db.unit_of_work(SYSTEM) as uow:
            by_plan_status = uow.dashboards.tenants_by_plan_and_status()
            leaders = uow.dashboards.top_tenants(metric, period.start, _top(top))
        return PlatformOverview(sum(n for _, _, n in by_plan_status), by_plan_status, period, metric, leaders)


def _top(top: int) -> int:
    if top == 0:
        return dashboards.DEFAULT_TOP
    if not 1 <= top <= dashboards.MAX_TOP:
        raise InvalidArgument("top", f"top must be 1-{dashboards.MAX_TOP}")
    return top

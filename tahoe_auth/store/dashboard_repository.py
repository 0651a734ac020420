"""Dashboard reads (counts and rollups) and the login rollups' writes.

Core statements, so every query names its tenant explicitly (as usage_repository does);
row-level security still holds them to the transaction's tenant on PostgreSQL.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import Table, and_, case, func, literal, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session as OrmSession

from tahoe_auth.domain.events import DEAD, RETRYING, SUCCEEDED
from tahoe_auth.domain.usage import Granularity
from tahoe_auth.store import models as m

LOGINS: Table = m.LoginRollup.__table__  # type: ignore[assignment]
ACTIVE: Table = m.LoginActiveUser.__table__  # type: ignore[assignment]
DIMENSIONS: Table = m.UsageDimensionRollup.__table__  # type: ignore[assignment]
TOTALS: Table = m.UsagePeriodTotal.__table__  # type: ignore[assignment]
TENANTS: Table = m.Tenant.__table__  # type: ignore[assignment]

_SQLITE_TRUNC = {
    Granularity.HOUR: "%Y-%m-%d %H:00:00",
    Granularity.DAY: "%Y-%m-%d 00:00:00",
    Granularity.MONTH: "%Y-%m-01 00:00:00",
}


class DashboardRepository:
    def __init__(self, session: OrmSession) -> None:
        self.session = session
        self.postgres = session.get_bind().dialect.name == "postgresql"

    def _insert(self, table: Table) -> Any:
        return postgresql.insert(table) if self.postgres else sqlite.insert(table)

    # -- login rollups (written by logins) ---------------------------------------------------

    def count_login(self, tenant_id: str, hour: dt.datetime, outcome: str, count: int = 1) -> None:
        insert = self._insert(LOGINS).values(tenant_id=tenant_id, bucket_start=hour, outcome=outcome, count=count)
        self.session.execute(
            insert.on_conflict_do_update(
                index_elements=["tenant_id", "bucket_start", "outcome"],
                set_={"count": LOGINS.c.count + insert.excluded.count},
            )
        )

    def count_login_by_slug(self, slug: str, hour: dt.datetime, outcome: str, count: int) -> None:
        """For attempts known only by the tenant's slug (throttled before any lookup);
        no row when no tenant has that slug."""
        chosen = select(TENANTS.c.id, literal(hour, m.UTCDateTime()), literal(outcome), literal(count)).where(
            TENANTS.c.slug == slug
        )
        insert = self._insert(LOGINS).from_select(["tenant_id", "bucket_start", "outcome", "count"], chosen)
        self.session.execute(
            insert.on_conflict_do_update(
                index_elements=["tenant_id", "bucket_start", "outcome"],
                set_={"count": LOGINS.c.count + insert.excluded.count},
            )
        )

    def mark_active(self, tenant_id: str, day: dt.datetime, user_id: str) -> None:
        self.session.execute(
            self._insert(ACTIVE).values(tenant_id=tenant_id, day=day, user_id=user_id).on_conflict_do_nothing()
        )

    # -- tenant overview ------------------------------------------------------------------

    def users_by_status(self, tenant_id: str) -> dict[str, int]:
        query = select(m.User.status, func.count()).where(m.User.tenant_id == tenant_id).group_by(m.User.status)
        return {status: int(n) for status, n in self.session.execute(query)}

    def active_sessions(self, tenant_id: str, now: dt.datetime) -> int:
        query = select(func.count()).where(
            m.Session.tenant_id == tenant_id,
            m.Session.revoked_at.is_(None),
            m.Session.expires_at > now,
            m.Session.idle_expires_at > now,
        )
        return int(self.session.execute(query).scalar_one())

    def api_keys(self, tenant_id: str, now: dt.datetime) -> tuple[int, int]:
        """(usable, all) API keys: usable = not revoked, not expired."""
        usable = case(
            (and_(m.ApiKey.revoked_at.is_(None), (m.ApiKey.expires_at.is_(None)) | (m.ApiKey.expires_at > now)), 1),
            else_=0,
        )
        query = select(func.coalesce(func.sum(usable), 0), func.count()).where(m.ApiKey.tenant_id == tenant_id)
        live, total = self.session.execute(query).one()
        return int(live), int(total)

    def service_accounts(self, tenant_id: str) -> int:
        query = select(func.count()).where(m.ServiceAccount.tenant_id == tenant_id)
        return int(self.session.execute(query).scalar_one())

    def denials_since(self, tenant_id: str, since: dt.datetime) -> int:
        """Requests Check denied: the aggregated `authz.denied` entries carry a count each."""
        query = select(func.coalesce(func.sum(m.AuditEvent.details["count"].as_integer()), 0)).where(
            m.AuditEvent.tenant_id == tenant_id,
            m.AuditEvent.occurred_at >= since,
            m.AuditEvent.action == "authz.denied",
        )
        return int(self.session.execute(query).scalar_one())

    def login_counts(self, tenant_id: str, start: dt.datetime, end: dt.datetime) -> list[tuple[dt.datetime, str, int]]:
        query = select(LOGINS.c.bucket_start, LOGINS.c.outcome, LOGINS.c.count).where(
            LOGINS.c.tenant_id == tenant_id, LOGINS.c.bucket_start >= start, LOGINS.c.bucket_start < end
        )
        return [(_as_utc(at), outcome, int(n)) for at, outcome, n in self.session.execute(query)]

    def active_users(self, tenant_id: str, start: dt.datetime, end: dt.datetime) -> dict[dt.datetime, int]:
        query = (
            select(ACTIVE.c.day, func.count())
            .where(ACTIVE.c.tenant_id == tenant_id, ACTIVE.c.day >= start, ACTIVE.c.day < end)
            .group_by(ACTIVE.c.day)
        )
        return {_as_utc(day): int(n) for day, n in self.session.execute(query)}

    def webhook_health(
        self, tenant_id: str, since: dt.datetime
    ) -> list[tuple[m.WebhookEndpoint, int, dt.datetime | None, dt.datetime | None]]:
        """Each endpoint with: deliveries failed since `since`, last success, last failure."""
        d = m.WebhookDelivery
        # Attempted and not delivered (retrying, or given up on).
        failed = and_(d.status.in_((RETRYING, DEAD)), d.last_attempt_at.is_not(None))
        stats = (
            select(
                d.endpoint_id,
                func.sum(case((and_(failed, d.last_attempt_at >= since), 1), else_=0)).label("failures"),
                func.max(case((d.status == SUCCEEDED, d.last_attempt_at), else_=None)).label("last_success"),
                func.max(case((failed, d.last_attempt_at), else_=None)).label("last_failure"),
            )
            .where(d.tenant_id == tenant_id)
            .group_by(d.endpoint_id)
            .subquery()
        )
        query = (
            select(m.WebhookEndpoint, stats.c.failures, stats.c.last_success, stats.c.last_failure)
            .outerjoin(stats, stats.c.endpoint_id == m.WebhookEndpoint.id)
            .where(m.WebhookEndpoint.tenant_id == tenant_id)
            .order_by(m.WebhookEndpoint.created_at, m.WebhookEndpoint.id)
        )
        return [
            (endpoint, int(failures or 0), _maybe_utc(success), _maybe_utc(failure))
            for endpoint, failures, success, failure in self.session.execute(query)
        ]

    # -- usage breakdown ------------------------------------------------------------------

    def top_dimension_values(
        self, tenant_id: str, metric: str, dimension: str, start: dt.datetime, end: dt.datetime, top: int
    ) -> list[tuple[str, float]]:
        """The `top` values by total over [start, end) (ties by value), ranked in the database."""
        total = func.sum(DIMENSIONS.c.quantity)
        query = (
            select(DIMENSIONS.c.value, total)
            .where(*self._range(tenant_id, metric, dimension, start, end))
            .group_by(DIMENSIONS.c.value)
            .order_by(total.desc(), DIMENSIONS.c.value)
            .limit(top)
        )
        return [(value, float(q)) for value, q in self.session.execute(query)]

    def dimension_series(
        self,
        tenant_id: str,
        metric: str,
        dimension: str,
        start: dt.datetime,
        end: dt.datetime,
        granularity: Granularity,
        values: list[str],
    ) -> dict[str | None, dict[dt.datetime, float]]:
        """value -> bucket -> sum over [start, end) for `values`; every other value summed
        under None. Grouped in the database: a few rows per bucket, not one per value."""
        if not values:  # nothing in the range at all
            return {}
        bucket = self._truncate(DIMENSIONS.c.bucket_start, granularity).label("bucket")
        label = case((DIMENSIONS.c.value.in_(values), DIMENSIONS.c.value), else_=None).label("named")
        query = (
            select(label, bucket, func.sum(DIMENSIONS.c.quantity))
            .where(*self._range(tenant_id, metric, dimension, start, end))
            .group_by(label, bucket)
        )
        series: dict[str | None, dict[dt.datetime, float]] = {}
        for value, at, quantity in self.session.execute(query):
            series.setdefault(value, {})[_as_utc(at)] = float(quantity)
        return series

    @staticmethod
    def _range(tenant_id: str, metric: str, dimension: str, start: dt.datetime, end: dt.datetime) -> list[Any]:
        return [
            DIMENSIONS.c.tenant_id == tenant_id,
            DIMENSIONS.c.metric == metric,
            DIMENSIONS.c.dimension == dimension,
            DIMENSIONS.c.bucket_start >= start,
            DIMENSIONS.c.bucket_start < end,
        ]

    def _truncate(self, column: Any, granularity: Granularity) -> Any:
        if granularity == Granularity.HOUR:
            return column
        if self.postgres:
            return func.date_trunc(granularity.value, func.timezone("UTC", column))
        return func.strftime(_SQLITE_TRUNC[granularity], column)

    # -- platform overview ----------------------------------------------------------------

    def tenants_by_plan_and_status(self) -> list[tuple[str, str, int]]:
        query = (
            select(TENANTS.c.plan, TENANTS.c.status, func.count())
            .group_by(TENANTS.c.plan, TENANTS.c.status)
            .order_by(TENANTS.c.plan, TENANTS.c.status)
        )
        return [(plan, status, int(n)) for plan, status, n in self.session.execute(query)]

    def top_tenants(self, metric: str, period_start: dt.datetime, limit: int) -> list[tuple[str, str, str, float]]:
        """(tenant id, slug, plan, quantity) of the period's largest totals (rolled up)."""
        query = (
            select(TENANTS.c.id, TENANTS.c.slug, TENANTS.c.plan, TOTALS.c.quantity)
            .join(TENANTS, TENANTS.c.id == TOTALS.c.tenant_id)
            .where(TOTALS.c.metric == metric, TOTALS.c.period_start == period_start)
            .order_by(TOTALS.c.quantity.desc(), TENANTS.c.slug)
            .limit(limit)
        )
        return [(i, slug, plan, float(q)) for i, slug, plan, q in self.session.execute(query)]


def _as_utc(value: dt.datetime | str) -> dt.datetime:
    if isinstance(value, str):
        value = dt.datetime.fromisoformat(value)
    return value.replace(tzinfo=dt.UTC) if value.tzinfo is None else value.astimezone(dt.UTC)


def _maybe_utc(value: dt.datetime | str | None) -> dt.datetime | None:
    return None if value is None else _as_utc(value)

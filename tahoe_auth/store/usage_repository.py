"""Usage queries: raw events, rollups, period totals, plans, threshold marks, outbox.

Core statements on the tables (bulk paths), so they filter by tenant explicitly; the
unit of work's tenant wall still applies to the ORM reads. Reads of totals and series
combine rolled-up sums with not-yet-rolled raw events in ONE statement, so that a rollup
committing concurrently can never count an event twice or not at all (one snapshot).
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import psycopg
from sqlalchemy import ColumnElement, Table, func, not_, select, text, union_all, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session as OrmSession

from tahoe_auth.domain.usage import Granularity
from tahoe_auth.store import models as m

EVENTS: Table = m.UsageEvent.__table__  # type: ignore[assignment]
ROLLUPS: Table = m.UsageRollup.__table__  # type: ignore[assignment]
TOTALS: Table = m.UsagePeriodTotal.__table__  # type: ignore[assignment]
DIMENSION_ROLLUPS: Table = m.UsageDimensionRollup.__table__  # type: ignore[assignment]
MARKS: Table = m.UsageThresholdMark.__table__  # type: ignore[assignment]

_INGEST_COLUMNS = "tenant_id, metric, quantity, occurred_at, dimensions, idempotency_key, recorded_at"
_INGEST_TABLE = (
    "CREATE TEMPORARY TABLE IF NOT EXISTS usage_ingest (tenant_id varchar(36), metric varchar(100), "
    "quantity double precision, occurred_at timestamptz, dimensions json, idempotency_key varchar(200), "
    "recorded_at timestamptz)"
)
_INGEST_INSERT = (
    "INSERT INTO usage_events (tenant_id, metric, quantity, occurred_at, dimensions, idempotency_key, recorded_at, "
    "rolled_up) SELECT tenant_id, metric, quantity, occurred_at, dimensions, idempotency_key, recorded_at, false "
    "FROM usage_ingest ON CONFLICT (tenant_id, idempotency_key) DO NOTHING "
    "RETURNING tenant_id, metric, quantity, occurred_at"
)

_DIMENSIONS_UPSERT = (
    "INSERT INTO usage_dimension_rollups (tenant_id, metric, dimension, bucket_start, value, quantity) "
    "SELECT * FROM unnest(CAST(:t AS varchar[]), CAST(:m AS varchar[]), CAST(:d AS varchar[]), "
    "CAST(:b AS timestamptz[]), CAST(:v AS varchar[]), CAST(:q AS float8[])) "
    "ON CONFLICT (tenant_id, metric, dimension, bucket_start, value) "
    "DO UPDATE SET quantity = usage_dimension_rollups.quantity + excluded.quantity"
)

_SQLITE_TRUNC = {
    Granularity.MINUTE: "%Y-%m-%d %H:%M:00",
    Granularity.HOUR: "%Y-%m-%d %H:00:00",
    Granularity.DAY: "%Y-%m-%d 00:00:00",
    Granularity.MONTH: "%Y-%m-01 00:00:00",
}


class UsageRepository:
    def __init__(self, session: OrmSession) -> None:
        self.session = session
        self.postgres = session.get_bind().dialect.name == "postgresql"

    def _insert(self, table: Table) -> Any:
        return postgresql.insert(table) if self.postgres else sqlite.insert(table)

    # -- write-ahead ----------------------------------------------------------------------

    def insert_events(self, rows: Sequence[Mapping[str, Any]]) -> list[tuple[str, str, float, dt.datetime]]:
        """Insert; skip repeated idempotency keys. Returns what was inserted:
        (tenant_id, metric, quantity, occurred_at) per new row."""
        if not rows:
            return []
        if self.postgres:
            return self._copy_events(rows)
        statement = (
            self._insert(EVENTS)
            .on_conflict_do_nothing(index_elements=["tenant_id", "idempotency_key"])
            .returning(EVENTS.c.tenant_id, EVENTS.c.metric, EVENTS.c.quantity, EVENTS.c.occurred_at)
        )
        return [tuple(row) for row in self.session.execute(statement, list(rows))]

    def _copy_events(self, rows: Sequence[Mapping[str, Any]]) -> list[tuple[str, str, float, dt.datetime]]:
        """PostgreSQL: COPY into a per-connection temporary table, then one INSERT ...
        SELECT ... ON CONFLICT DO NOTHING. Several times faster than a multi-row INSERT,
        whose long SQL text the driver must parse on every batch."""
        connection = self.session.connection()
        raw = connection.connection.driver_connection
        assert raw is not None
        try:
            with raw.cursor() as cursor:
                # Created if missing in every transaction: a rolled-back one takes it away.
                cursor.execute(_INGEST_TABLE)
                with cursor.copy(f"COPY usage_ingest ({_INGEST_COLUMNS}) FROM STDIN") as copy:
                    for row in rows:
                        copy.write_row(
                            (
                                row["tenant_id"],
                                row["metric"],
                                row["quantity"],
                                row["occurred_at"],
                                json.dumps(row["dimensions"]),
                                row["idempotency_key"],
                                row["recorded_at"],
                            )
                        )
                cursor.execute(_INGEST_INSERT)
                inserted = cursor.fetchall()
                cursor.execute("TRUNCATE usage_ingest")
        except psycopg.Error as exc:  # the same exceptions as the SQLAlchemy paths raise
            raise DBAPIError.instance(_INGEST_INSERT, None, exc, psycopg.Error) from exc
        return [(tenant, metric, float(quantity), at.astimezone(dt.UTC)) for tenant, metric, quantity, at in inserted]

    # -- rollups --------------------------------------------------------------------------

    def claim_unrolled(self, limit: int) -> list[tuple[int, str, str, dt.datetime, float, dict[str, Any] | None]]:
        """The oldest events not yet rolled up, locked; rows other instances hold are skipped.
        (id, tenant, metric, occurred_at, quantity, dimensions)."""
        query = (
            select(
                EVENTS.c.id,
                EVENTS.c.tenant_id,
                EVENTS.c.metric,
                EVENTS.c.occurred_at,
                EVENTS.c.quantity,
                EVENTS.c.dimensions,
            )
            .where(not_(EVENTS.c.rolled_up))
            .order_by(EVENTS.c.id)
            .limit(limit)
            .with_for_update(skip_locked=True)
        )
        return [tuple(row) for row in self.session.execute(query)]

    def mark_rolled_up(self, ids: Sequence[int]) -> None:
        for start in range(0, len(ids), 5000):
            chunk = ids[start : start + 5000]
            self.session.execute(update(EVENTS).where(EVENTS.c.id.in_(chunk)).values(rolled_up=True))

    def add_to_rollups(self, sums: Mapping[tuple[str, str, dt.datetime], float]) -> None:
        self._add(ROLLUPS, "bucket_start", sums)

    def add_to_dimension_rollups(self, sums: Mapping[tuple[str, str, str, dt.datetime, str], float]) -> None:
        if not sums:
            return
        if self.postgres:
            # One statement over arrays: a batch makes thousands of rows (values x hours),
            # which as an executemany took a fifth of the rollup's time.
            columns = list(zip(*((*key, quantity) for key, quantity in sums.items()), strict=True))
            self.session.execute(
                text(_DIMENSIONS_UPSERT),
                dict(zip(("t", "m", "d", "b", "v", "q"), (list(c) for c in columns), strict=True)),
            )
            return
        insert = self._insert(DIMENSION_ROLLUPS)
        statement = insert.on_conflict_do_update(
            index_elements=["tenant_id", "metric", "dimension", "bucket_start", "value"],
            set_={"quantity": DIMENSION_ROLLUPS.c.quantity + insert.excluded.quantity},
        )
        rows = [
            {"tenant_id": t, "metric": metric, "dimension": d, "bucket_start": at, "value": v, "quantity": q}
            for (t, metric, d, at, v), q in sums.items()
        ]
        self.session.execute(statement, rows)

    def add_to_period_totals(
        self, sums: Mapping[tuple[str, str, dt.datetime], float]
    ) -> dict[tuple[str, str, dt.datetime], float]:
        """Add; return the new totals of the rows touched."""
        return self._add(TOTALS, "period_start", sums)

    def _add(
        self, table: Table, time_column: str, sums: Mapping[tuple[str, str, dt.datetime], float]
    ) -> dict[tuple[str, str, dt.datetime], float]:
        if not sums:
            return {}
        insert = self._insert(table)
        statement = insert.on_conflict_do_update(
            index_elements=["tenant_id", "metric", time_column],
            set_={"quantity": table.c.quantity + insert.excluded.quantity},
        ).returning(table.c.tenant_id, table.c.metric, table.c[time_column], table.c.quantity)
        rows = [
            {"tenant_id": tenant, "metric": metric, time_column: moment, "quantity": quantity}
            for (tenant, metric, moment), quantity in sums.items()
        ]
        return {(r[0], r[1], r[2]): float(r[3]) for r in self.session.execute(statement, rows)}

    # -- reads ----------------------------------------------------------------------------

    def period_totals(
        self, tenant_ids: Iterable[str] | None, start: dt.datetime, end: dt.datetime
    ) -> dict[str, dict[str, float]]:
        """tenant -> metric -> total for the period starting at `start` (exact: rolled
        up and not yet rolled up, in one statement)."""
        rolled = select(TOTALS.c.tenant_id, TOTALS.c.metric, TOTALS.c.quantity).where(TOTALS.c.period_start == start)
        raw = select(EVENTS.c.tenant_id, EVENTS.c.metric, EVENTS.c.quantity).where(
            not_(EVENTS.c.rolled_up), EVENTS.c.occurred_at >= start, EVENTS.c.occurred_at < end
        )
        if tenant_ids is not None:
            ids = list(tenant_ids)
            rolled = rolled.where(TOTALS.c.tenant_id.in_(ids))
            raw = raw.where(EVENTS.c.tenant_id.in_(ids))
        both = union_all(rolled, raw).subquery()
        query = select(both.c.tenant_id, both.c.metric, func.sum(both.c.quantity)).group_by(
            both.c.tenant_id, both.c.metric
        )
        totals: dict[str, dict[str, float]] = {}
        for tenant, metric, quantity in self.session.execute(query):
            totals.setdefault(tenant, {})[metric] = float(quantity)
        return totals

    def series(
        self, tenant_id: str, metric: str, start: dt.datetime, end: dt.datetime, granularity: Granularity
    ) -> dict[dt.datetime, float]:
        """bucket start -> sum over [start, end); `start` and `end` on minute boundaries."""
        rolled = select(ROLLUPS.c.bucket_start.label("at"), ROLLUPS.c.quantity.label("quantity")).where(
            ROLLUPS.c.tenant_id == tenant_id,
            ROLLUPS.c.metric == metric,
            ROLLUPS.c.bucket_start >= start,
            ROLLUPS.c.bucket_start < end,
        )
        raw = select(EVENTS.c.occurred_at.label("at"), EVENTS.c.quantity.label("quantity")).where(
            not_(EVENTS.c.rolled_up),
            EVENTS.c.tenant_id == tenant_id,
            EVENTS.c.metric == metric,
            EVENTS.c.occurred_at >= start,
            EVENTS.c.occurred_at < end,
        )
        both = union_all(rolled, raw).subquery()
        bucket = self._truncate(both.c.at, granularity).label("bucket")
        query = select(bucket, func.sum(both.c.quantity)).group_by(bucket)
        return {_as_utc(b): float(q) for b, q in self.session.execute(query)}

    def _truncate(self, column: ColumnElement[Any], granularity: Granularity) -> ColumnElement[Any]:
        if self.postgres:
            return func.date_trunc(granularity.value, func.timezone("UTC", column))
        return func.strftime(_SQLITE_TRUNC[granularity], column)

    # -- thresholds and outbox ---------------------------------------------------------------

    def mark_threshold(self, tenant_id: str, metric: str, period_start: dt.datetime, threshold: int) -> bool:
        """True the first time only."""
        statement = (
            self._insert(MARKS)
            .on_conflict_do_nothing()
            .values(
                tenant_id=tenant_id,
                metric=metric,
                period_start=period_start,
                threshold=threshold,
                created_at=dt.datetime.now(dt.UTC),
            )
            .returning(MARKS.c.threshold)
        )
        return self.session.execute(statement).first() is not None

    def add_outbox_event(self, tenant_id: str, event_type: str, payload: dict[str, Any], at: dt.datetime) -> None:
        self.session.add(m.OutboxEvent(tenant_id=tenant_id, type=event_type, payload=payload, created_at=at))

    # -- plans and tenants ----------------------------------------------------------------------

    def plans(self) -> dict[str, m.UsagePlan]:
        return {p.name: p for p in self.session.scalars(select(m.UsagePlan))}

    def plan(self, name: str) -> m.UsagePlan | None:
        return self.session.get(m.UsagePlan, name)

    def save_plan(self, name: str, display_name: str, quotas: dict[str, Any]) -> m.UsagePlan:
        plan = self.session.get(m.UsagePlan, name)
        if plan is None:
            plan = m.UsagePlan(name=name, display_name=display_name, quotas=quotas)
            self.session.add(plan)
        else:
            plan.display_name, plan.quotas = display_name, quotas
        self.session.flush()
        return plan

    def tenants(self, tenant_ids: Iterable[str] | None = None) -> list[m.Tenant]:
        query = select(m.Tenant).order_by(m.Tenant.slug)
        if tenant_ids is not None:
            query = query.where(m.Tenant.id.in_(list(tenant_ids)))
        return list(self.session.scalars(query))


def _as_utc(value: dt.datetime | str) -> dt.datetime:
    if isinstance(value, str):
        value = dt.datetime.fromisoformat(value)
    return value.replace(tzinfo=dt.UTC) if value.tzinfo is None else value.astimezone(dt.UTC)

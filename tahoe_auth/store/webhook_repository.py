"""Outbox, webhook endpoints and deliveries.

Claims are single UPDATE ... WHERE id IN (SELECT ... FOR UPDATE SKIP LOCKED) RETURNING
statements: several workers on PostgreSQL take disjoint batches without waiting for
each other; on SQLite (no SKIP LOCKED) the statement takes the write lock first, so two
workers serialise instead of failing on a stale snapshot.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, cast

from sqlalchemy import Table, and_, bindparam, func, insert, select, update
from sqlalchemy.orm import Session as OrmSession

from tahoe_auth.domain import events
from tahoe_auth.domain.errors import NotFound
from tahoe_auth.domain.webhooks import DeliveryFilter
from tahoe_auth.store import models as m


class OutboxRepository:
    def __init__(self, session: OrmSession) -> None:
        self.session = session

    def add(self, tenant_id: str, event_type: str, payload: dict[str, Any]) -> m.OutboxEvent:
        event = m.OutboxEvent(tenant_id=tenant_id, type=event_type, payload=payload)
        self.session.add(event)
        self.session.flush()
        return event

    def of_type(self, event_type: str) -> Sequence[m.OutboxEvent]:
        return self.session.scalars(
            select(m.OutboxEvent).where(m.OutboxEvent.type == event_type).order_by(m.OutboxEvent.created_at)
        ).all()

    def get(self, event_id: str) -> m.OutboxEvent:
        event = self.session.get(m.OutboxEvent, event_id)
        if event is None:
            raise NotFound("event")
        return event

    def claim_undispatched(self, now: dt.datetime, limit: int) -> list[tuple[str, str, str, dt.datetime]]:
        """Mark up to `limit` of the oldest undispatched events dispatched: (id, tenant, type, created)."""
        due = (
            select(m.OutboxEvent.id)
            .where(m.OutboxEvent.dispatched_at.is_(None))
            .order_by(m.OutboxEvent.created_at)
            .limit(limit)
            .with_for_update(skip_locked=True)
        )
        result = self.session.execute(
            update(m.OutboxEvent)
            .where(m.OutboxEvent.id.in_(due.scalar_subquery()))
            .values(dispatched_at=now)
            .returning(m.OutboxEvent.id, m.OutboxEvent.tenant_id, m.OutboxEvent.type, m.OutboxEvent.created_at)
            .execution_options(synchronize_session=False)
        )
        return [(row[0], row[1], row[2], row[3]) for row in result]

    def undispatched_count(self) -> int:
        query = select(func.count()).select_from(m.OutboxEvent).where(m.OutboxEvent.dispatched_at.is_(None))
        return int(self.session.scalar(query) or 0)

    def by_ids(self, ids: Iterable[str]) -> dict[str, m.OutboxEvent]:
        rows = self.session.scalars(select(m.OutboxEvent).where(m.OutboxEvent.id.in_(list(ids))))
        return {row.id: row for row in rows}


@dataclass(frozen=True)
class Claimed:
    id: str
    tenant_id: str
    event_id: str
    endpoint_id: str
    attempts: int
    window_start: dt.datetime


class WebhookRepository:
    def __init__(self, session: OrmSession) -> None:
        self.session = session

    # -- endpoints -----------------------------------------------------------------------

    def add_endpoint(self, endpoint: m.WebhookEndpoint) -> m.WebhookEndpoint:
        self.session.add(endpoint)
        self.session.flush()
        return endpoint

    def endpoint(self, endpoint_id: str) -> m.WebhookEndpoint:
        row = self.session.get(m.WebhookEndpoint, endpoint_id)
        if row is None:
            raise NotFound("webhook_endpoint")
        return row

    def endpoints(self, after: tuple[dt.datetime, str] | None, limit: int) -> Sequence[m.WebhookEndpoint]:
        query = select(m.WebhookEndpoint)
        if after is not None:
            created, row_id = after
            query = query.where(
                (m.WebhookEndpoint.created_at > created)
                | ((m.WebhookEndpoint.created_at == created) & (m.WebhookEndpoint.id > row_id))
            )
        return self.session.scalars(
            query.order_by(m.WebhookEndpoint.created_at, m.WebhookEndpoint.id).limit(limit)
        ).all()

    def delete_endpoint(self, endpoint: m.WebhookEndpoint) -> None:
        self.session.delete(endpoint)
        self.session.flush()

    def active_endpoints(self, tenant_ids: Iterable[str]) -> Sequence[m.WebhookEndpoint]:
        return self.session.scalars(
            select(m.WebhookEndpoint).where(
                m.WebhookEndpoint.tenant_id.in_(list(set(tenant_ids))), m.WebhookEndpoint.status == "active"
            )
        ).all()

    def endpoints_by_ids(self, ids: Iterable[str]) -> dict[str, m.WebhookEndpoint]:
        rows = self.session.scalars(select(m.WebhookEndpoint).where(m.WebhookEndpoint.id.in_(list(set(ids)))))
        return {row.id: row for row in rows}

    def disable_endpoints(self, reasons: dict[str, str], now: dt.datetime) -> None:
        for endpoint_id, reason in reasons.items():
            self.session.execute(
                update(m.WebhookEndpoint)
                .where(m.WebhookEndpoint.id == endpoint_id)
                .values(status="disabled", disabled_reason=reason[:300], updated_at=now)
                .execution_options(synchronize_session=False)
            )

    # -- deliveries ----------------------------------------------------------------------

    def add_deliveries(self, rows: list[dict[str, Any]]) -> None:
        if rows:
            self.session.execute(insert(m.WebhookDelivery), rows)

    def claim_due(self, now: dt.datetime, lease_until: dt.datetime, limit: int) -> list[Claimed]:
        """Take up to `limit` due deliveries of active endpoints: attempts + 1, and not
        due again until `lease_until` unless the claimant records an outcome first."""
        d, e = m.WebhookDelivery, m.WebhookEndpoint
        due = (
            select(d.id)
            .join(e, e.id == d.endpoint_id)
            .where(d.status.in_(events.DUE_STATUSES), d.next_attempt_at <= now, e.status == "active")
            .order_by(d.next_attempt_at)
            .limit(limit)
            .with_for_update(of=d, skip_locked=True)
        )
        result = self.session.execute(
            update(d)
            .where(d.id.in_(due.scalar_subquery()))
            .values(attempts=d.attempts + 1, next_attempt_at=lease_until, last_attempt_at=now)
            .returning(d.id, d.tenant_id, d.event_id, d.endpoint_id, d.attempts, d.window_start)
            .execution_options(synchronize_session=False)
        )
        return [Claimed(*row) for row in result]

    def record_outcomes(self, outcomes: list[dict[str, Any]]) -> int:
        """Apply attempt outcomes; each only if the row is still at the claimed attempt
        (a lapsed lease retaken by another worker wins). Returns rows updated."""
        if not outcomes:
            return 0
        d = cast(Table, m.WebhookDelivery.__table__)
        statement = (
            update(d)
            .where(and_(d.c.id == bindparam("b_id"), d.c.attempts == bindparam("b_attempts")))
            .values(
                status=bindparam("b_status"),
                next_attempt_at=bindparam("b_next"),
                last_status_code=bindparam("b_code"),
                last_error=bindparam("b_error"),
                last_duration_ms=bindparam("b_duration"),
                finished_at=bindparam("b_finished"),
            )
        )
        result = self.session.connection().execute(statement, outcomes)
        return int(result.rowcount)

    def delivery(self, delivery_id: str) -> m.WebhookDelivery:
        row = self.session.get(m.WebhookDelivery, delivery_id)
        if row is None:
            raise NotFound("webhook_delivery")
        return row

    def deliveries(
        self, filters: DeliveryFilter, after: tuple[dt.datetime, str] | None, limit: int
    ) -> Sequence[m.WebhookDelivery]:
        d = m.WebhookDelivery
        query = select(d)
        if filters.endpoint_id:
            query = query.where(d.endpoint_id == filters.endpoint_id)
        if filters.event_id:
            query = query.where(d.event_id == filters.event_id)
        if filters.status:
            query = query.where(d.status == filters.status)
        if after is not None:
            created, row_id = after
            query = query.where((d.created_at < created) | ((d.created_at == created) & (d.id < row_id)))
        return self.session.scalars(query.order_by(d.created_at.desc(), d.id.desc()).limit(limit)).all()

    def dead_for_endpoint(self, endpoint_id: str, since: dt.datetime | None, limit: int) -> Sequence[m.WebhookDelivery]:
        d = m.WebhookDelivery
        query = select(d).where(d.endpoint_id == endpoint_id, d.status == events.DEAD)
        if since is not None:
            query = query.where(d.created_at >= since)
        return self.session.scalars(query.order_by(d.created_at).limit(limit)).all()

    def due_count(self, now: dt.datetime) -> int:
        d = m.WebhookDelivery
        query = select(func.count()).select_from(d).where(d.status.in_(events.DUE_STATUSES), d.next_attempt_at <= now)
        return int(self.session.scalar(query) or 0)

"""Audit queries: append under the chain head's lock, list with filters, read a chain.

Audit rows are not TenantScoped (no foreign key to tenants, and a platform chain with
tenant_id ""), so every query here names its tenant explicitly; row-level security on
PostgreSQL is the second wall (migration 0006)."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterator, Sequence

from sqlalchemy import select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session as OrmSession

from tahoe_auth.domain.audit import GENESIS, AuditFields, AuditFilter, StoredEntry, chain_hash
from tahoe_auth.store import models as m


class AuditRepository:
    def __init__(self, session: OrmSession) -> None:
        self.session = session

    def append(self, entry: AuditFields) -> m.AuditEvent:
        """Lock the chain's head, link the entry to it, insert, advance the head. In the
        caller's transaction: the entry commits or rolls back with the change it records."""
        head = self._locked_head(entry.tenant_id)
        fields = dataclasses.replace(
            entry,
            sequence=head.last_sequence + 1,
            actor=entry.actor[:320],
            target=entry.target[:400],
            client_address=entry.client_address[:64],
            request_id=entry.request_id[:128],
            traceparent=entry.traceparent[:64],
            # What the JSON column gives back is what was hashed.
            details=json.loads(json.dumps(dict(entry.details), default=str)),
        )
        digest = chain_hash(head.last_hash, fields)
        row = m.AuditEvent(
            tenant_id=fields.tenant_id,
            sequence=fields.sequence,
            occurred_at=fields.occurred_at,
            actor=fields.actor,
            actor_type=fields.actor_type,
            action=fields.action,
            target=fields.target,
            outcome=fields.outcome,
            client_address=fields.client_address,
            request_id=fields.request_id,
            traceparent=fields.traceparent,
            details=dict(fields.details),
            previous_hash=head.last_hash,
            entry_hash=digest,
        )
        self.session.add(row)
        head.last_sequence, head.last_hash, head.updated_at = fields.sequence, digest, fields.occurred_at
        self.session.flush()
        return row

    def _locked_head(self, tenant_id: str) -> m.AuditHead:
        dialect = self.session.get_bind().dialect.name
        values = {"tenant_id": tenant_id, "last_sequence": 0, "last_hash": GENESIS, "updated_at": m.utcnow()}
        insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
        self.session.execute(insert(m.AuditHead).values(**values).on_conflict_do_nothing())
        # SELECT ... FOR UPDATE serialises appends per tenant on PostgreSQL; on SQLite
        # the insert above already took the database's write lock.
        query = select(m.AuditHead).where(m.AuditHead.tenant_id == tenant_id).with_for_update()
        head = self.session.scalars(query.execution_options(populate_existing=True)).one()
        return head

    def find(
        self, tenant_id: str, filters: AuditFilter, before_sequence: int | None, limit: int
    ) -> Sequence[m.AuditEvent]:
        query = select(m.AuditEvent).where(m.AuditEvent.tenant_id == tenant_id)
        if filters.actor:
            query = query.where(m.AuditEvent.actor == filters.actor)
        if filters.action.endswith("*"):
            query = query.where(m.AuditEvent.action.startswith(filters.action[:-1], autoescape=True))
        elif filters.action:
            query = query.where(m.AuditEvent.action == filters.action)
        if filters.outcome:
            query = query.where(m.AuditEvent.outcome == filters.outcome)
        if filters.start is not None:
            query = query.where(m.AuditEvent.occurred_at >= filters.start)
        if filters.end is not None:
            query = query.where(m.AuditEvent.occurred_at < filters.end)
        if before_sequence is not None:
            query = query.where(m.AuditEvent.sequence < before_sequence)
        return self.session.scalars(query.order_by(m.AuditEvent.sequence.desc()).limit(limit)).all()

    def head(self, tenant_id: str) -> m.AuditHead | None:
        return self.session.get(m.AuditHead, tenant_id)

    def chains(self) -> list[str]:
        """Every tenant with entries or a head (a head without entries is itself suspect)."""
        heads = set(self.session.scalars(select(m.AuditHead.tenant_id)))
        entries = set(self.session.scalars(select(m.AuditEvent.tenant_id).distinct()))
        return sorted(heads | entries)

    def chain(self, tenant_id: str, up_to: int | None = None, batch: int = 1000) -> Iterator[StoredEntry]:
        """The chain's entries in sequence order, read in batches."""
        after = 0
        while True:
            query = select(m.AuditEvent).where(m.AuditEvent.tenant_id == tenant_id, m.AuditEvent.sequence > after)
            if up_to is not None:
                query = query.where(m.AuditEvent.sequence <= up_to)
            rows = self.session.scalars(query.order_by(m.AuditEvent.sequence).limit(batch)).all()
            for row in rows:
                yield stored_entry(row)
            if len(rows) < batch:
                return
            after = rows[-1].sequence


def fields_of(row: m.AuditEvent) -> AuditFields:
    return AuditFields(
        tenant_id=row.tenant_id,
        sequence=row.sequence,
        occurred_at=row.occurred_at,
        actor=row.actor,
        actor_type=row.actor_type,
        action=row.action,
        target=row.target,
        outcome=row.outcome,
        client_address=row.client_address,
        request_id=row.request_id,
        traceparent=row.traceparent,
        details=row.details,
    )


def stored_entry(row: m.AuditEvent) -> StoredEntry:
    return StoredEntry(fields_of(row), row.previous_hash, row.entry_hash)

"""The audit log: record (inside the caller's unit of work), query, export, verify.

    with db.unit_of_work(tenant_id) as uow:
        ...the change...
        audit.record(uow, ctx, tenant_id, actions.SESSION_REVOKE, f"session:{sid}")
        uow.commit()

The entry commits or rolls back with the change. Call `record` last in the unit of
work: it locks the tenant's chain head until commit. Failures with no change to go
with them (a failed login) use `record_alone`, one small transaction.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
import logging
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from tahoe_auth.domain import audit
from tahoe_auth.domain.audit import AuditFilter
from tahoe_auth.domain.errors import InvalidArgument, NotFound
from tahoe_auth.kernel import logs
from tahoe_auth.kernel.clock import Clock
from tahoe_auth.kernel.metrics import AUDIT_ENTRIES
from tahoe_auth.services.context import CallContext
from tahoe_auth.store import models as m
from tahoe_auth.store.db import SYSTEM, Database, UnitOfWork

# The rows the reader returns, for converters that must not reach into the store.
AuditEvent = m.AuditEvent

log = logging.getLogger(__name__)

MAX_PAGE_SIZE = 500
DEFAULT_PAGE_SIZE = 50
EXPORT_LIMIT = 1_000_000


@dataclass(frozen=True)
class Actor:
    subject: str
    type: str


def actor_of(ctx: CallContext | None) -> Actor:
    if ctx is None or ctx.principal is None:
        return Actor("", audit.ANONYMOUS)
    return Actor(ctx.principal.subject, ctx.principal.subject_type)


SYSTEM_CONTEXT = CallContext()


class AuditLog:
    def __init__(self, db: Database, clock: Clock) -> None:
        self._db = db
        self._clock = clock

    def record(
        self,
        uow: UnitOfWork,
        ctx: CallContext | None,
        tenant_id: str,
        action: str,
        target: str,
        outcome: str = audit.SUCCESS,
        details: Mapping[str, Any] | None = None,
        actor: Actor | None = None,
    ) -> m.AuditEvent:
        if outcome not in audit.OUTCOMES:
            raise ValueError(f"unknown audit outcome {outcome!r}")
        who = actor or actor_of(ctx)
        entry = audit.AuditFields(
            tenant_id=tenant_id,
            sequence=0,  # assigned under the head's lock
            occurred_at=self._clock.now(),
            actor=who.subject,
            actor_type=who.type,
            action=action,
            target=target,
            outcome=outcome,
            client_address=ctx.client_address if ctx else "",
            request_id=(ctx.request_id if ctx and ctx.request_id else logs.request_id_var.get()),
            traceparent=logs.traceparent_var.get(),
            details=audit.scrub(details or {}),
        )
        row = uow.audit.append(entry)
        AUDIT_ENTRIES.labels(action, outcome).inc()
        return row

    def record_alone(
        self,
        ctx: CallContext | None,
        tenant_id: str,
        action: str,
        target: str,
        outcome: str,
        details: Mapping[str, Any] | None = None,
        actor: Actor | None = None,
    ) -> None:
        """One entry in its own transaction (no change goes with it)."""
        with self._db.unit_of_work(tenant_id or SYSTEM) as uow:
            self.record(uow, ctx, tenant_id, action, target, outcome, details, actor)
            uow.commit()


# -- reading -------------------------------------------------------------------------------


@dataclass(frozen=True)
class AuditQuery:
    tenant_id: str
    filters: AuditFilter


def chain_scope(ctx: CallContext, tenant_id: str) -> str:
    """Tenant admins read their tenant (another tenant's: NOT_FOUND); platform
    administrators read any, and the platform chain when they name no tenant."""
    principal = ctx.require_principal()
    if principal.platform_admin:
        return tenant_id
    if tenant_id and tenant_id != principal.tenant_id:
        raise NotFound("tenant")
    return principal.tenant_id


def check_filters(actor: str, action: str, outcome: str, start: dt.datetime | None, end: dt.datetime | None) -> None:
    if outcome and outcome not in audit.OUTCOMES:
        raise InvalidArgument("outcome", f"outcome must be one of {', '.join(audit.OUTCOMES)}")
    if start and end and end <= start:
        raise InvalidArgument("end_time", "end_time must be after start_time")
    if len(actor) > 320 or len(action) > 100:
        raise InvalidArgument("filter", "filter values are too long")


class AuditReader:
    def __init__(self, db: Database, log_: AuditLog) -> None:
        self._db = db
        self._log = log_

    def list_events(
        self, ctx: CallContext, tenant_id: str, filters: AuditFilter, page_size: int, page_token: str
    ) -> tuple[list[m.AuditEvent], str]:
        scope = chain_scope(ctx, tenant_id)
        if page_size < 0:
            raise InvalidArgument("page_size", "page_size must not be negative")
        limit = min(page_size or DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)
        before = _decode_token(page_token)
        with self._db.unit_of_work(scope or SYSTEM) as uow:
            rows = list(uow.audit.find(scope, filters, before, limit + 1))
        next_token = str(rows[limit - 1].sequence) if len(rows) > limit else ""
        return rows[:limit], next_token

    def export(self, ctx: CallContext, tenant_id: str, filters: AuditFilter, fmt: str) -> Iterator[bytes]:
        """JSON Lines (hashes included: the chain can be verified offline) or CSV, in
        chunks, oldest first. The export itself is audited."""
        scope = chain_scope(ctx, tenant_id)
        with self._db.unit_of_work(scope or SYSTEM) as uow:
            self._log.record(uow, ctx, scope, "audit.export", f"tenant:{scope or 'platform'}", details={"format": fmt})
            uow.commit()
        before: int | None = None
        rows: list[m.AuditEvent] = []
        while True:  # newest first in pages, then reversed: the query is by descending sequence
            with self._db.unit_of_work(scope or SYSTEM) as uow:
                page = list(uow.audit.find(scope, filters, before, 1000))
            rows.extend(page)
            if len(page) < 1000 or len(rows) >= EXPORT_LIMIT:
                break
            before = page[-1].sequence
        rows.reverse()
        if fmt == "csv":
            yield from _csv_chunks(rows)
        else:
            for start in range(0, len(rows), 500):
                yield b"".join(
                    json.dumps(entry_dict(r), sort_keys=True).encode() + b"\n" for r in rows[start : start + 500]
                )


def entry_dict(row: m.AuditEvent) -> dict[str, Any]:
    return {
        "tenant_id": row.tenant_id,
        "sequence": row.sequence,
        "time": row.occurred_at.astimezone(dt.UTC).isoformat(timespec="microseconds"),
        "actor": row.actor,
        "actor_type": row.actor_type,
        "action": row.action,
        "target": row.target,
        "outcome": row.outcome,
        "client_address": row.client_address,
        "request_id": row.request_id,
        "traceparent": row.traceparent,
        "details": row.details,
        "previous_hash": row.previous_hash,
        "hash": row.entry_hash,
    }


def _csv_chunks(rows: list[m.AuditEvent]) -> Iterator[bytes]:
    columns = list(entry_dict(rows[0]).keys()) if rows else ["tenant_id", "sequence", "time"]
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns)
    writer.writeheader()
    for index, row in enumerate(rows, 1):
        values = entry_dict(row)
        values["details"] = json.dumps(values["details"], sort_keys=True)
        writer.writerow(values)
        if index % 500 == 0:
            yield buffer.getvalue().encode()
            buffer.seek(0)
            buffer.truncate()
    yield buffer.getvalue().encode()


def _decode_token(token: str) -> int | None:
    if not token:
        return None
    if not token.isdigit():
        raise InvalidArgument("page_token", "page_token is malformed")
    return int(token)


# -- verification --------------------------------------------------------------------------


class AuditVerifier:
    def __init__(self, db: Database) -> None:
        self._db = db

    def verify(self, tenant_id: str | None = None) -> tuple[int, list[audit.ChainProblem]]:
        """Check every chain (or one): (entries checked, problems, at most one per chain)."""
        with self._db.unit_of_work(SYSTEM) as uow:
            chains = [tenant_id] if tenant_id is not None else uow.audit.chains()
        checked, problems = 0, []
        for chain in chains:
            with self._db.unit_of_work(SYSTEM) as uow:
                head = uow.audit.head(chain)
                if head is None:
                    problems.append(audit.ChainProblem(chain, 0, "the chain's head is missing"))
                    continue
                counted = _Counted(uow.audit.chain(chain, up_to=head.last_sequence))
                problem = audit.verify_chain(chain, counted, head.last_sequence, head.last_hash)
                checked += counted.count
            if problem is not None:
                log.error("audit chain %r: entry %d: %s", chain, problem.sequence, problem.problem)
                problems.append(problem)
        return checked, problems

    def verify_for(self, ctx: CallContext, tenant_id: str) -> tuple[str, int, audit.ChainProblem | None]:
        """The caller's chain, walled like reading it: (chain, entries checked, first problem)."""
        scope = chain_scope(ctx, tenant_id)
        checked, problems = self.verify(scope)
        return scope, checked, problems[0] if problems else None


class _Counted:
    def __init__(self, entries: Iterator[audit.StoredEntry]) -> None:
        self._entries = entries
        self.count = 0

    def __iter__(self) -> Iterator[audit.StoredEntry]:
        for entry in self._entries:
            self.count += 1
            yield entry

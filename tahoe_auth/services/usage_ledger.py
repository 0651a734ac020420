"""The durable write path for usage, and this period's totals for readers.

`UsageLedger.append` writes events to PostgreSQL first (usage_events, one transaction,
repeated idempotency keys skipped by the unique constraint) and only after the commit
adds what was inserted to the live counters in Redis (one pipelined round trip). So a
recorded event is never lost: if Redis is down the increment is skipped (fail open:
logged, counted, the tenant is marked for a rebuild) and the counters are rebuilt from
the database later; if the database is down the call fails and nothing is counted.

`UsageTotals.current` answers this period's totals from the live counters, rebuilding
any that are missing (Redis restarted) from the database; with Redis down it reads the
database directly (for background readers only: quotas refresher, WatchUsage).
"""

from __future__ import annotations

import logging
import threading
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy.exc import IntegrityError

from tahoe_auth.domain.errors import NotFound
from tahoe_auth.domain.usage import UsageEvent, dedupe, period_of
from tahoe_auth.kernel.clock import Clock
from tahoe_auth.kernel.metrics import STORE_FAILURES, USAGE_EVENTS
from tahoe_auth.store.db import SYSTEM, Database
from tahoe_auth.store.kv import StoreUnavailable
from tahoe_auth.store.live_counters import LiveCounters, Totals

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class AppendResult:
    recorded: int
    duplicates: int


class UsageLedger:
    def __init__(self, db: Database, live: LiveCounters, clock: Clock) -> None:
        self._db = db
        self._live = live
        self._clock = clock
        self._dirty: set[str] = set()
        self._lock = threading.Lock()

    def append(self, batches: Mapping[str, Sequence[UsageEvent]]) -> AppendResult:
        """tenant -> events, all in one transaction. Raises NotFound for an unknown tenant."""
        recorded_at = self._clock.now()
        rows: list[dict[str, Any]] = []
        offered = 0
        for tenant_id, events in batches.items():
            offered += len(events)
            rows.extend(
                {
                    "tenant_id": tenant_id,
                    "metric": e.metric,
                    "quantity": e.quantity,
                    "occurred_at": e.occurred_at,
                    "dimensions": dict(e.dimensions),
                    "idempotency_key": e.idempotency_key,
                    "recorded_at": recorded_at,
                    "rolled_up": False,
                }
                for e in dedupe(events)
            )
        if not rows:
            return AppendResult(0, offered)
        scope = next(iter(batches)) if len(batches) == 1 else SYSTEM
        try:
            with self._db.unit_of_work(scope) as uow:
                inserted = uow.usage.insert_events(rows)
                uow.commit()
        except IntegrityError:
            raise NotFound("tenant") from None
        USAGE_EVENTS.labels("recorded").inc(len(inserted))
        USAGE_EVENTS.labels("duplicate").inc(offered - len(inserted))
        self._count_live(inserted)
        return AppendResult(len(inserted), offered - len(inserted))

    def _count_live(self, inserted: Iterable[tuple[str, str, float, Any]]) -> None:
        increments: dict[tuple[str, str], dict[str, float]] = defaultdict(lambda: defaultdict(float))
        for tenant_id, metric, quantity, at in inserted:
            increments[(tenant_id, f"{at.year:04d}-{at.month:02d}")][metric] += quantity  # period_of(at).name
        try:
            self._live.add(increments)
        except StoreUnavailable as exc:
            STORE_FAILURES.labels("usage_live_add", "fail_open").inc()
            log.warning("live usage counters not updated (%s); they will be rebuilt from the database", exc)
            with self._lock:
                self._dirty.update(tenant for tenant, _ in increments)

    def take_dirty(self) -> set[str]:
        """Tenants whose live counters missed an increment (for the pipeline to rebuild)."""
        with self._lock:
            dirty, self._dirty = self._dirty, set()
        return dirty


class UsageTotals:
    def __init__(self, db: Database, live: LiveCounters, clock: Clock) -> None:
        self._db = db
        self._live = live
        self._clock = clock

    def current(self, tenant_ids: Iterable[str]) -> dict[str, Totals]:
        tenants = list(tenant_ids)
        period = period_of(self._clock.now())
        try:
            found = self._live.read(tenants, period.name)
        except StoreUnavailable as exc:
            STORE_FAILURES.labels("usage_live_read", "database").inc()
            log.warning("live usage counters unreadable (%s): reading totals from the database", exc)
            return self._from_database(tenants)
        missing = [t for t, totals in found.items() if totals is None]
        result = {t: totals for t, totals in found.items() if totals is not None}
        if missing:
            result.update(self.rebuild(missing))
        return result

    def rebuild(self, tenant_ids: Iterable[str]) -> dict[str, Totals]:
        """Overwrite the live counters of these tenants with the database's totals."""
        tenants = list(tenant_ids)
        totals = self._from_database(tenants)
        try:
            self._live.replace(period_of(self._clock.now()).name, totals)
        except StoreUnavailable as exc:
            STORE_FAILURES.labels("usage_live_rebuild", "retry").inc()
            log.warning("live usage counters not rebuilt (%s); will retry", exc)
        return totals

    def _from_database(self, tenants: list[str]) -> dict[str, Totals]:
        period = period_of(self._clock.now())
        with self._db.unit_of_work(SYSTEM) as uow:
            found = uow.usage.period_totals(tenants, period.start, period.end)
        return {t: found.get(t, {}) for t in tenants}

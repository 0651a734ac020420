"""Rollups: raw events -> per-minute rollups and per-period totals, thresholds, and the
live counters kept honest. Runs every couple of seconds on every instance.

Each batch is one transaction: claim the oldest unrolled events (`FOR UPDATE SKIP
LOCKED`: instances never take the same rows), add their sums to usage_rollups,
usage_period_totals and usage_dimension_rollups (hourly, by route, subject type and
credential: what the dashboards read), mark them rolled up, and write a `usage.threshold_reached` outbox
event for each 80% / 100% threshold newly reached (usage_threshold_marks makes each
announcement happen once). A crash mid-batch rolls the whole batch back.

After the batches, the live counters of the tenants touched in this cycle or the
previous one (and of any whose increments failed) are rebuilt from the database: an
increment lost or doubled around a rebuild is corrected by the next one.
"""

from __future__ import annotations

import logging
import threading
from collections import defaultdict
from collections.abc import Mapping
from typing import Any

from tahoe_auth.domain.dashboards import dimension_sums
from tahoe_auth.domain.usage import THRESHOLD_EVENT, Granularity, period_of, reached_thresholds, truncate
from tahoe_auth.kernel.clock import Clock
from tahoe_auth.kernel.metrics import STORE_FAILURES, USAGE_ROLLED_UP, USAGE_THRESHOLD_EVENTS
from tahoe_auth.services.quotas import rules_for
from tahoe_auth.services.usage_ledger import UsageLedger, UsageTotals
from tahoe_auth.store.db import SYSTEM, Database, UnitOfWork

log = logging.getLogger(__name__)

INTERVAL = 2.0
BATCH_SIZE = 5000

Key = tuple[str, str, Any]


class UsagePipeline:
    def __init__(
        self,
        db: Database,
        ledger: UsageLedger,
        totals: UsageTotals,
        clock: Clock,
        *,
        interval: float = INTERVAL,
        batch_size: int = BATCH_SIZE,
    ) -> None:
        self._db = db
        self._ledger = ledger
        self._totals = totals
        self._clock = clock
        self._interval = interval
        self._batch_size = batch_size
        self._previous: set[str] = set()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._run_lock = threading.Lock()

    def run_once(self) -> int:
        """Roll up everything pending, announce thresholds, rebuild live counters."""
        with self._run_lock:
            rolled, touched = 0, set()
            while True:
                count, tenants = self._roll_up_batch()
                rolled += count
                touched |= tenants
                if count < self._batch_size:
                    break
            rebuild = touched | self._previous | self._ledger.take_dirty()
            self._previous = touched
            if rebuild:
                self._totals.rebuild(rebuild)
            return rolled

    def _roll_up_batch(self) -> tuple[int, set[str]]:
        with self._db.unit_of_work(SYSTEM) as uow:
            rows = uow.usage.claim_unrolled(self._batch_size)
            if not rows:
                return 0, set()
            minutes: dict[Key, float] = defaultdict(float)
            periods: dict[Key, float] = defaultdict(float)
            for _, tenant, metric, occurred_at, quantity, _ in rows:
                minutes[(tenant, metric, truncate(occurred_at, Granularity.MINUTE))] += quantity
                periods[(tenant, metric, period_of(occurred_at).start)] += quantity
            uow.usage.add_to_rollups(minutes)
            uow.usage.add_to_dimension_rollups(dimension_sums((r[1], r[2], r[3], r[4], r[5]) for r in rows))
            new_totals = uow.usage.add_to_period_totals(periods)
            uow.usage.mark_rolled_up([row[0] for row in rows])
            self._announce_thresholds(uow, new_totals)
            uow.commit()
        USAGE_ROLLED_UP.inc(len(rows))
        return len(rows), {row[1] for row in rows}

    def _announce_thresholds(self, uow: UnitOfWork, new_totals: Mapping[Key, float]) -> None:
        tenants = {t.id: t for t in uow.usage.tenants({key[0] for key in new_totals})}
        plans = uow.usage.plans()
        now = self._clock.now()
        for (tenant_id, metric, period_start), used in new_totals.items():
            tenant = tenants.get(tenant_id)
            if tenant is None:
                continue
            rule = rules_for(plans.get(tenant.plan), tenant.settings or {}, tenant_id).get(metric)
            for threshold in reached_thresholds(rule, used):
                if not uow.usage.mark_threshold(tenant_id, metric, period_start, threshold):
                    continue
                assert rule is not None
                payload = {
                    "tenant_id": tenant_id,
                    "metric": metric,
                    "period": period_of(period_start).name,
                    "threshold": threshold,
                    "used": used,
                    "included": rule.included,
                    "limit": "hard" if rule.hard else "soft",
                    "plan": tenant.plan,
                }
                uow.usage.add_outbox_event(tenant_id, THRESHOLD_EVENT, payload, now)
                USAGE_THRESHOLD_EVENTS.labels(str(threshold)).inc()
                log.info("usage threshold %d%% reached: tenant %s metric %s", threshold, tenant_id, metric)

    # -- background thread -------------------------------------------------------------

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._loop, name="usage-rollup", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def _loop(self) -> None:
        while not self._stop.wait(self._interval):
            try:
                self.run_once()
            except Exception as exc:  # database down: try again next cycle
                STORE_FAILURES.labels("usage_rollup", "retry").inc()
                log.warning("usage rollup failed (%s: %s); retrying", type(exc).__name__, exc)

"""Quota checks for the hot path: `Quotas.check(tenant_id, metric)` answers from memory.

A background thread (started on first use) refreshes, once a second, the state of every
tenant checked in the last few minutes: its rules (plan from the tenant row, plan
definitions from usage_plans, overrides from `settings["quotas"]`) and this period's
totals from the live counters. `check` never touches the database or Redis: a tenant
not loaded yet is allowed while its state loads (within about a second), and usage is
seen up to about two seconds late (the Check recorder flushes each second). A hard
quota can therefore be overshot by roughly two seconds of traffic.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from tahoe_auth.domain.errors import InvalidArgument
from tahoe_auth.domain.usage import (
    API_REQUESTS,
    QuotaDecision,
    QuotaRule,
    effective_rules,
    evaluate_quota,
    parse_quotas,
    period_of,
)
from tahoe_auth.kernel import changes
from tahoe_auth.kernel.clock import Clock
from tahoe_auth.kernel.metrics import STORE_FAILURES
from tahoe_auth.services.tenant_config import TenantConfigCache
from tahoe_auth.services.usage_ledger import UsageTotals
from tahoe_auth.store import models as m
from tahoe_auth.store.db import SYSTEM, Database

log = logging.getLogger(__name__)

REFRESH_INTERVAL = 1.0
PLANS_MAX_AGE = 30.0
IDLE_AFTER = 300.0


def rules_for(plan: m.UsagePlan | None, settings: Mapping[str, Any], tenant_id: str = "") -> dict[str, QuotaRule]:
    """A tenant's quota rules: its plan's, with its own overrides on top. Invalid stored
    rules are logged and ignored (they were validated when written)."""
    try:
        base = parse_quotas(plan.quotas if plan is not None else None, "plan.quotas")
        overrides = settings.get("quotas")
        return effective_rules(base, overrides if isinstance(overrides, Mapping) else {})
    except InvalidArgument as exc:
        log.error("tenant %s has invalid quota rules (%s): no quotas apply", tenant_id, exc.message)
        return {}


@dataclass
class QuotaState:
    rules: dict[str, QuotaRule]
    used: dict[str, float]
    period: str
    seen: float = field(default_factory=time.monotonic)


class Quotas:
    def __init__(
        self,
        db: Database,
        tenant_config: TenantConfigCache,
        totals: UsageTotals,
        clock: Clock,
        *,
        refresh_interval: float = REFRESH_INTERVAL,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._db = db
        self._tenant_config = tenant_config
        self._totals = totals
        self._clock = clock
        self._interval = refresh_interval
        self._monotonic = monotonic
        self._states: dict[str, QuotaState] = {}
        self._wanted: set[str] = set()
        self._plans: dict[str, m.UsagePlan] | None = None
        self._plans_loaded = 0.0
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def check(self, tenant_id: str, metric: str = API_REQUESTS) -> QuotaDecision:
        """From memory only. Unknown tenants are allowed while their state loads."""
        state = self._states.get(tenant_id)
        if state is None:
            self._want(tenant_id)
            return QuotaDecision(True, metric)
        state.seen = self._monotonic()
        rule = state.rules.get(metric)
        used = state.used.get(metric, 0.0)
        if rule is None:  # as evaluate_quota answers it, without the clock (a datetime per Check)
            return QuotaDecision(True, metric, used)
        return evaluate_quota(rule, metric, used, self._clock.now())

    def _want(self, tenant_id: str) -> None:
        with self._lock:
            self._wanted.add(tenant_id)
        self._wake.set()
        if self._thread is None:
            self.start()

    def refresh(self) -> None:
        """Reload rules and totals of every tenant in use (the thread calls this)."""
        now = self._monotonic()
        with self._lock:
            wanted, self._wanted = self._wanted, set()
        tenants = wanted | {t for t, s in self._states.items() if now - s.seen < IDLE_AFTER}
        for idle in set(self._states) - tenants:
            self._states.pop(idle, None)
        if not tenants:
            return
        plans = self._plan_definitions()
        used = self._totals.current(tenants)
        period = period_of(self._clock.now()).name
        for tenant_id in tenants:
            config = self._tenant_config.get(tenant_id)
            rules = rules_for(plans.get(config.plan), {"quotas": config.quota_overrides}, tenant_id)
            previous = self._states.get(tenant_id)
            seen = previous.seen if previous is not None else now
            self._states[tenant_id] = QuotaState(rules, used.get(tenant_id, {}), period, seen)

    def _plan_definitions(self) -> dict[str, m.UsagePlan]:
        if self._plans is None or self._monotonic() - self._plans_loaded > PLANS_MAX_AGE:
            with self._db.unit_of_work(SYSTEM) as uow:
                self._plans = uow.usage.plans()
            self._plans_loaded = self._monotonic()
        return self._plans

    def apply_change(self, channel: str, message: str) -> None:
        if channel in (changes.PLANS_CHANGED, ""):
            self._plans = None
            self._wake.set()

    # -- background thread -------------------------------------------------------------

    def start(self) -> None:
        with self._lock:
            if self._thread is not None:
                return
            self._thread = threading.Thread(target=self._loop, name="quota-refresh", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.refresh()
            except Exception as exc:  # database down: keep the last known state, retry
                STORE_FAILURES.labels("quota_refresh", "keep_last_state").inc()
                log.warning("quota refresh failed (%s: %s); keeping the last known state", type(exc).__name__, exc)
            self._wake.wait(self._interval)
            self._wake.clear()

"""The rate limiter that Check and the gRPC API's own interceptor call.

    decision = limiter.check(RateLimitSubject(client_address=..., tenant_id=..., api_key_id=...))
    headers = ratelimit.headers(decision)         # ratelimit-* (+ retry-after when denied)

At most one Redis round trip per check whatever the number of policies, and a fraction of one
for busy subjects, which reserve small batches (store/limiter_backends.py LeasingBackend).

When Redis fails (an error, or no answer within TAHOE_REDIS_TIMEOUT) the request is
decided by a per-instance in-memory limiter with the same policies, each divided by the
number of instances (TAHOE_INSTANCE_COUNT, rounded up): traffic is neither unlimited nor
blocked, and callers never see the error. One failure alone (a slow answer on a busy
host) changes nothing else: the next request asks Redis again. A second failure in a
row is an outage, and the limiter switches to memory. The switch logs one warning and sets the gauge
`tahoe_ratelimit_fallback_active`; every fallback decision counts in
`tahoe_ratelimit_fallback_decisions_total`. While degraded, one request per second
(at most one at a time) probes Redis with its real check; the first success switches
back (logged). Counts taken in memory during the outage are not copied to Redis.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

from tahoe_auth.domain.ratelimit import (
    UNLIMITED,
    US,
    LimitSet,
    Outcome,
    PolicyCheck,
    RateLimitDecision,
    RateLimitSubject,
    decide,
    policy_checks,
)
from tahoe_auth.kernel.metrics import (
    RATELIMIT_DECISIONS,
    RATELIMIT_FALLBACK_ACTIVE,
    RATELIMIT_FALLBACK_DECISIONS,
    STORE_FAILURES,
)
from tahoe_auth.services.tenant_config import TenantConfigCache
from tahoe_auth.store.kv import StoreUnavailable
from tahoe_auth.store.limiter_backends import LimiterBackend

log = logging.getLogger(__name__)

PROBE_INTERVAL = 1.0
FAILURES_BEFORE_FALLBACK = 2  # in a row: one slow answer is not an outage
MAX_REMEMBERED_SUBJECTS = 50_000


class RateLimiter:
    def __init__(
        self,
        primary: LimiterBackend,
        limits: TenantConfigCache | Callable[[str], LimitSet],
        *,
        fallback: LimiterBackend | None = None,
        instance_count: int = 1,
        enabled: bool = True,
        clock: Callable[[], float] | None = None,
        probe_interval: float = PROBE_INTERVAL,
    ) -> None:
        self._primary = primary
        self._limits = limits.limits if isinstance(limits, TenantConfigCache) else limits
        self._fallback = fallback
        self._instances = max(1, instance_count)
        self.enabled = enabled
        self._clock = clock
        self._probe_interval = probe_interval
        self._degraded = False
        self._failures = 0  # in a row, while not degraded
        self._next_probe = 0.0
        self._probe_lock = threading.Lock()
        self._allowed = RATELIMIT_DECISIONS.labels("allowed", "")
        # Labelled children by (result, policy), resolved once: denials come in floods.
        self._children: dict[tuple[str, str], Any] = {}
        self._checks: dict[RateLimitSubject, tuple[LimitSet, list[PolicyCheck]]] = {}

    @property
    def degraded(self) -> bool:
        return self._degraded

    def close(self) -> None:
        self._primary.close()
        if self._fallback is not None:
            self._fallback.close()

    def check(self, subject: RateLimitSubject) -> RateLimitDecision:
        """Every policy for this subject (per-tenant settings over the defaults), counted
        only if all enforced ones allow. Never raises for a store outage."""
        if not self.enabled:
            return UNLIMITED
        return self.check_policies(self.checks_for(subject), subject.cost)

    def checks_for(self, subject: RateLimitSubject) -> list[PolicyCheck]:
        """The policy checks `check` would evaluate (to combine with others in one call).
        Remembered per subject while its tenant's limits stay the same object: building
        the keys is a good part of a Check's own cost."""
        limits = self._limits(subject.tenant_id)
        known = self._checks.get(subject)
        if known is not None and known[0] is limits:
            return known[1]
        checks = policy_checks(subject, limits)
        if len(self._checks) >= MAX_REMEMBERED_SUBJECTS:
            self._checks.clear()
        self._checks[subject] = (limits, checks)
        return checks

    def check_policies(self, checks: Sequence[PolicyCheck], cost: int = 1) -> RateLimitDecision:
        """Explicit checks (the gRPC API's own limits use this)."""
        if not self.enabled or not checks:
            return UNLIMITED
        checks, outcomes, degraded = self._evaluate(checks, cost)
        decision = decide(checks, outcomes, degraded=degraded)
        self._count(decision)
        return decision

    def _evaluate(self, checks: Sequence[PolicyCheck], cost: int) -> tuple[Sequence[PolicyCheck], list[Outcome], bool]:
        """(the checks as evaluated, their outcomes, whether the fallback decided)."""
        now_us = None if self._clock is None else int(self._clock() * US)
        if self._fallback is None:
            return checks, self._primary.evaluate(checks, now_us, cost), False
        degraded = self._degraded
        probing = degraded and self._may_probe()
        if not degraded or probing:
            try:
                outcomes = self._primary.evaluate(checks, now_us, cost)
            except StoreUnavailable as exc:
                self._on_failure(exc)
            else:
                if probing:
                    self._on_recovery()
                elif self._failures:
                    self._failures = 0
                return checks, outcomes, False
            finally:
                if probing:
                    self._probe_lock.release()
        RATELIMIT_FALLBACK_DECISIONS.inc()
        shares = [PolicyCheck(c.key, c.policy.divided(self._instances)) for c in checks]
        return shares, self._fallback.evaluate(shares, now_us, cost), True

    def _may_probe(self) -> bool:
        if time.monotonic() < self._next_probe:
            return False
        if not self._probe_lock.acquire(blocking=False):
            return False
        self._next_probe = time.monotonic() + self._probe_interval
        return True

    def _on_failure(self, exc: StoreUnavailable) -> None:
        STORE_FAILURES.labels("ratelimit", "fallback").inc()
        self._failures += 1
        if not self._degraded and self._failures >= FAILURES_BEFORE_FALLBACK:
            self._degraded = True
            self._next_probe = time.monotonic() + self._probe_interval
            RATELIMIT_FALLBACK_ACTIVE.set(1)
            log.warning(
                "rate limiter: Redis unavailable (%s); limiting in memory, limits divided by %d instance(s)",
                exc,
                self._instances,
            )

    def _on_recovery(self) -> None:
        self._degraded = False
        self._failures = 0
        RATELIMIT_FALLBACK_ACTIVE.set(0)
        log.warning("rate limiter: Redis is back; shared limits restored")

    def _count(self, decision: RateLimitDecision) -> None:
        if decision.allowed:
            self._allowed.inc()
        else:
            self._child("limited", decision.policy).inc()
        for name in decision.shadow_hits:
            self._child("shadow_limited", name).inc()
            if log.isEnabledFor(logging.DEBUG):
                log.debug("rate limit %s would have limited this request (shadow mode)", name)

    def _child(self, result: str, policy: str) -> Any:
        child = self._children.get((result, policy))
        if child is None:  # policy names are few (domain.ratelimit.POLICY_NAMES)
            child = self._children[(result, policy)] = RATELIMIT_DECISIONS.labels(result, policy)
        return child

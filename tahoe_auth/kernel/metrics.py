"""Prometheus metrics, defined once (the HTTP side port exposes the default registry).

Every store call site that fails open, closed or over to a fallback counts itself in
`tahoe_store_failures_total{site, action}` next to its log line.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Iterator
from typing import Protocol

from prometheus_client import REGISTRY, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

STORE_FAILURES = Counter(
    "tahoe_store_failures_total",
    "Failed calls to Redis or the database, by call site and what the caller did instead",
    ["site", "action"],
)

CHANGE_FEED_APPLIED = Counter(
    "tahoe_change_feed_applied_total",
    "Changes applied to this instance's caches, by the path that delivered them first",
    ["path"],
)
CHANGE_FEED_LAG = Gauge(
    "tahoe_change_feed_poll_seconds",
    "How long the last successful poll of the change log took",
)
CACHES_TRUSTED = Gauge(
    "tahoe_caches_trusted",
    "1 while this instance trusts its caches (pub/sub heard or change log polled within the window)",
)
RATELIMIT_DECISIONS = Counter(
    "tahoe_ratelimit_decisions_total",
    "Rate-limit decisions: allowed, limited, or shadow_limited (would have been limited)",
    ["result", "policy"],
)
RATELIMIT_FALLBACK_ACTIVE = Gauge(
    "tahoe_ratelimit_fallback_active",
    "1 while this instance rate-limits in memory because Redis is unreachable",
)
RATELIMIT_FALLBACK_DECISIONS = Counter(
    "tahoe_ratelimit_fallback_decisions_total",
    "Rate-limit decisions taken by the in-memory fallback",
)

USAGE_EVENTS = Counter(
    "tahoe_usage_events_total",
    "Usage events received, by outcome: recorded, or duplicate (idempotency key seen before)",
    ["outcome"],
)
USAGE_RECORDER_BUFFERED = Gauge(
    "tahoe_usage_recorder_buffered",
    "Usage aggregates from Check waiting in this instance's buffer for the next flush",
)
USAGE_ROLLED_UP = Counter(
    "tahoe_usage_rolled_up_events_total",
    "Raw usage events folded into minute rollups and period totals",
)
USAGE_THRESHOLD_EVENTS = Counter(
    "tahoe_usage_threshold_events_total",
    "usage.threshold_reached events written to the outbox",
    ["threshold"],
)

REDIS_ERRORS = Counter(
    "tahoe_redis_errors_total",
    "Redis calls that failed (connection, timeout, ...), by error type; call sites decide what to do",
    ["error"],
)
DATABASE_ERRORS = Counter(
    "tahoe_database_errors_total",
    "Database errors raised inside a unit of work, by driver error type",
    ["error"],
)

# -- the gRPC API (the interceptor chain) ------------------------------------------------------

LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

RPC_DURATION = Histogram(
    "tahoe_rpc_duration_seconds",
    "gRPC call latency in the server, by full method and status code",
    ["method", "code"],
    buckets=LATENCY_BUCKETS,
)

# -- ext_authz Check (recorded by the Check servicer) ----------------------------------------

CHECK_DECISIONS = Counter(
    "tahoe_check_decisions_total",
    "ext_authz Check decisions by outcome (allowed, denied, error) and reason (domain.decision)",
    ["outcome", "reason"],
)
CHECK_DURATION = Histogram(
    "tahoe_check_duration_seconds",
    "ext_authz Check latency in the server, by outcome",
    ["outcome"],
    buckets=LATENCY_BUCKETS,
)

# -- Check worker processes (TAHOE_AUTHZ_WORKERS; reported by the parent, check_workers.py) ----

# The workers serve no /metrics of their own: the parent's counts every process's Checks.
CHECK_WORKER_DECISIONS = Counter(
    "tahoe_check_worker_decisions_total",
    "HTTP ext_authz Check decisions answered by worker processes, by worker slot and outcome"
    " (the parent's own are in tahoe_check_decisions_total)",
    ["worker", "outcome"],
)
CHECK_WORKERS_SERVING = Gauge("tahoe_check_workers_serving", "Check worker processes serving now (not the parent)")
CHECK_WORKER_RESTARTS = Counter(
    "tahoe_check_worker_restarts_total", "Check worker processes that died and were started again", ["worker"]
)

# -- audit log ---------------------------------------------------------------------------------

AUDIT_ENTRIES = Counter(
    "tahoe_audit_entries_total",
    "Audit entries appended, by action and outcome",
    ["action", "outcome"],
)
AUDIT_DENIALS_AGGREGATED = Counter(
    "tahoe_audit_denials_aggregated_total",
    "ext_authz denials folded into aggregated audit entries (one entry per tenant, reason, route, minute)",
)

# -- webhooks ----------------------------------------------------------------------------------

WEBHOOK_ATTEMPTS = Counter(
    "tahoe_webhook_attempts_total",
    "Webhook delivery attempts by outcome: succeeded, retrying, dead, gone (410), refused (SSRF/URL)",
    ["outcome"],
)
WEBHOOK_ATTEMPT_DURATION = Histogram(
    "tahoe_webhook_attempt_duration_seconds",
    "Duration of one webhook POST (connect to response)",
    buckets=LATENCY_BUCKETS,
)
WEBHOOK_LAG = Histogram(
    "tahoe_webhook_delivery_lag_seconds",
    "From the event's commit to the receiver's 2xx (retries included)",
    buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 30.0, 300.0, 3600.0, 86400.0),
)
WEBHOOK_EVENTS_DISPATCHED = Counter(
    "tahoe_webhook_events_dispatched_total",
    "Outbox events fanned out to webhook endpoints (each may make zero or more deliveries)",
)
OUTBOX_DEPTH = Gauge(
    "tahoe_outbox_depth",
    "Outbox events not yet dispatched (as last seen by this process's webhook worker)",
)
WEBHOOK_DUE = Gauge(
    "tahoe_webhook_deliveries_due",
    "Webhook deliveries due now and not yet sent (as last seen by this process's webhook worker)",
)


# -- caches ------------------------------------------------------------------------------------


class Counted(Protocol):
    hits: int
    misses: int

    def __len__(self) -> int: ...


class CacheCollector(Collector):
    """Hit and miss counters of the in-process caches (hit ratio = hits / (hits + misses))."""

    def __init__(self) -> None:
        self._caches: dict[str, weakref.ref[Counted]] = {}
        self._lock = threading.Lock()

    def register(self, name: str, cache: Counted) -> None:
        with self._lock:
            self._caches[name] = weakref.ref(cache)

    def collect(self) -> Iterator[CounterMetricFamily | GaugeMetricFamily]:
        hits = CounterMetricFamily("tahoe_cache_hits", "Cache lookups that found a live entry", labels=["cache"])
        misses = CounterMetricFamily("tahoe_cache_misses", "Cache lookups that found nothing", labels=["cache"])
        size = GaugeMetricFamily("tahoe_cache_entries", "Entries held", labels=["cache"])
        with self._lock:
            live = {name: ref() for name, ref in self._caches.items()}
        for name, cache in sorted(live.items()):
            if cache is not None:
                hits.add_metric([name], cache.hits)
                misses.add_metric([name], cache.misses)
                size.add_metric([name], len(cache))
        yield hits
        yield misses
        yield size


CACHES = CacheCollector()
REGISTRY.register(CACHES)

MAIL_ATTEMPTS = Counter(
    "tahoe_mail_attempts_total",
    "Mail sending attempts by outcome: sent, retrying, dead",
    ["outcome"],
)

MAIL_DUE = Gauge(
    "tahoe_mail_messages_due",
    "Mail messages due now and not yet sent (as last seen by this process's mail worker)",
)

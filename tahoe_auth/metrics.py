"""Prometheus metrics, defined once (the HTTP side port exposes the default registry).

Every store call site that fails open, closed or over to a fallback counts itself in
`tahoe_store_failures_total{site, action}` next to its log line.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge

STORE_FAILURES = Counter(
    "tahoe_store_failures_total",
    "Failed calls to Redis or the database, by call site and what the caller did instead",
    ["site", "action"],
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

"""Usage metering and quotas: validation, time buckets, billing periods, quota maths,
threshold crossings and invoice export. Pure: no I/O.

Billing periods are calendar months in UTC, named `YYYY-MM`. A plan gives each metric
`included` units per period and a `hard` or `soft` limit: past a hard limit Check
denies (429), past a soft one it allows and the overage is billed.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from functools import lru_cache
from typing import Any

from tahoe_auth.domain.errors import InvalidArgument

API_REQUESTS = "api.requests"
THRESHOLD_EVENT = "usage.threshold_reached"
THRESHOLDS = (80, 100)

METRIC = re.compile(r"^[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*){0,7}\Z")
DIMENSION_KEY = re.compile(r"^[a-z][a-z0-9_.-]{0,62}\Z")
MAX_METRIC_LENGTH = 100
MAX_DIMENSIONS = 16
MAX_DIMENSION_VALUE = 256
MAX_IDEMPOTENCY_KEY = 200
MAX_QUANTITY = 1e15
MAX_FUTURE = dt.timedelta(minutes=5)
MAX_BACKFILL = dt.timedelta(days=35)
MAX_POINTS = 10_000


@dataclass(frozen=True)
class UsageEvent:
    metric: str
    quantity: float
    occurred_at: dt.datetime
    dimensions: Mapping[str, str] = field(default_factory=dict)
    idempotency_key: str | None = None


def check_metric(metric: str, field_name: str = "metric") -> str:
    if len(metric) > MAX_METRIC_LENGTH or not METRIC.match(metric):
        raise InvalidArgument(field_name, f"{metric!r} is not a metric name (lowercase words joined by dots)")
    return metric


def validate_event(event: UsageEvent, now: dt.datetime, field_name: str = "event") -> UsageEvent:
    check_metric(event.metric, f"{field_name}.metric")
    if not math.isfinite(event.quantity) or not 0 <= event.quantity <= MAX_QUANTITY:
        raise InvalidArgument(f"{field_name}.quantity", f"quantity must be a finite number 0..{MAX_QUANTITY:g}")
    if event.occurred_at > now + MAX_FUTURE:
        raise InvalidArgument(f"{field_name}.time", "time is in the future")
    if event.occurred_at < now - MAX_BACKFILL:
        raise InvalidArgument(f"{field_name}.time", f"time is more than {MAX_BACKFILL.days} days ago")
    if len(event.dimensions) > MAX_DIMENSIONS:
        raise InvalidArgument(f"{field_name}.dimensions", f"at most {MAX_DIMENSIONS} dimensions")
    for key, value in event.dimensions.items():
        if not DIMENSION_KEY.match(key) or len(value) > MAX_DIMENSION_VALUE:
            raise InvalidArgument(f"{field_name}.dimensions", f"dimension {key!r} has a bad name or a long value")
    if event.idempotency_key is not None and not 0 < len(event.idempotency_key) <= MAX_IDEMPOTENCY_KEY:
        raise InvalidArgument(f"{field_name}.idempotency_key", f"at most {MAX_IDEMPOTENCY_KEY} characters")
    return event


def dedupe(events: Iterable[UsageEvent]) -> list[UsageEvent]:
    """Within one batch a repeated idempotency key counts once (the first wins)."""
    seen: set[str] = set()
    unique = []
    for event in events:
        if event.idempotency_key is not None:
            if event.idempotency_key in seen:
                continue
            seen.add(event.idempotency_key)
        unique.append(event)
    return unique


# --- time buckets and periods ---------------------------------------------------------


class Granularity(StrEnum):
    MINUTE = "minute"
    HOUR = "hour"
    DAY = "day"
    MONTH = "month"


def truncate(moment: dt.datetime, granularity: Granularity) -> dt.datetime:
    moment = moment.astimezone(dt.UTC)
    if granularity is Granularity.MINUTE:
        return moment.replace(second=0, microsecond=0)
    if granularity is Granularity.HOUR:
        return moment.replace(minute=0, second=0, microsecond=0)
    if granularity is Granularity.DAY:
        return moment.replace(hour=0, minute=0, second=0, microsecond=0)
    return moment.replace(day=1, hour=0, minute=0, second=0, microsecond=0)


def next_bucket(start: dt.datetime, granularity: Granularity) -> dt.datetime:
    if granularity is Granularity.MINUTE:
        return start + dt.timedelta(minutes=1)
    if granularity is Granularity.HOUR:
        return start + dt.timedelta(hours=1)
    if granularity is Granularity.DAY:
        return start + dt.timedelta(days=1)
    return (start + dt.timedelta(days=32)).replace(day=1)


def buckets(start: dt.datetime, end: dt.datetime, granularity: Granularity) -> list[dt.datetime]:
    """Bucket starts covering [start, end); at most MAX_POINTS."""
    if end <= start:
        raise InvalidArgument("end_time", "end_time must be after start_time")
    result, current = [], truncate(start, granularity)
    while current < end:
        result.append(current)
        if len(result) > MAX_POINTS:
            raise InvalidArgument("granularity", f"more than {MAX_POINTS} points: use a coarser granularity")
        current = next_bucket(current, granularity)
    return result


def dense_series(
    points: Mapping[dt.datetime, float], start: dt.datetime, end: dt.datetime, granularity: Granularity
) -> list[tuple[dt.datetime, float]]:
    """One point per bucket (zeros included), in order."""
    return [(b, points.get(b, 0.0)) for b in buckets(start, end, granularity)]


@dataclass(frozen=True)
class Period:
    name: str
    start: dt.datetime
    end: dt.datetime


_PERIOD = re.compile(r"^(\d{4})-(\d{2})\Z")


def period_of(moment: dt.datetime) -> Period:
    start = truncate(moment, Granularity.MONTH)
    return Period(f"{start.year:04d}-{start.month:02d}", start, next_bucket(start, Granularity.MONTH))


def parse_period(name: str, now: dt.datetime, field_name: str = "period") -> Period:
    if not name:
        return period_of(now)
    match = _PERIOD.match(name)
    if not match or not 1 <= int(match.group(2)) <= 12 or int(match.group(1)) < 1970:
        raise InvalidArgument(field_name, f"{name!r} is not a billing period (YYYY-MM)")
    return period_of(dt.datetime(int(match.group(1)), int(match.group(2)), 1, tzinfo=dt.UTC))


# --- plans and quotas -------------------------------------------------------------------


@dataclass(frozen=True)
class QuotaRule:
    metric: str
    included: float
    hard: bool = False


Rules = Mapping[str, QuotaRule]


def parse_quotas(raw: Any, field_name: str = "quotas") -> dict[str, QuotaRule]:
    """`{"api.requests": {"included": 100000, "limit": "hard"}, ...}` -> rules.

    The schema of a plan's quotas and of a tenant's `settings["quotas"]` overrides
    (which replace the plan's rule for the metrics they name; `null` removes one)."""
    if raw is None:
        return {}
    if not isinstance(raw, Mapping):
        raise InvalidArgument(field_name, f"{field_name} must be an object of metric -> quota")
    rules = {}
    for metric, spec in raw.items():
        where = f"{field_name}.{metric}"
        check_metric(str(metric), where)
        if spec is None:
            continue
        if not isinstance(spec, Mapping) or set(spec) - {"included", "limit"}:
            raise InvalidArgument(where, f'{where} must be {{"included": <units>, "limit": "hard"|"soft"}}')
        included = spec.get("included")
        if isinstance(included, bool) or not isinstance(included, int | float) or not 0 <= included <= MAX_QUANTITY:
            raise InvalidArgument(f"{where}.included", f"{where}.included must be a number 0..{MAX_QUANTITY:g}")
        limit = spec.get("limit", "soft")
        if limit not in ("hard", "soft"):
            raise InvalidArgument(f"{where}.limit", f'{where}.limit must be "hard" or "soft"')
        rules[metric] = QuotaRule(metric, float(included), limit == "hard")
    return rules


def quotas_to_json(rules: Rules) -> dict[str, dict[str, Any]]:
    return {m: {"included": r.included, "limit": "hard" if r.hard else "soft"} for m, r in sorted(rules.items())}


def effective_rules(plan_rules: Rules, overrides: Mapping[str, Any]) -> dict[str, QuotaRule]:
    rules = dict(plan_rules)
    for metric, spec in overrides.items():
        if spec is None:
            rules.pop(metric, None)
    rules.update(parse_quotas({m: s for m, s in overrides.items() if s is not None}, "settings.quotas"))
    return rules


@dataclass(frozen=True)
class QuotaDecision:
    allowed: bool
    metric: str
    used: float = 0.0
    included: float = 0.0
    hard: bool = False
    has_quota: bool = False
    # Seconds until the billing period (and so the quota) resets.
    reset_after: float = 0.0

    @property
    def exceeded(self) -> bool:
        return self.has_quota and self.used >= self.included

    @property
    def message(self) -> str:
        if not self.has_quota:
            return f"no quota on {self.metric}"
        kind = "hard" if self.hard else "soft"
        used, included = number(self.used), number(self.included)
        return f"{self.metric}: {used} of {included} included units used this period ({kind} limit)"


@lru_cache(maxsize=32)
def _month_end(year: int, month: int) -> dt.datetime:
    """`period_of(moment).end` for any moment of this UTC month: built once, not per Check."""
    return period_of(dt.datetime(year, month, 1, tzinfo=dt.UTC)).end


def evaluate_quota(rule: QuotaRule | None, metric: str, used: float, now: dt.datetime) -> QuotaDecision:
    if rule is None:
        return QuotaDecision(True, metric, used)
    utc = now.astimezone(dt.UTC)
    reset_after = (_month_end(utc.year, utc.month) - now).total_seconds()
    exhausted = used >= rule.included
    return QuotaDecision(not (exhausted and rule.hard), metric, used, rule.included, rule.hard, True, reset_after)


def reached_thresholds(rule: QuotaRule | None, used: float) -> list[int]:
    """The thresholds (percent of included units) that `used` has reached."""
    if rule is None or rule.included <= 0:
        return []
    return [t for t in THRESHOLDS if used >= rule.included * t / 100]


def quota_headers(decision: QuotaDecision) -> list[tuple[str, str]]:
    """For Check's 429 on an exhausted hard quota (same header names as rate limits)."""
    if not decision.has_quota:
        return []
    remaining = max(0, math.floor(decision.included - decision.used))
    reset = max(1, math.ceil(decision.reset_after))
    result = [
        ("ratelimit-limit", str(math.floor(decision.included))),
        ("ratelimit-remaining", str(remaining)),
        ("ratelimit-reset", str(reset)),
    ]
    if not decision.allowed:
        result.append(("retry-after", str(reset)))
    return result


def quota_denial_body(decision: QuotaDecision) -> dict[str, str]:
    return {
        "error": "quota_exceeded",
        "message": f"the {decision.metric} quota of this billing period is exhausted "
        f"({number(decision.used)} of {number(decision.included)} units); "
        f"it resets in {math.ceil(decision.reset_after)} s "
        "or when the plan is upgraded",
    }


# --- invoice export -----------------------------------------------------------------------


@dataclass(frozen=True)
class InvoiceLine:
    metric: str
    quantity: float
    included: float | None
    limit: str  # "hard", "soft" or "" (no quota)

    @property
    def overage(self) -> float:
        return max(0.0, self.quantity - self.included) if self.included is not None else 0.0


@dataclass(frozen=True)
class TenantUsage:
    tenant_id: str
    tenant_slug: str
    plan: str
    lines: Sequence[InvoiceLine]


def invoice_lines(totals: Mapping[str, float], rules: Rules) -> list[InvoiceLine]:
    metrics = sorted(set(totals) | set(rules))
    return [
        InvoiceLine(
            m,
            totals.get(m, 0.0),
            rules[m].included if m in rules else None,
            ("hard" if rules[m].hard else "soft") if m in rules else "",
        )
        for m in metrics
    ]


def number(value: float) -> str:
    """Exact for whole numbers (no exponent), 15 significant digits otherwise."""
    return str(int(value)) if float(value).is_integer() and abs(value) < 1e18 else format(value, ".15g")


CSV_COLUMNS = ["period", "tenant_id", "tenant", "plan", "metric", "quantity", "included", "overage", "limit"]


def export_json(period: Period, tenants: Sequence[TenantUsage], generated_at: dt.datetime) -> str:
    document = {
        "period": period.name,
        "period_start": period.start.isoformat(),
        "period_end": period.end.isoformat(),
        "generated_at": generated_at.isoformat(timespec="seconds"),
        "tenants": [
            {
                "tenant_id": t.tenant_id,
                "tenant": t.tenant_slug,
                "plan": t.plan,
                "lines": [
                    {
                        "metric": line.metric,
                        "quantity": line.quantity,
                        "included": line.included,
                        "overage": line.overage,
                        "limit": line.limit,
                    }
                    for line in t.lines
                ],
            }
            for t in tenants
        ],
    }
    return json.dumps(document, indent=2) + "\n"


def export_csv(period: Period, tenants: Sequence[TenantUsage]) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for t in tenants:
        for line in t.lines:
            included = "" if line.included is None else number(line.included)
            writer.writerow(
                [
                    period.name,
                    t.tenant_id,
                    t.tenant_slug,
                    t.plan,
                    line.metric,
                    number(line.quantity),
                    included,
                    number(line.overage),
                    line.limit,
                ]
            )
    return out.getvalue()

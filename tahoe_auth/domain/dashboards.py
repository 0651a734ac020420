"""Pure logic behind the dashboards: which usage dimensions are rolled up, how a
credential is named in them, top-N with the rest folded into "other", login days,
and an endpoint's health from its recent deliveries."""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from tahoe_auth.domain.usage import Granularity, truncate

# The dimensions usage breakdowns can group by (others stay on the raw event only:
# each rolled-up dimension costs one row per value and hour).
DIMENSIONS = ("route", "subject_type", "credential")
MAX_VALUE_LENGTH = 200
OTHER = "(other)"
MAX_TOP = 50
DEFAULT_TOP = 10
MAX_BREAKDOWN_BUCKETS = 2000
MAX_LOGIN_DAYS = 366
DEFAULT_LOGIN_DAYS = 30

LOGIN_SUCCESS = "success"
LOGIN_FAILURE = "failure"
LOGIN_THROTTLED = "throttled"
LOGIN_OUTCOMES = (LOGIN_SUCCESS, LOGIN_FAILURE, LOGIN_THROTTLED)

Key = tuple[str, str, str, dt.datetime, str]  # tenant, metric, dimension, hour, value


def credential_label(credential: str, subject_type: str, subject: str) -> str:
    """API and platform keys by their public prefix ("api key tk_ab12"); anything else
    by its subject: a token's own id would make one value per token."""
    if credential.startswith(("api key ", "platform key ")):
        return credential[:MAX_VALUE_LENGTH]
    return f"{subject_type}:{subject}"[:MAX_VALUE_LENGTH]


def dimension_sums(rows: Iterable[tuple[str, str, dt.datetime, float, Mapping[str, Any] | None]]) -> dict[Key, float]:
    """(tenant, metric, occurred_at, quantity, dimensions) -> hourly sums per dimension value."""
    sums: dict[Key, float] = defaultdict(float)
    for tenant, metric, occurred_at, quantity, dimensions in rows:
        if not dimensions:
            continue
        hour = truncate(occurred_at, Granularity.HOUR)
        for name in DIMENSIONS:
            value = dimensions.get(name)
            if isinstance(value, str) and value:
                sums[(tenant, metric, name, hour, value[:MAX_VALUE_LENGTH])] += quantity
    return dict(sums)


@dataclass(frozen=True)
class BreakdownRow:
    value: str
    total: float
    points: dict[dt.datetime, float]


def breakdown_rows(
    ranked: Sequence[tuple[str, float]], series: Mapping[str | None, Mapping[dt.datetime, float]]
) -> tuple[list[BreakdownRow], BreakdownRow | None]:
    """The ranked values with their points, and the rest (`series[None]`) as one "other" row."""
    rows = [BreakdownRow(value, total, dict(series.get(value, {}))) for value, total in ranked]
    rest = series.get(None)
    if not rest:
        return rows, None
    return rows, BreakdownRow(OTHER, sum(rest.values()), dict(rest))


@dataclass
class LoginDay:
    day: dt.datetime
    successes: int = 0
    failures: int = 0
    throttled: int = 0
    active_users: int = 0


def login_days(
    start: dt.datetime,
    end: dt.datetime,
    counts: Iterable[tuple[dt.datetime, str, int]],
    active: Mapping[dt.datetime, int],
) -> list[LoginDay]:
    """One row per day of [start, end), zeros included: hourly (bucket, outcome, count)
    rows summed per day, and each day's distinct active users."""
    days: dict[dt.datetime, LoginDay] = {}
    day = truncate(start, Granularity.DAY)
    while day < end:
        days[day] = LoginDay(day, active_users=active.get(day, 0))
        day += dt.timedelta(days=1)
    for bucket, outcome, count in counts:
        row = days.get(truncate(bucket, Granularity.DAY))
        if row is None:
            continue
        if outcome == LOGIN_SUCCESS:
            row.successes += count
        elif outcome == LOGIN_FAILURE:
            row.failures += count
        elif outcome == LOGIN_THROTTLED:
            row.throttled += count
    return list(days.values())


HEALTHY = "healthy"
FAILING = "failing"
DISABLED = "disabled"
IDLE = "idle"


@dataclass(frozen=True)
class EndpointHealth:
    endpoint_id: str
    url: str
    status: str
    health: str
    recent_failures: int
    last_success_at: dt.datetime | None
    last_failure_at: dt.datetime | None


def endpoint_health(
    status: str, recent_failures: int, last_success: dt.datetime | None, last_failure: dt.datetime | None
) -> str:
    """Disabled endpoints are disabled; failing when the newest outcome was a failure."""
    if status != "active":
        return DISABLED
    if last_failure is not None and (last_success is None or last_failure > last_success):
        return FAILING
    if last_success is None:
        return IDLE
    return HEALTHY

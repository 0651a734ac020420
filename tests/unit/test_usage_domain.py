"""Usage maths: validation, buckets, periods, quotas, thresholds, export formats."""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
import math

import pytest

from tahoe_auth.domain import usage as u
from tahoe_auth.domain.errors import InvalidArgument

NOW = dt.datetime(2030, 3, 15, 12, 30, 45, tzinfo=dt.UTC)


def event(**kw: object) -> u.UsageEvent:
    fields: dict[str, object] = {"metric": "api.requests", "quantity": 1.0, "occurred_at": NOW}
    fields.update(kw)
    return u.UsageEvent(**fields)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("bad", "field"),
    [
        (event(metric="API.requests"), "e.metric"),
        (event(metric="api..requests"), "e.metric"),
        (event(quantity=float("nan")), "e.quantity"),
        (event(quantity=-0.5), "e.quantity"),
        (event(occurred_at=NOW + dt.timedelta(minutes=6)), "e.time"),
        (event(occurred_at=NOW - dt.timedelta(days=36)), "e.time"),
        (event(dimensions={f"k{i}": "v" for i in range(17)}), "e.dimensions"),
        (event(dimensions={"Bad Key": "v"}), "e.dimensions"),
        (event(idempotency_key="x" * 201), "e.idempotency_key"),
    ],
)
def test_invalid_events_name_the_field(bad: u.UsageEvent, field: str) -> None:
    with pytest.raises(InvalidArgument) as info:
        u.validate_event(bad, NOW, "e")
    assert info.value.field == field


def test_valid_events_pass_and_batches_dedupe_by_key() -> None:
    ok = event(metric="transcription.audio_seconds", quantity=0, dimensions={"model": "large-v3"})
    assert u.validate_event(ok, NOW) is ok
    batch = [event(idempotency_key="a"), event(idempotency_key="a", quantity=9), event(), event()]
    assert [e.quantity for e in u.dedupe(batch)] == [1.0, 1.0, 1.0]


def test_truncation_and_buckets_cross_month_ends() -> None:
    assert u.truncate(NOW, u.Granularity.MINUTE) == NOW.replace(second=0)
    assert u.truncate(NOW, u.Granularity.MONTH) == dt.datetime(2030, 3, 1, tzinfo=dt.UTC)
    months = u.buckets(
        dt.datetime(2029, 11, 20, tzinfo=dt.UTC), dt.datetime(2030, 2, 2, tzinfo=dt.UTC), u.Granularity.MONTH
    )
    assert [b.strftime("%Y-%m") for b in months] == ["2029-11", "2029-12", "2030-01", "2030-02"]
    days = u.dense_series(
        {NOW.replace(hour=0, minute=0, second=0): 4.0}, NOW, NOW + dt.timedelta(days=2), u.Granularity.DAY
    )
    assert [q for _, q in days] == [4.0, 0.0, 0.0]
    with pytest.raises(InvalidArgument):
        u.buckets(NOW, NOW + dt.timedelta(days=30), u.Granularity.MINUTE)  # 43,200 points
    with pytest.raises(InvalidArgument):
        u.buckets(NOW, NOW, u.Granularity.HOUR)


def test_periods() -> None:
    period = u.parse_period("", NOW)
    assert (period.name, period.start, period.end) == (
        "2030-03",
        dt.datetime(2030, 3, 1, tzinfo=dt.UTC),
        dt.datetime(2030, 4, 1, tzinfo=dt.UTC),
    )
    assert u.parse_period("2029-12", NOW).end == dt.datetime(2030, 1, 1, tzinfo=dt.UTC)
    for bad in ("2030-13", "2030-3", "march"):
        with pytest.raises(InvalidArgument):
            u.parse_period(bad, NOW)


def test_quota_rules_and_overrides() -> None:
    plan = u.parse_quotas({"api.requests": {"included": 1000, "limit": "hard"}, "audio.seconds": {"included": 60}})
    assert plan["audio.seconds"] == u.QuotaRule("audio.seconds", 60.0, hard=False)
    rules = u.effective_rules(plan, {"api.requests": {"included": 5000, "limit": "soft"}, "audio.seconds": None})
    assert rules == {"api.requests": u.QuotaRule("api.requests", 5000.0, hard=False)}
    for bad in ({"api.requests": {"included": -1}}, {"api.requests": {"limit": "firm", "included": 1}}, [1]):
        with pytest.raises(InvalidArgument):
            u.parse_quotas(bad)
    assert u.parse_quotas(u.quotas_to_json(plan)) == plan


def test_quota_decisions_and_thresholds() -> None:
    hard = u.QuotaRule("api.requests", 100.0, hard=True)
    assert u.evaluate_quota(hard, "api.requests", 99, NOW).allowed
    denied = u.evaluate_quota(hard, "api.requests", 100, NOW)
    assert not denied.allowed and denied.exceeded
    assert denied.reset_after == (dt.datetime(2030, 4, 1, tzinfo=dt.UTC) - NOW).total_seconds()
    assert dict(u.quota_headers(denied))["retry-after"] == str(math.ceil(denied.reset_after))
    assert u.evaluate_quota(u.QuotaRule("a", 1.0), "a", 50, NOW).allowed  # soft: allowed, billed
    assert u.evaluate_quota(None, "a", 1e9, NOW).allowed
    assert u.quota_headers(u.evaluate_quota(None, "a", 1, NOW)) == []
    assert u.reached_thresholds(hard, 79.9) == []
    assert u.reached_thresholds(hard, 80) == [80]
    assert u.reached_thresholds(hard, 250) == [80, 100]
    assert u.reached_thresholds(u.QuotaRule("a", 0.0), 5) == []


def test_exports_are_exact_and_complete() -> None:
    period = u.parse_period("2030-03", NOW)
    rules = {"api.requests": u.QuotaRule("api.requests", 1_000_000.0, hard=True)}
    lines = u.invoice_lines({"api.requests": 1_234_567.0, "audio.seconds": 0.1 + 0.2}, rules)
    tenants = [u.TenantUsage("t-1", "acme", "pro", lines)]
    rows = list(csv.DictReader(io.StringIO(u.export_csv(period, tenants))))
    assert [(r["metric"], r["quantity"], r["included"], r["overage"], r["limit"]) for r in rows] == [
        ("api.requests", "1234567", "1000000", "234567", "hard"),
        ("audio.seconds", "0.3", "", "0", ""),
    ]
    document = json.loads(u.export_json(period, tenants, NOW))
    assert document["period"] == "2030-03" and document["tenants"][0]["lines"][0]["overage"] == 234567.0


def test_a_quota_resets_when_its_billing_period_ends_whatever_the_moment() -> None:
    """evaluate_quota remembers month ends: the same answer as period_of, at month and
    year boundaries and in other time zones."""
    import datetime as dt

    from tahoe_auth.domain.usage import QuotaRule, evaluate_quota, period_of

    rule = QuotaRule("api.requests", 10.0)
    plus_two = dt.timezone(dt.timedelta(hours=2))
    moments = [
        dt.datetime(2030, 12, 31, 23, 59, 59, 999_999, tzinfo=dt.UTC),
        dt.datetime(2031, 1, 1, tzinfo=dt.UTC),
        dt.datetime(2032, 2, 29, 12, tzinfo=dt.UTC),
        dt.datetime(2031, 1, 1, 1, 30, tzinfo=plus_two),  # still December in UTC
        dt.datetime(2031, 3, 15, 8, tzinfo=plus_two),
    ]
    for now in moments:
        assert evaluate_quota(rule, "api.requests", 3.0, now).reset_after == (period_of(now).end - now).total_seconds()

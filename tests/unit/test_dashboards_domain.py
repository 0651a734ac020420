"""The dashboards' pure logic: dimension sums, breakdown rows, login days, endpoint health."""

from __future__ import annotations

import datetime as dt

from tahoe_auth.domain import dashboards as d

T0 = dt.datetime(2026, 12, 1, 10, 15, tzinfo=dt.UTC)
HOUR = dt.datetime(2026, 12, 1, 10, tzinfo=dt.UTC)
DAY = dt.datetime(2026, 12, 1, tzinfo=dt.UTC)


def test_credential_labels_name_keys_by_prefix_and_others_by_subject() -> None:
    assert d.credential_label("api key tk_ab12", "api_key", "u1") == "api key tk_ab12"
    assert d.credential_label("platform key pk_1", "platform", "p") == "platform key pk_1"
    # A token's id would be one value per token: the subject instead.
    assert d.credential_label("access token jti=abc", "user", "u1") == "user:u1"


def test_dimension_sums_are_hourly_per_known_dimension() -> None:
    rows = [
        ("t", "api.requests", T0, 2.0, {"route": "/a", "subject_type": "user", "model": "x"}),
        ("t", "api.requests", T0 + dt.timedelta(minutes=60), 3.0, {"route": "/a"}),
        ("t", "api.requests", T0, 1.0, None),
        ("t", "api.requests", T0, 1.0, {"route": ""}),
    ]
    sums = d.dimension_sums(rows)
    assert sums == {
        ("t", "api.requests", "route", HOUR, "/a"): 2.0,
        ("t", "api.requests", "subject_type", HOUR, "user"): 2.0,
        ("t", "api.requests", "route", HOUR + dt.timedelta(hours=1), "/a"): 3.0,
    }


def test_breakdown_rows_keep_the_ranking_and_fold_the_rest_into_other() -> None:
    series = {"b": {HOUR: 5.0}, "c": {HOUR: 2.0, DAY: 1.0}, None: {HOUR: 1.0, DAY: 3.0}}
    rows, other = d.breakdown_rows([("b", 5.0), ("c", 3.0)], series)
    assert [(r.value, r.total, r.points) for r in rows] == [("b", 5.0, {HOUR: 5.0}), ("c", 3.0, {HOUR: 2.0, DAY: 1.0})]
    assert other is not None and (other.value, other.total, other.points) == (d.OTHER, 4.0, {HOUR: 1.0, DAY: 3.0})
    assert d.breakdown_rows([("b", 5.0)], {"b": {HOUR: 5.0}})[1] is None


def test_login_days_cover_the_range_with_zeros() -> None:
    counts = [
        (HOUR, d.LOGIN_SUCCESS, 2),
        (HOUR + dt.timedelta(hours=3), d.LOGIN_SUCCESS, 1),
        (HOUR, d.LOGIN_FAILURE, 4),
        (HOUR, d.LOGIN_THROTTLED, 7),
        (DAY - dt.timedelta(days=5), d.LOGIN_SUCCESS, 9),  # outside the range
    ]
    days = d.login_days(DAY - dt.timedelta(days=1), DAY + dt.timedelta(days=1), counts, {DAY: 2})
    assert [(x.day, x.successes, x.failures, x.throttled, x.active_users) for x in days] == [
        (DAY - dt.timedelta(days=1), 0, 0, 0, 0),
        (DAY, 3, 4, 7, 2),
    ]


def test_endpoint_health() -> None:
    earlier, later = HOUR, HOUR + dt.timedelta(minutes=5)
    assert d.endpoint_health("disabled", 0, later, None) == d.DISABLED
    assert d.endpoint_health("active", 0, None, None) == d.IDLE
    assert d.endpoint_health("active", 1, earlier, later) == d.FAILING
    assert d.endpoint_health("active", 1, later, earlier) == d.HEALTHY
    assert d.endpoint_health("active", 1, None, later) == d.FAILING

"""WatchUsage fan-out: a first snapshot at once, then changes only; streams are capped."""

from __future__ import annotations

import pytest

from tahoe_auth.domain.errors import RateLimited
from tahoe_auth.kernel.clock import FakeClock
from tahoe_auth.services.usage_watch import UsageWatch


class FakeTotals:
    def __init__(self) -> None:
        self.values: dict[str, dict[str, float]] = {}

    def current(self, tenant_ids):  # type: ignore[no-untyped-def]
        return {t: dict(self.values.get(t, {})) for t in tenant_ids}


def test_first_snapshot_then_changes_only() -> None:
    totals = FakeTotals()
    totals.values["t1"] = {"api.requests": 1.0}
    watch = UsageWatch(totals, FakeClock(), max_streams=2, interval=3600)  # type: ignore[arg-type]
    subscription = watch.subscribe("t1")
    first = subscription.next(timeout=0.1)
    assert first is not None and first.totals == {"api.requests": 1.0} and first.period == "2030-01"
    watch.poll_once()
    assert subscription.next(timeout=0.05) is None  # unchanged: nothing sent
    totals.values["t1"] = {"api.requests": 2.0}
    watch.poll_once()
    update = subscription.next(timeout=0.1)
    assert update is not None and update.totals == {"api.requests": 2.0}
    subscription.close()
    assert subscription.next(timeout=0.01) is None
    watch.stop()


def test_streams_per_instance_are_capped() -> None:
    watch = UsageWatch(FakeTotals(), FakeClock(), max_streams=2, interval=3600)  # type: ignore[arg-type]
    a, b = watch.subscribe("t1"), watch.subscribe("t2")
    with pytest.raises(RateLimited) as info:
        watch.subscribe("t3")
    assert info.value.quota == "watch_usage_streams"
    a.close()
    watch.subscribe("t3")
    b.close()
    watch.stop()

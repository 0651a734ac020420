"""The Check usage recorder: aggregates in memory, flushes in batches, retries with the
same idempotency keys, and never blocks or raises on the request path."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from tahoe_auth.domain.errors import NotFound, Unavailable
from tahoe_auth.domain.usage import UsageEvent
from tahoe_auth.services.usage_ledger import AppendResult
from tahoe_auth.services.usage_recorder import UsageRecorder


class FakeLedger:
    def __init__(self) -> None:
        self.calls: list[dict[str, list[UsageEvent]]] = []
        self.fail_with: Exception | None = None
        self.missing: set[str] = set()

    def append(self, batches: Mapping[str, Sequence[UsageEvent]]) -> AppendResult:
        if self.fail_with is not None:
            raise self.fail_with
        if self.missing & set(batches):
            raise NotFound("tenant")
        self.calls.append({t: list(e) for t, e in batches.items()})
        return AppendResult(sum(len(e) for e in batches.values()), 0)

    def totals(self) -> dict[tuple[str, str], float]:
        result: dict[tuple[str, str], float] = {}
        keys: set[str] = set()
        for call in self.calls:
            for tenant, events in call.items():
                for e in events:
                    assert e.idempotency_key not in keys
                    keys.add(e.idempotency_key or "")
                    result[(tenant, e.metric)] = result.get((tenant, e.metric), 0) + e.quantity
        return result


class Clock:
    now = 1_900_000_000.0

    def __call__(self) -> float:
        return self.now


def recorder(ledger: FakeLedger, **kw: object) -> UsageRecorder:
    rec = UsageRecorder(ledger, clock=Clock(), **kw)  # type: ignore[arg-type]
    rec._thread = object()  # type: ignore[assignment]  # no background thread in unit tests
    return rec


def test_aggregates_per_tenant_metric_minute_and_dimensions() -> None:
    ledger = FakeLedger()
    rec = recorder(ledger)
    for _ in range(1000):
        rec.record_request("t1", "/a", "user")
    for _ in range(10):
        rec.record_request("t1", "/b", "api_key")
    rec.record("t2", "audio.seconds", 2.5)
    assert rec.flush() == 3
    events = ledger.calls[0]
    assert sorted(e.quantity for e in events["t1"]) == [10.0, 1000.0]
    assert events["t1"][0].dimensions == {"route": "/a", "subject_type": "user"}
    assert events["t1"][0].occurred_at.timestamp() % 60 == 0
    assert rec.flush() == 0  # nothing pending


def test_a_failed_flush_is_retried_with_the_same_keys() -> None:
    ledger = FakeLedger()
    rec = recorder(ledger)
    rec.record("t1", "api.requests", 5)
    ledger.fail_with = Unavailable("database is unavailable")
    assert rec.flush() == 0  # no exception
    first_keys = [e.idempotency_key for e in rec._backlog["t1"]]
    rec.record("t1", "api.requests", 2)
    ledger.fail_with = None
    assert rec.flush() == 2
    sent = ledger.calls[0]["t1"]
    assert sent[0].idempotency_key == first_keys[0] and sent[0].quantity == 5
    assert ledger.totals() == {("t1", "api.requests"): 7.0}


def test_backlog_is_bounded() -> None:
    ledger = FakeLedger()
    rec = recorder(ledger, max_backlog=3)
    ledger.fail_with = Unavailable("down")
    for tenant in ("a", "b", "c", "d"):
        rec.record(tenant, "api.requests")
        rec.flush()
    assert sum(len(e) for e in rec._backlog.values()) <= 3


def test_a_deleted_tenant_does_not_block_the_others() -> None:
    ledger = FakeLedger()
    rec = recorder(ledger)
    ledger.missing = {"gone"}
    rec.record("gone", "api.requests")
    rec.record("here", "api.requests", 3)
    assert rec.flush() == 1
    assert ledger.totals() == {("here", "api.requests"): 3.0}
    assert not rec._backlog

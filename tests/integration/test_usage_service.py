"""UsageService through a real server on PostgreSQL and Redis."""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
import random
import threading
import time
from collections.abc import Iterator

import grpc
import pytest
from google.protobuf import timestamp_pb2
from sqlalchemy import func, select

from tahoe_auth.store import models as m
from tahoe_auth.store.db import SYSTEM
from tahoe_auth.v1 import usage_pb2, usage_pb2_grpc
from tests import support
from tests.support import RunningServer, bearer, error_reason


def ts(moment: dt.datetime) -> timestamp_pb2.Timestamp:
    stamp = timestamp_pb2.Timestamp()
    stamp.FromDatetime(moment)
    return stamp


class Caller:
    def __init__(self, server: RunningServer, token: str) -> None:
        self.stub = usage_pb2_grpc.UsageServiceStub(server.channel)
        self.metadata = bearer(token)

    def __getattr__(self, name: str):  # type: ignore[no-untyped-def]
        method = getattr(self.stub, name)
        return lambda request, **kw: method(request, metadata=self.metadata, **kw)


@pytest.fixture
def owner(server: RunningServer) -> Iterator[tuple[support.Tenant, Caller]]:
    tenant = server.create_tenant()
    yield tenant, Caller(server, server.login(tenant).tokens.access_token)


def event(metric: str = "api.requests", quantity: float = 1, key: str = "", **kw: object) -> usage_pb2.UsageEvent:
    return usage_pb2.UsageEvent(metric=metric, quantity=quantity, idempotency_key=key, **kw)  # type: ignore[arg-type]


def raw_and_rolled(server: RunningServer, tenant_id: str) -> tuple[float, float, float]:
    with server.app.db.unit_of_work(SYSTEM) as uow:
        s = uow.session
        raw = s.scalar(select(func.sum(m.UsageEvent.quantity)).where(m.UsageEvent.tenant_id == tenant_id))
        rolled = s.scalar(select(func.sum(m.UsageRollup.quantity)).where(m.UsageRollup.tenant_id == tenant_id))
        totals = s.scalar(
            select(func.sum(m.UsagePeriodTotal.quantity)).where(m.UsagePeriodTotal.tenant_id == tenant_id)
        )
    return float(raw or 0), float(rolled or 0), float(totals or 0)


def test_a_repeated_idempotency_key_is_counted_once(server: RunningServer, owner: tuple) -> None:
    tenant, caller = owner
    assert not caller.RecordUsage(usage_pb2.RecordUsageRequest(event=event(quantity=5, key="k1"))).duplicate
    assert caller.RecordUsage(usage_pb2.RecordUsageRequest(event=event(quantity=5, key="k1"))).duplicate
    batch = caller.RecordUsageBatch(
        usage_pb2.RecordUsageBatchRequest(
            events=[event(quantity=1, key="k1"), event(quantity=2, key="k2"), event(quantity=2, key="k2"), event()]
        )
    )
    assert (batch.recorded_count, batch.duplicate_count) == (2, 2)
    assert raw_and_rolled(server, tenant.id)[0] == 5 + 2 + 1
    # Concurrent retries of one event: still once.
    request = usage_pb2.RecordUsageRequest(event=event(quantity=100, key="race"))
    with_threads = [threading.Thread(target=caller.RecordUsage, args=(request,)) for _ in range(8)]
    for t in with_threads:
        t.start()
    for t in with_threads:
        t.join()
    assert raw_and_rolled(server, tenant.id)[0] == 108


def test_rollups_equal_the_raw_sum(server: RunningServer, owner: tuple) -> None:
    tenant, caller = owner
    now = dt.datetime.now(dt.UTC)
    rng = random.Random(5)
    events = [
        event(
            rng.choice(["api.requests", "audio.seconds"]),
            rng.choice([1, 2.5, 0.25, 10]),
            time=ts(now - dt.timedelta(seconds=rng.randrange(0, 3 * 86400))),
        )
        for _ in range(3000)
    ]
    for start in range(0, len(events), 1000):
        caller.RecordUsageBatch(usage_pb2.RecordUsageBatchRequest(events=events[start : start + 1000]))

    def total(metric: str) -> float:
        response = caller.GetUsage(
            usage_pb2.GetUsageRequest(
                metric=metric,
                start_time=ts(now - dt.timedelta(days=4)),
                end_time=ts(now + dt.timedelta(minutes=1)),
                granularity=usage_pb2.GRANULARITY_DAY,
            )
        )
        return response.total

    before = {metric: total(metric) for metric in ("api.requests", "audio.seconds")}
    server.app.usage_pipeline.run_once()
    raw, rolled, totals = raw_and_rolled(server, tenant.id)
    assert raw == rolled == totals == sum(e.quantity for e in events)
    after = {metric: total(metric) for metric in ("api.requests", "audio.seconds")}
    assert before == after
    assert sum(after.values()) == raw
    server.app.usage_pipeline.run_once()  # idempotent: nothing left to roll up
    assert raw_and_rolled(server, tenant.id) == (raw, rolled, totals)


def test_usage_series_by_granularity(server: RunningServer, owner: tuple) -> None:
    _, caller = owner
    base = dt.datetime.now(dt.UTC).replace(minute=0, second=0, microsecond=0) - dt.timedelta(hours=3)
    offsets = [(0, 1), (5, 2), (61, 3), (125, 4)]  # minutes after base, quantity
    caller.RecordUsageBatch(
        usage_pb2.RecordUsageBatchRequest(
            events=[event("jobs.run", q, time=ts(base + dt.timedelta(minutes=o))) for o, q in offsets]
        )
    )
    server.app.usage_pipeline.run_once()
    caller.RecordUsage(usage_pb2.RecordUsageRequest(event=event("jobs.run", 10, time=ts(base))))  # not rolled up
    hourly = caller.GetUsage(
        usage_pb2.GetUsageRequest(
            metric="jobs.run",
            start_time=ts(base),
            end_time=ts(base + dt.timedelta(hours=3)),
            granularity=usage_pb2.GRANULARITY_HOUR,
        )
    )
    assert [(p.start_time.ToDatetime(dt.UTC), p.quantity) for p in hourly.points] == [
        (base, 13.0),
        (base + dt.timedelta(hours=1), 3.0),
        (base + dt.timedelta(hours=2), 4.0),
    ]
    minutes = caller.GetUsage(
        usage_pb2.GetUsageRequest(
            metric="jobs.run",
            start_time=ts(base),
            end_time=ts(base + dt.timedelta(minutes=10)),
            granularity=usage_pb2.GRANULARITY_MINUTE,
        )
    )
    assert len(minutes.points) == 10 and minutes.points[5].quantity == 2 and minutes.total == 13


def test_watch_usage_delivers_an_update_within_a_second(pg_env: dict[str, str]) -> None:
    """Recorded on one instance, watched on another."""
    with support.running_server(pg_env) as a, support.running_server(pg_env) as b:
        tenant = a.create_tenant()
        token = a.login(tenant).tokens.access_token
        Caller(a, token).RecordUsage(usage_pb2.RecordUsageRequest(event=event(quantity=3)))
        stream = usage_pb2_grpc.UsageServiceStub(b.channel).WatchUsage(
            usage_pb2.WatchUsageRequest(), metadata=bearer(token), timeout=30
        )
        first = next(stream)
        assert first.tenant_id == tenant.id and first.totals["api.requests"] == 3
        received: list[tuple[float, usage_pb2.WatchUsageResponse]] = []

        def read() -> None:
            for message in stream:
                received.append((time.monotonic(), message))
                return

        reader = threading.Thread(target=read)
        reader.start()
        time.sleep(0.3)
        recorded_at = time.monotonic()
        Caller(a, token).RecordUsage(usage_pb2.RecordUsageRequest(event=event("audio.seconds", 1.5)))
        reader.join(timeout=5)
        stream.cancel()
        assert received, "no update arrived"
        arrived, message = received[0]
        assert arrived - recorded_at < 1.0
        assert dict(message.totals) == {"api.requests": 3.0, "audio.seconds": 1.5}


def test_summary_export_and_plans(server: RunningServer, owner: tuple) -> None:
    tenant, caller = owner
    platform = Caller(server, server.platform_key)
    platform.UpsertPlan(
        usage_pb2.UpsertPlanRequest(
            plan=usage_pb2.Plan(
                name="pro",
                display_name="Pro",
                quotas=[
                    usage_pb2.MetricQuota(metric="api.requests", included=100, limit=usage_pb2.LIMIT_KIND_HARD),
                    usage_pb2.MetricQuota(metric="audio.seconds", included=60, limit=usage_pb2.LIMIT_KIND_SOFT),
                ],
            )
        )
    )
    platform.AssignPlan(usage_pb2.AssignPlanRequest(tenant_id=tenant.id, plan="pro"))
    caller.RecordUsageBatch(
        usage_pb2.RecordUsageBatchRequest(events=[event(quantity=40), event("audio.seconds", 90.5), event("gpu.ms", 7)])
    )
    summary = caller.GetUsageSummary(usage_pb2.GetUsageSummaryRequest())
    lines = {line.metric: line for line in summary.metrics}
    assert summary.plan == "pro" and summary.period == dt.datetime.now(dt.UTC).strftime("%Y-%m")
    assert (lines["audio.seconds"].quantity, lines["audio.seconds"].overage) == (90.5, 30.5)
    assert lines["api.requests"].limit == usage_pb2.LIMIT_KIND_HARD and lines["api.requests"].included == 100
    assert not lines["gpu.ms"].has_quota

    exported = caller.ExportUsage(usage_pb2.ExportUsageRequest(format=usage_pb2.EXPORT_FORMAT_CSV))
    assert exported.content_type == "text/csv"
    rows = list(csv.DictReader(io.StringIO(exported.content.decode())))
    assert {(r["metric"], r["quantity"], r["overage"], r["limit"]) for r in rows} == {
        ("api.requests", "40", "0", "hard"),
        ("audio.seconds", "90.5", "30.5", "soft"),
        ("gpu.ms", "7", "0", ""),
    }
    everyone = platform.ExportUsage(usage_pb2.ExportUsageRequest(format=usage_pb2.EXPORT_FORMAT_JSON))
    document = json.loads(everyone.content)
    assert tenant.id in {t["tenant_id"] for t in document["tenants"]}

    # Only platform administrators manage plans; tenants cannot export others.
    with pytest.raises(grpc.RpcError) as info:
        caller.AssignPlan(usage_pb2.AssignPlanRequest(tenant_id=tenant.id, plan="pro"))
    assert error_reason(info.value) == "PERMISSION_DENIED"
    other = server.create_tenant()
    with pytest.raises(grpc.RpcError) as info:
        caller.ExportUsage(usage_pb2.ExportUsageRequest(tenant_id=other.id))
    assert info.value.code() == grpc.StatusCode.NOT_FOUND
    assert [p.name for p in caller.ListPlans(usage_pb2.ListPlansRequest()).plans] == ["pro"]


def test_hard_quota_denies_and_thresholds_are_announced_once(server: RunningServer, owner: tuple) -> None:
    tenant, caller = owner
    platform = Caller(server, server.platform_key)
    quota = usage_pb2.MetricQuota(metric="api.requests", included=10, limit=usage_pb2.LIMIT_KIND_HARD)
    platform.UpsertPlan(usage_pb2.UpsertPlanRequest(plan=usage_pb2.Plan(name="tiny", quotas=[quota])))
    platform.AssignPlan(usage_pb2.AssignPlanRequest(tenant_id=tenant.id, plan="tiny"))
    quotas = server.app.quotas
    assert quotas.check(tenant.id).allowed  # not loaded yet: allowed while it loads
    recorder = server.app.usage_recorder
    for _ in range(8):
        recorder.record_request(tenant.id, "/v1/transcribe", "user")
    recorder.flush()
    server.app.usage_pipeline.run_once()
    with server.app.db.unit_of_work(tenant.id) as uow:
        # AssignPlan also announced tenant.updated: only the thresholds here.
        events = list(uow.outbox.of_type("usage.threshold_reached"))
    assert [(e.type, e.payload["threshold"], e.payload["used"]) for e in events] == [
        ("usage.threshold_reached", 80, 8.0)
    ]
    for _ in range(4):
        recorder.record_request(tenant.id, "/v1/transcribe", "api_key")
    recorder.flush()
    deadline = time.monotonic() + 5
    while (decision := quotas.check(tenant.id)).allowed:
        assert time.monotonic() < deadline, "the quota never denied"
        time.sleep(0.05)
    assert decision.hard and decision.used == 12 and decision.included == 10
    from tahoe_auth.domain.usage import quota_denial_body, quota_headers

    headers = dict(quota_headers(decision))
    assert headers["ratelimit-limit"] == "10" and headers["ratelimit-remaining"] == "0"
    assert int(headers["retry-after"]) == int(headers["ratelimit-reset"]) > 0
    assert quota_denial_body(decision)["error"] == "quota_exceeded"
    server.app.usage_pipeline.run_once()
    server.app.usage_pipeline.run_once()
    with server.app.db.unit_of_work(tenant.id) as uow:
        thresholds = sorted(e.payload["threshold"] for e in uow.outbox.of_type("usage.threshold_reached"))
        dims = {tuple(sorted(e.dimensions.items())) for e in uow.session.scalars(select(m.UsageEvent))}
    assert thresholds == [80, 100]
    assert dims == {(("route", "/v1/transcribe"), ("subject_type", s)) for s in ("user", "api_key")}
    status = caller.GetQuotaStatus(usage_pb2.GetQuotaStatusRequest())
    assert [(q.metric, q.used, q.exhausted) for q in status.quotas] == [("api.requests", 12.0, True)]


def test_permissions_and_validation(server: RunningServer, owner: tuple) -> None:
    tenant, caller = owner
    other = server.create_tenant()
    with pytest.raises(grpc.RpcError) as info:
        caller.RecordUsage(usage_pb2.RecordUsageRequest(tenant_id=other.id, event=event()))
    assert info.value.code() == grpc.StatusCode.NOT_FOUND
    for bad, field in [
        (event("Not A Metric"), "events[0].metric"),
        (event(quantity=-1), "events[0].quantity"),
        (event(time=ts(dt.datetime.now(dt.UTC) + dt.timedelta(hours=1))), "events[0].time"),
    ]:
        with pytest.raises(grpc.RpcError) as info:
            caller.RecordUsage(usage_pb2.RecordUsageRequest(event=bad))
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT, field
    with pytest.raises(grpc.RpcError) as info:
        usage_pb2_grpc.UsageServiceStub(server.channel).GetUsageSummary(usage_pb2.GetUsageSummaryRequest())
    assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED
    # Platform administrators name the tenant.
    platform = Caller(server, server.platform_key)
    assert platform.RecordUsage(usage_pb2.RecordUsageRequest(tenant_id=tenant.id, event=event())) is not None
    with pytest.raises(grpc.RpcError) as info:
        platform.RecordUsage(usage_pb2.RecordUsageRequest(event=event()))
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT

"""UsageService: validate, convert, call one use case, convert back."""

from __future__ import annotations

import time
from collections.abc import Iterator

import grpc

from tahoe_auth.api.convert import from_timestamp, limit_kind, timestamp
from tahoe_auth.api.interceptors import current_call
from tahoe_auth.domain import usage
from tahoe_auth.domain.errors import InvalidArgument
from tahoe_auth.domain.usage import Granularity, QuotaRule
from tahoe_auth.kernel.clock import Clock
from tahoe_auth.services.usage import UsageService
from tahoe_auth.services.usage_watch import Snapshot
from tahoe_auth.v1 import usage_pb2, usage_pb2_grpc

GRANULARITIES = {
    usage_pb2.GRANULARITY_MINUTE: Granularity.MINUTE,
    usage_pb2.GRANULARITY_HOUR: Granularity.HOUR,
    usage_pb2.GRANULARITY_DAY: Granularity.DAY,
    usage_pb2.GRANULARITY_MONTH: Granularity.MONTH,
    usage_pb2.GRANULARITY_UNSPECIFIED: Granularity.HOUR,
}
FORMATS = {
    usage_pb2.EXPORT_FORMAT_UNSPECIFIED: "json",
    usage_pb2.EXPORT_FORMAT_JSON: "json",
    usage_pb2.EXPORT_FORMAT_CSV: "csv",
}
HEARTBEAT_SECONDS = 15.0
MAX_STREAM_SECONDS = 600.0


def _limit(hard: bool) -> usage_pb2.LimitKind.ValueType:
    return usage_pb2.LIMIT_KIND_HARD if hard else usage_pb2.LIMIT_KIND_SOFT


class UsageServicer(usage_pb2_grpc.UsageServiceServicer):
    def __init__(self, service: UsageService, clock: Clock) -> None:
        self._service = service
        self._clock = clock

    def _event(self, event: usage_pb2.UsageEvent) -> usage.UsageEvent:
        return usage.UsageEvent(
            metric=event.metric,
            quantity=event.quantity,
            occurred_at=from_timestamp(event.time) or self._clock.now(),
            dimensions=dict(event.dimensions),
            idempotency_key=event.idempotency_key or None,
        )

    def RecordUsage(
        self, request: usage_pb2.RecordUsageRequest, context: grpc.ServicerContext
    ) -> usage_pb2.RecordUsageResponse:
        if not request.HasField("event"):
            raise InvalidArgument("event", "event is required")
        result = self._service.record(current_call(), request.tenant_id, [self._event(request.event)])
        return usage_pb2.RecordUsageResponse(duplicate=result.duplicates > 0)

    def RecordUsageBatch(
        self, request: usage_pb2.RecordUsageBatchRequest, context: grpc.ServicerContext
    ) -> usage_pb2.RecordUsageBatchResponse:
        events = [self._event(e) for e in request.events]
        result = self._service.record(current_call(), request.tenant_id, events)
        return usage_pb2.RecordUsageBatchResponse(recorded_count=result.recorded, duplicate_count=result.duplicates)

    def GetUsage(self, request: usage_pb2.GetUsageRequest, context: grpc.ServicerContext) -> usage_pb2.GetUsageResponse:
        granularity = GRANULARITIES.get(request.granularity)
        if granularity is None:
            raise InvalidArgument("granularity", "unknown granularity")
        points = self._service.series(
            current_call(),
            request.tenant_id,
            request.metric,
            from_timestamp(request.start_time),
            from_timestamp(request.end_time),
            granularity,
        )
        return usage_pb2.GetUsageResponse(
            metric=request.metric,
            granularity=request.granularity or usage_pb2.GRANULARITY_HOUR,
            points=[usage_pb2.UsagePoint(start_time=timestamp(at), quantity=q) for at, q in points],
            total=sum(q for _, q in points),
        )

    def GetUsageSummary(
        self, request: usage_pb2.GetUsageSummaryRequest, context: grpc.ServicerContext
    ) -> usage_pb2.GetUsageSummaryResponse:
        summary = self._service.summary(current_call(), request.tenant_id, request.period)
        return usage_pb2.GetUsageSummaryResponse(
            tenant_id=summary.tenant_id,
            period=summary.period.name,
            period_start_time=timestamp(summary.period.start),
            period_end_time=timestamp(summary.period.end),
            plan=summary.plan,
            metrics=[
                usage_pb2.MetricUsage(
                    metric=line.metric,
                    quantity=line.quantity,
                    has_quota=line.included is not None,
                    included=line.included or 0.0,
                    limit=limit_kind(line.limit),
                    overage=line.overage,
                )
                for line in summary.lines
            ],
        )

    def WatchUsage(
        self, request: usage_pb2.WatchUsageRequest, context: grpc.ServicerContext
    ) -> Iterator[usage_pb2.WatchUsageResponse]:
        metrics = set(request.metrics)
        subscription = self._service.watch(current_call(), request.tenant_id)
        context.add_callback(subscription.close)
        deadline = time.monotonic() + MAX_STREAM_SECONDS
        last: Snapshot | None = None
        try:
            while context.is_active() and time.monotonic() < deadline:
                snapshot = subscription.next(timeout=HEARTBEAT_SECONDS)
                if subscription.closed:
                    return
                if snapshot is None:  # heartbeat: repeat the last totals
                    if last is None:
                        continue
                    snapshot = last
                last = snapshot
                totals = {m: v for m, v in snapshot.totals.items() if not metrics or m in metrics}
                yield usage_pb2.WatchUsageResponse(
                    tenant_id=snapshot.tenant_id,
                    period=snapshot.period,
                    totals=totals,
                    update_time=timestamp(snapshot.at),
                )
        finally:
            subscription.close()

    def ExportUsage(
        self, request: usage_pb2.ExportUsageRequest, context: grpc.ServicerContext
    ) -> usage_pb2.ExportUsageResponse:
        fmt = FORMATS.get(request.format)
        if fmt is None:
            raise InvalidArgument("format", "unknown export format")
        export = self._service.export(current_call(), request.tenant_id, request.period, fmt)
        return usage_pb2.ExportUsageResponse(
            content_type=export.content_type, filename=export.filename, content=export.content
        )

    def GetQuotaStatus(
        self, request: usage_pb2.GetQuotaStatusRequest, context: grpc.ServicerContext
    ) -> usage_pb2.GetQuotaStatusResponse:
        status = self._service.quota_status(current_call(), request.tenant_id)
        return usage_pb2.GetQuotaStatusResponse(
            tenant_id=status.tenant_id,
            plan=status.plan,
            period=status.period.name,
            quotas=[
                usage_pb2.QuotaStatus(
                    metric=d.metric,
                    used=d.used,
                    included=d.included,
                    limit=_limit(d.hard),
                    exhausted=d.exceeded,
                    reset_time=timestamp(status.period.end),
                )
                for d in status.decisions
            ],
        )

    def ListPlans(
        self, request: usage_pb2.ListPlansRequest, context: grpc.ServicerContext
    ) -> usage_pb2.ListPlansResponse:
        return usage_pb2.ListPlansResponse(
            plans=[_plan(p.name, p.display_name, p.rules) for p in self._service.list_plans(current_call())]
        )

    def UpsertPlan(
        self, request: usage_pb2.UpsertPlanRequest, context: grpc.ServicerContext
    ) -> usage_pb2.UpsertPlanResponse:
        rules: dict[str, QuotaRule] = {}
        for i, quota in enumerate(request.plan.quotas):
            field = f"plan.quotas[{i}]"
            usage.check_metric(quota.metric, f"{field}.metric")
            if quota.limit == usage_pb2.LIMIT_KIND_UNSPECIFIED:
                raise InvalidArgument(f"{field}.limit", "limit must be soft or hard")
            if not 0 <= quota.included <= usage.MAX_QUANTITY:
                raise InvalidArgument(f"{field}.included", "included must be 0 or more")
            rules[quota.metric] = QuotaRule(quota.metric, quota.included, quota.limit == usage_pb2.LIMIT_KIND_HARD)
        plan = self._service.upsert_plan(current_call(), request.plan.name, request.plan.display_name, rules)
        return usage_pb2.UpsertPlanResponse(plan=_plan(plan.name, plan.display_name, plan.rules))

    def AssignPlan(
        self, request: usage_pb2.AssignPlanRequest, context: grpc.ServicerContext
    ) -> usage_pb2.AssignPlanResponse:
        tenant_id = self._service.assign_plan(current_call(), request.tenant_id, request.plan)
        return usage_pb2.AssignPlanResponse(tenant_id=tenant_id, plan=request.plan)


def _plan(name: str, display_name: str, rules: dict[str, QuotaRule]) -> usage_pb2.Plan:
    return usage_pb2.Plan(
        name=name,
        display_name=display_name,
        quotas=[
            usage_pb2.MetricQuota(metric=r.metric, included=r.included, limit=_limit(r.hard))
            for _, r in sorted(rules.items())
        ],
    )

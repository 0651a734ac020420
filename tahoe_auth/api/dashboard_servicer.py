"""DashboardService: convert, call one use case, convert back."""

from __future__ import annotations

import grpc

from tahoe_auth.api.convert import from_timestamp, limit_kind, timestamp
from tahoe_auth.api.interceptors import current_call
from tahoe_auth.api.usage_servicer import GRANULARITIES
from tahoe_auth.domain.dashboards import LOGIN_FAILURE, LOGIN_SUCCESS, LOGIN_THROTTLED, BreakdownRow
from tahoe_auth.domain.errors import InvalidArgument
from tahoe_auth.domain.usage import Granularity, dense_series
from tahoe_auth.services.dashboards import Breakdown, Dashboards
from tahoe_auth.v1 import dashboard_pb2, dashboard_pb2_grpc, usage_pb2

DIMENSIONS = {
    dashboard_pb2.USAGE_DIMENSION_UNSPECIFIED: "route",
    dashboard_pb2.USAGE_DIMENSION_ROUTE: "route",
    dashboard_pb2.USAGE_DIMENSION_SUBJECT_TYPE: "subject_type",
    dashboard_pb2.USAGE_DIMENSION_CREDENTIAL: "credential",
}
GRANULARITY_VALUES = {g: v for v, g in GRANULARITIES.items() if v != usage_pb2.GRANULARITY_UNSPECIFIED}


class DashboardServicer(dashboard_pb2_grpc.DashboardServiceServicer):
    def __init__(self, dashboards: Dashboards) -> None:
        self._dashboards = dashboards

    def GetTenantOverview(
        self, request: dashboard_pb2.GetTenantOverviewRequest, context: grpc.ServicerContext
    ) -> dashboard_pb2.GetTenantOverviewResponse:
        o = self._dashboards.tenant_overview(current_call(), request.tenant_id)
        return dashboard_pb2.GetTenantOverviewResponse(
            tenant_id=o.tenant_id,
            plan=o.plan,
            status=o.status,
            users=[dashboard_pb2.StatusCount(status=s, count=n) for s, n in sorted(o.users.items())],
            active_sessions=o.active_sessions,
            active_api_keys=o.active_api_keys,
            api_keys=o.api_keys,
            service_accounts=o.service_accounts,
            period=o.period.name,
            usage=[
                dashboard_pb2.OverviewUsage(
                    metric=line.metric,
                    used=line.quantity,
                    has_quota=line.included is not None,
                    included=line.included or 0.0,
                    limit=limit_kind(line.limit),
                    fraction_used=line.quantity / line.included if line.included else 0.0,
                )
                for line in o.usage
            ],
            denials_24h=o.denials,
            login_successes_24h=o.logins.get(LOGIN_SUCCESS, 0),
            login_failures_24h=o.logins.get(LOGIN_FAILURE, 0),
            login_throttled_24h=o.logins.get(LOGIN_THROTTLED, 0),
            webhooks=[
                dashboard_pb2.EndpointHealth(
                    endpoint_id=w.endpoint_id,
                    url=w.url,
                    status=w.status,
                    health=w.health,
                    recent_failures=w.recent_failures,
                    last_success_time=timestamp(w.last_success_at),
                    last_failure_time=timestamp(w.last_failure_at),
                )
                for w in o.webhooks
            ],
            generate_time=timestamp(o.generated_at),
        )

    def GetUsageBreakdown(
        self, request: dashboard_pb2.GetUsageBreakdownRequest, context: grpc.ServicerContext
    ) -> dashboard_pb2.GetUsageBreakdownResponse:
        dimension = DIMENSIONS.get(request.dimension)
        if dimension is None:
            raise InvalidArgument("dimension", "unknown dimension")
        granularity = (
            Granularity.DAY
            if request.granularity == usage_pb2.GRANULARITY_UNSPECIFIED
            else GRANULARITIES.get(request.granularity)
        )
        if granularity is None:
            raise InvalidArgument("granularity", "unknown granularity")
        b = self._dashboards.usage_breakdown(
            current_call(),
            request.tenant_id,
            request.metric,
            dimension,
            from_timestamp(request.start_time),
            from_timestamp(request.end_time),
            granularity,
            request.top,
        )
        return dashboard_pb2.GetUsageBreakdownResponse(
            metric=b.metric,
            dimension=request.dimension or dashboard_pb2.USAGE_DIMENSION_ROUTE,
            granularity=GRANULARITY_VALUES[b.granularity],
            start_time=timestamp(b.start),
            end_time=timestamp(b.end),
            values=[_value(row, b) for row in b.values],
            other=_value(b.other, b) if b.other is not None else None,
            total=sum(row.total for row in b.values) + (b.other.total if b.other else 0.0),
        )

    def GetLoginAnalytics(
        self, request: dashboard_pb2.GetLoginAnalyticsRequest, context: grpc.ServicerContext
    ) -> dashboard_pb2.GetLoginAnalyticsResponse:
        call = current_call()
        days = self._dashboards.login_analytics(
            call, request.tenant_id, from_timestamp(request.start_time), from_timestamp(request.end_time)
        )
        return dashboard_pb2.GetLoginAnalyticsResponse(
            tenant_id=request.tenant_id or call.require_principal().tenant_id,
            days=[
                dashboard_pb2.LoginDay(
                    day=timestamp(d.day),
                    successes=d.successes,
                    failures=d.failures,
                    throttled=d.throttled,
                    active_users=d.active_users,
                )
                for d in days
            ],
        )

    def GetPlatformOverview(
        self, request: dashboard_pb2.GetPlatformOverviewRequest, context: grpc.ServicerContext
    ) -> dashboard_pb2.GetPlatformOverviewResponse:
        o = self._dashboards.platform_overview(current_call(), request.metric, request.top)
        return dashboard_pb2.GetPlatformOverviewResponse(
            tenants=o.tenants,
            tenants_by_plan_status=[
                dashboard_pb2.PlanStatusCount(plan=plan, status=status, count=n) for plan, status, n in o.by_plan_status
            ],
            period=o.period.name,
            metric=o.metric,
            top_tenants=[
                dashboard_pb2.TenantUsage(tenant_id=i, slug=slug, plan=plan, quantity=q) for i, slug, plan, q in o.top
            ],
        )


def _value(row: BreakdownRow, b: Breakdown) -> dashboard_pb2.BreakdownValue:
    return dashboard_pb2.BreakdownValue(
        value=row.value,
        total=row.total,
        points=[
            usage_pb2.UsagePoint(start_time=timestamp(at), quantity=q)
            for at, q in dense_series(row.points, b.start, b.end, b.granularity)
        ],
    )

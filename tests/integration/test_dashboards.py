"""DashboardService on a real server (PostgreSQL, Redis): each RPC, its tenant wall,
its permissions, and an empty tenant."""

from __future__ import annotations

import datetime as dt

import grpc
import pytest

from tahoe_auth.domain import events
from tahoe_auth.store import models as m
from tahoe_auth.store.db import SYSTEM
from tahoe_auth.v1 import auth_pb2, dashboard_pb2, dashboard_pb2_grpc, usage_pb2, usage_pb2_grpc
from tests.support import RunningServer, Tenant, bearer, call_error, error_reason


def board(server: RunningServer) -> dashboard_pb2_grpc.DashboardServiceStub:
    return dashboard_pb2_grpc.DashboardServiceStub(server.channel)


def record(server: RunningServer, token: str, events_: list[usage_pb2.UsageEvent]) -> None:
    usage_pb2_grpc.UsageServiceStub(server.channel).RecordUsageBatch(
        usage_pb2.RecordUsageBatchRequest(events=events_), metadata=bearer(token)
    )
    server.app.usage_pipeline.run_once()


def request_event(route: str, credential: str, quantity: float = 1) -> usage_pb2.UsageEvent:
    return usage_pb2.UsageEvent(
        metric="api.requests",
        quantity=quantity,
        dimensions={"route": route, "subject_type": "api_key", "credential": credential},
    )


def fail_login(server: RunningServer, tenant: Tenant, email: str | None = None) -> str:
    bad = auth_pb2.LoginRequest(tenant=tenant.slug, email=email or tenant.owner_email, password="wrong password")
    return error_reason(call_error(server.auth.Login, bad))


def test_overview_of_an_empty_tenant(server: RunningServer) -> None:
    tenant = server.create_tenant()
    token = server.owner_token(tenant)  # one login, one session
    o = board(server).GetTenantOverview(dashboard_pb2.GetTenantOverviewRequest(), metadata=bearer(token))
    assert o.tenant_id == tenant.id and o.status == "active"
    assert [(u.status, u.count) for u in o.users] == [("active", 1)]
    assert o.active_sessions == 1
    assert (o.api_keys, o.active_api_keys, o.service_accounts, o.denials_24h) == (0, 0, 0, 0)
    assert (o.login_successes_24h, o.login_failures_24h, o.login_throttled_24h) == (1, 0, 0)
    assert not o.webhooks
    assert o.period == dt.datetime.now(dt.UTC).strftime("%Y-%m")


def test_overview_counts_usage_against_the_plan_logins_denials_and_webhooks(server: RunningServer) -> None:
    tenant = server.create_tenant()
    token = server.owner_token(tenant)
    assert fail_login(server, tenant) == "INVALID_CREDENTIALS"
    record(server, token, [request_event("/v1/transcribe", "api key tk_a", 7)])
    server.app.denials.record(tenant.id, "missing_permission", "/v1/admin")
    server.app.denials.record(tenant.id, "missing_permission", "/v1/admin")
    server.app.denials.flush(everything=True)
    now = dt.datetime.now(dt.UTC)
    with server.app.db.unit_of_work(SYSTEM) as uow:
        s = uow.session
        good = m.WebhookEndpoint(tenant_id=tenant.id, url="https://good.example/hook")
        bad = m.WebhookEndpoint(tenant_id=tenant.id, url="https://bad.example/hook", created_at=now)
        s.add_all([good, bad])
        s.flush()
        for endpoint, status, at in (
            (good, events.SUCCEEDED, now - dt.timedelta(minutes=5)),
            (bad, events.SUCCEEDED, now - dt.timedelta(hours=2)),
            (bad, events.DEAD, now - dt.timedelta(minutes=1)),
        ):
            outbox = m.OutboxEvent(tenant_id=tenant.id, type="session.revoked", payload={})
            s.add(outbox)
            s.flush()
            s.add(
                m.WebhookDelivery(
                    tenant_id=tenant.id,
                    event_id=outbox.id,
                    endpoint_id=endpoint.id,
                    event_type="session.revoked",
                    status=status,
                    attempts=1,
                    next_attempt_at=at,
                    last_attempt_at=at,
                )
            )
        uow.commit()
    o = board(server).GetTenantOverview(
        dashboard_pb2.GetTenantOverviewRequest(tenant_id=tenant.id), metadata=bearer(token)
    )
    assert (o.login_successes_24h, o.login_failures_24h) == (1, 1)
    assert o.denials_24h == 2
    used = {u.metric: u for u in o.usage}
    assert used["api.requests"].used == 7
    health = {w.url: w for w in o.webhooks}
    assert health["https://good.example/hook"].health == "healthy"
    assert health["https://bad.example/hook"].health == "failing"
    assert health["https://bad.example/hook"].recent_failures == 1
    assert health["https://bad.example/hook"].HasField("last_success_time")


def test_usage_breakdown_by_route_and_credential_with_top_n(server: RunningServer) -> None:
    tenant = server.create_tenant()
    token = server.owner_token(tenant)
    record(
        server,
        token,
        [
            request_event("/v1/a", "api key tk_1", 5),
            request_event("/v1/b", "api key tk_1", 3),
            request_event("/v1/c", "api key tk_2", 1),
            request_event("/v1/a", "api key tk_2", 2),
        ],
    )
    stub = board(server)
    by_route = stub.GetUsageBreakdown(
        dashboard_pb2.GetUsageBreakdownRequest(top=2, granularity=usage_pb2.GRANULARITY_HOUR), metadata=bearer(token)
    )
    assert [(v.value, v.total) for v in by_route.values] == [("/v1/a", 7), ("/v1/b", 3)]
    assert (by_route.other.value, by_route.other.total, by_route.total) == ("(other)", 1, 11)
    assert sum(p.quantity for p in by_route.values[0].points) == 7
    by_credential = stub.GetUsageBreakdown(
        dashboard_pb2.GetUsageBreakdownRequest(dimension=dashboard_pb2.USAGE_DIMENSION_CREDENTIAL),
        metadata=bearer(token),
    )
    assert [(v.value, v.total) for v in by_credential.values] == [("api key tk_1", 8), ("api key tk_2", 3)]
    assert not by_credential.HasField("other")
    assert by_credential.granularity == usage_pb2.GRANULARITY_DAY


def test_check_requests_are_broken_down_by_credential(server: RunningServer) -> None:
    tenant = server.create_tenant()
    token = server.owner_token(tenant)
    recorder = server.app.usage_recorder
    recorder.record_request(tenant.id, "/v1/transcribe", "api_key", "api key tk_9")
    recorder.record_request(tenant.id, "/v1/transcribe", "user", "user:u1")
    recorder.flush()
    server.app.usage_pipeline.run_once()
    breakdown = board(server).GetUsageBreakdown(
        dashboard_pb2.GetUsageBreakdownRequest(dimension=dashboard_pb2.USAGE_DIMENSION_SUBJECT_TYPE),
        metadata=bearer(token),
    )
    assert sorted((v.value, v.total) for v in breakdown.values) == [("api_key", 1), ("user", 1)]


def test_login_analytics_per_day(server: RunningServer) -> None:
    tenant = server.create_tenant()
    token = server.owner_token(tenant)
    server.owner_token(tenant)  # the same user again: still one active user
    _, other_token = server.add_user(tenant, ["viewer"])  # the owner logs in once more to create it
    reasons = [fail_login(server, tenant) for _ in range(6)]
    assert reasons.count("LOGIN_THROTTLED") >= 1
    server.app.login_stats.flush()
    days = board(server).GetLoginAnalytics(dashboard_pb2.GetLoginAnalyticsRequest(), metadata=bearer(token)).days
    assert len(days) == 30
    today = days[-1]
    assert today.day.ToDatetime(tzinfo=dt.UTC) == dt.datetime.now(dt.UTC).replace(
        hour=0, minute=0, second=0, microsecond=0
    )
    assert today.successes == 4 and today.active_users == 2
    assert today.failures == reasons.count("INVALID_CREDENTIALS")
    assert today.throttled == reasons.count("LOGIN_THROTTLED")
    assert all(d.successes == 0 for d in days[:-1])
    # A viewer may not read login analytics (audit:read).
    refused = call_error(
        board(server).GetLoginAnalytics, dashboard_pb2.GetLoginAnalyticsRequest(), metadata=bearer(other_token)
    )
    assert refused.code() == grpc.StatusCode.PERMISSION_DENIED


def test_another_tenants_admin_gets_not_found_for_every_tenant_rpc(server: RunningServer) -> None:
    mine, theirs = server.create_tenant(), server.create_tenant()
    record(server, server.owner_token(mine), [request_event("/v1/a", "api key tk_1", 5)])
    _, admin = server.add_user(theirs, ["admin"])
    stub = board(server)
    for method, request in (
        (stub.GetTenantOverview, dashboard_pb2.GetTenantOverviewRequest(tenant_id=mine.id)),
        (stub.GetUsageBreakdown, dashboard_pb2.GetUsageBreakdownRequest(tenant_id=mine.id)),
        (stub.GetLoginAnalytics, dashboard_pb2.GetLoginAnalyticsRequest(tenant_id=mine.id)),
    ):
        assert call_error(method, request, metadata=bearer(admin)).code() == grpc.StatusCode.NOT_FOUND
    # Their own tenant shows none of mine.
    own = stub.GetUsageBreakdown(dashboard_pb2.GetUsageBreakdownRequest(), metadata=bearer(admin))
    assert not own.values and own.total == 0
    overview = stub.GetTenantOverview(dashboard_pb2.GetTenantOverviewRequest(), metadata=bearer(admin))
    assert overview.tenant_id == theirs.id and not any(u.used for u in overview.usage)


def test_permissions(server: RunningServer) -> None:
    tenant = server.create_tenant()
    _, viewer = server.add_user(tenant, ["viewer"])
    stub = board(server)
    # Viewers read usage, not audit data, and never the platform overview.
    stub.GetUsageBreakdown(dashboard_pb2.GetUsageBreakdownRequest(), metadata=bearer(viewer))
    overview = call_error(stub.GetTenantOverview, dashboard_pb2.GetTenantOverviewRequest(), metadata=bearer(viewer))
    assert overview.code() == grpc.StatusCode.PERMISSION_DENIED
    owner = server.owner_token(tenant)
    platform = call_error(stub.GetPlatformOverview, dashboard_pb2.GetPlatformOverviewRequest(), metadata=bearer(owner))
    assert platform.code() == grpc.StatusCode.PERMISSION_DENIED


def test_platform_overview(server: RunningServer) -> None:
    small, big = server.create_tenant(), server.create_tenant()
    record(server, server.owner_token(small), [request_event("/v1/a", "api key tk_1", 2)])
    record(server, server.owner_token(big), [request_event("/v1/a", "api key tk_2", 50)])
    o = board(server).GetPlatformOverview(
        dashboard_pb2.GetPlatformOverviewRequest(top=2), metadata=bearer(server.platform_key)
    )
    assert o.tenants >= 2 and sum(c.count for c in o.tenants_by_plan_status) == o.tenants
    assert [(t.slug, t.quantity) for t in o.top_tenants] == [(big.slug, 50), (small.slug, 2)]
    # A platform administrator names a tenant; an unknown one is NOT_FOUND.
    named = board(server).GetTenantOverview(
        dashboard_pb2.GetTenantOverviewRequest(tenant_id=big.id), metadata=bearer(server.platform_key)
    )
    assert named.tenant_id == big.id
    missing = call_error(
        board(server).GetLoginAnalytics,
        dashboard_pb2.GetLoginAnalyticsRequest(tenant_id="00000000-0000-0000-0000-000000000000"),
        metadata=bearer(server.platform_key),
    )
    assert missing.code() == grpc.StatusCode.NOT_FOUND


@pytest.mark.parametrize(
    "request_",
    [
        dashboard_pb2.GetUsageBreakdownRequest(granularity=usage_pb2.GRANULARITY_MINUTE),
        dashboard_pb2.GetUsageBreakdownRequest(top=51),
        dashboard_pb2.GetUsageBreakdownRequest(metric="Not A Metric"),
    ],
)
def test_bad_breakdown_requests(server: RunningServer, request_: dashboard_pb2.GetUsageBreakdownRequest) -> None:
    tenant = server.create_tenant()
    error = call_error(board(server).GetUsageBreakdown, request_, metadata=bearer(server.owner_token(tenant)))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_the_dashboards_on_sqlite(embedded_server: RunningServer) -> None:
    """The embedded deployment (SQLite): the same rollups and queries."""
    server = embedded_server
    tenant = server.create_tenant()
    token = server.owner_token(tenant)
    assert fail_login(server, tenant) == "INVALID_CREDENTIALS"
    record(server, token, [request_event("/v1/a", "api key tk_1", 4), request_event("/v1/b", "api key tk_1", 1)])
    server.app.denials.record(tenant.id, "missing_permission", "/v1/admin")
    server.app.denials.flush(everything=True)
    stub = board(server)
    for granularity in (usage_pb2.GRANULARITY_HOUR, usage_pb2.GRANULARITY_DAY, usage_pb2.GRANULARITY_MONTH):
        breakdown = stub.GetUsageBreakdown(
            dashboard_pb2.GetUsageBreakdownRequest(granularity=granularity), metadata=bearer(token)
        )
        assert [(v.value, v.total) for v in breakdown.values] == [("/v1/a", 4), ("/v1/b", 1)]
        assert sum(p.quantity for p in breakdown.values[0].points) == 4
    o = stub.GetTenantOverview(dashboard_pb2.GetTenantOverviewRequest(), metadata=bearer(token))
    assert (o.login_successes_24h, o.login_failures_24h, o.denials_24h) == (1, 1, 1)
    days = stub.GetLoginAnalytics(dashboard_pb2.GetLoginAnalyticsRequest(), metadata=bearer(token)).days
    assert (days[-1].successes, days[-1].failures, days[-1].active_users) == (1, 1, 1)
    platform = stub.GetPlatformOverview(
        dashboard_pb2.GetPlatformOverviewRequest(), metadata=bearer(server.platform_key)
    )
    assert [(t.slug, t.quantity) for t in platform.top_tenants] == [(tenant.slug, 5)]

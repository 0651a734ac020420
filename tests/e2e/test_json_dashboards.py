"""The dashboards as JSON through Envoy's transcoder: one call of each."""

from __future__ import annotations

import pytest

from tahoe_auth.v1 import usage_pb2, usage_pb2_grpc
from tests.e2e import stack as e2e
from tests.support import bearer

pytestmark = [pytest.mark.envoy, pytest.mark.postgres, pytest.mark.redis]


@pytest.fixture(scope="module")
def transport() -> str:
    """Check's transport does not matter here: the JSON API bypasses Check."""
    return "http"


def test_tenant_overview(live: e2e.Stack) -> None:
    tenant = live.auth.create_tenant()
    token = live.auth.owner_token(tenant)
    response = live.call("GET", f"/auth/v1/tenants/{tenant.id}/overview", token=token)
    assert response.status == 200, response.body
    assert response.body["tenantId"] == tenant.id
    assert response.body["activeSessions"] == "1"  # int64 is a string in proto3 JSON
    assert response.body["loginSuccesses24h"] == "1"


def test_usage_breakdown(live: e2e.Stack) -> None:
    tenant = live.auth.create_tenant()
    token = live.auth.owner_token(tenant)
    event = usage_pb2.UsageEvent(metric="api.requests", quantity=3, dimensions={"route": "/v1/jobs"})
    usage_pb2_grpc.UsageServiceStub(live.auth.channel).RecordUsageBatch(
        usage_pb2.RecordUsageBatchRequest(events=[event]), metadata=bearer(token)
    )
    live.auth.app.usage_pipeline.run_once()
    path = f"/auth/v1/tenants/{tenant.id}/usage:breakdown?dimension=USAGE_DIMENSION_ROUTE&top=5"
    response = live.call("GET", path, token=token)
    assert response.status == 200, response.body
    assert [(v["value"], v["total"]) for v in response.body["values"]] == [("/v1/jobs", 3)]


def test_login_analytics(live: e2e.Stack) -> None:
    tenant = live.auth.create_tenant()
    token = live.auth.owner_token(tenant)
    response = live.call("GET", f"/auth/v1/tenants/{tenant.id}/logins:analytics", token=token)
    assert response.status == 200, response.body
    assert len(response.body["days"]) == 30
    assert response.body["days"][-1]["successes"] == "1"


def test_platform_overview_is_for_platform_administrators(live: e2e.Stack) -> None:
    tenant = live.auth.create_tenant()
    response = live.call("GET", "/auth/v1/platform/overview", token=live.auth.platform_key)
    assert response.status == 200, response.body
    assert int(response.body["tenants"]) >= 1
    refused = live.call("GET", "/auth/v1/platform/overview", token=live.auth.owner_token(tenant))
    assert refused.status == 403, refused.body

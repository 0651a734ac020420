"""The gRPC API as JSON over HTTP through Envoy's gRPC-JSON transcoder, with the
committed envoy/envoy.yaml: the same calls, statuses and ErrorInfo reasons as over gRPC."""

from __future__ import annotations

import json

import pytest

from tests.e2e import stack as e2e

pytestmark = [pytest.mark.envoy, pytest.mark.postgres, pytest.mark.redis]


@pytest.fixture(scope="module")
def transport() -> str:
    """Check's transport does not matter here: the JSON API bypasses Check."""
    return "http"


def error_reason(response: e2e.Response) -> str:
    """The ErrorInfo reason of a transcoded error body (a google.rpc.Status as JSON)."""
    (info,) = [d for d in response.body["details"] if d["@type"] == "type.googleapis.com/google.rpc.ErrorInfo"]
    reason: str = info["reason"]
    return reason


def test_login_over_json_returns_tokens_that_work_through_envoy(live: e2e.Stack) -> None:
    tenant = live.auth.create_tenant()
    body = {"tenant": tenant.slug, "email": tenant.owner_email, "password": tenant.owner_password}
    response = live.call("POST", "/auth/v1/login", body=body)
    assert response.status == 200, response.body
    assert response.headers["content-type"] == "application/json"
    assert response.body["tenantId"] == tenant.id and response.body["tokens"]["tokenType"] == "Bearer"
    token = response.body["tokens"]["accessToken"]
    assert live.call("GET", "/v1/jobs", token=token).status == 200


def test_a_refused_login_is_401_with_its_reason(live: e2e.Stack) -> None:
    tenant = live.auth.create_tenant()
    body = {"tenant": tenant.slug, "email": tenant.owner_email, "password": "not the password"}
    response = live.call("POST", "/auth/v1/login", body=body)
    assert response.status == 401, response.body
    assert error_reason(response) == "INVALID_CREDENTIALS"
    assert response.body["message"] == "invalid tenant, email or password"


def test_a_path_that_names_no_method_is_404(live: e2e.Stack) -> None:
    assert live.call("GET", "/auth/v1/no-such-thing").status == 404


def test_envoy_serves_the_committed_openapi_document_without_a_credential(live: e2e.Stack) -> None:
    response = live.call("GET", "/auth/v1/openapi.json")
    assert response.status == 200, response.body
    assert response.headers["content-type"] == "application/json"
    assert response.body == json.loads((e2e.ENVOY_DIR / "openapi.json").read_text())
    assert "/auth/v1/login" in response.body["paths"]
    # What it describes answers: an operation it says needs a bearer refuses a call without one.
    assert response.body["paths"]["/auth/v1/tenants/{tenant_id}/users"]["get"].get("security") is None
    refused = live.call("GET", "/auth/v1/tenants/any/users")
    assert refused.status == 401 and error_reason(refused) == "UNAUTHENTICATED"
